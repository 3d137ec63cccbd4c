"""Segment membership (`kalcifer_common.segments`): each operator's meaning, and properties over random profiles."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kalcifer_common.comparisons import MISSING, resolve
from kalcifer_common.segments import OPERATORS, customer_profile, matches, rule_holds

PROFILE = customer_profile(
    external_id="u-1",
    attributes={"tier": "gold", "score": 42, "ratio": 0.5, "vip": True, "address": {"city": "Lyon"}, "none": None},
    tags=["new", "fr"],
    preferences={"email": True, "sms": False},
    timezone="Europe/Paris",
    email="ann@example.com",
)


def holds(field: str, operator: str, value: Any) -> bool:
    return rule_holds({"field": field, "operator": operator, "value": value}, PROFILE)


@pytest.mark.parametrize(
    ("field", "operator", "value", "expected"),
    [
        ("attributes.tier", "eq", "gold", True),
        ("attributes.tier", "eq", "Gold", False),
        ("attributes.score", "eq", 42.0, True),
        ("attributes.score", "eq", "42", False),
        ("attributes.vip", "eq", 1, False),
        ("attributes.vip", "eq", True, True),
        ("attributes.none", "eq", None, True),
        ("attributes.address.city", "eq", "Lyon", True),
        ("attributes.tier", "neq", "silver", True),
        ("attributes.tier", "neq", "gold", False),
        ("attributes.missing", "neq", "gold", True),
        ("attributes.missing", "eq", None, False),
        ("attributes.score", "gt", 41, True),
        ("attributes.score", "gt", 42, False),
        ("attributes.score", "lt", 42.5, True),
        ("attributes.score", "gt", "41", False),
        ("attributes.vip", "gt", 0, False),
        ("email", "gt", "a", True),
        ("timezone", "lt", "Europe/Zurich", True),
        ("tags", "contains", "fr", True),
        ("tags", "contains", "de", False),
        ("email", "contains", "@example.", True),
        ("attributes.score", "contains", 4, False),
        ("attributes.tier", "in", ["silver", "gold"], True),
        ("attributes.tier", "in", ["silver"], False),
        ("tags", "in", ["de", "fr"], True),
        ("tags", "not_in", ["de", "fr"], False),
        ("tags", "not_in", ["de"], True),
        ("attributes.missing", "not_in", ["x"], True),
        ("attributes.missing", "in", [None], False),
        ("preferences.sms", "eq", False, True),
        ("preferences.push", "neq", False, True),
        ("phone", "eq", "", False),
        ("external_id", "eq", "u-1", True),
        ("attributes.tier", "like", "gold", False),
        ("attributes.score", "gte", 42, False),
        ("attributes.tier", "exists", None, False),
    ],
)
def test_each_operator_means_what_it_says(field: str, operator: str, value: Any, expected: bool) -> None:
    assert holds(field, operator, value) is expected


def test_match_all_needs_every_rule_and_any_needs_one() -> None:
    rules = [
        {"field": "attributes.tier", "operator": "eq", "value": "gold"},
        {"field": "tags", "operator": "contains", "value": "de"},
    ]
    assert matches(rules, "all", PROFILE) is False
    assert matches(rules, "any", PROFILE) is True
    assert matches(rules[:1], "all", PROFILE) is True
    assert matches([], "all", PROFILE) is True
    assert matches([], "any", PROFILE) is False
    assert matches(rules, "most", PROFILE) is False


def test_paths_resolve_through_objects_and_list_indexes_as_in_conditions() -> None:
    assert resolve(PROFILE, "attributes.address.city") == "Lyon"
    assert resolve(PROFILE, "attributes.tier.length") is MISSING
    assert resolve(PROFILE, "tags.0") == "new"
    assert resolve(PROFILE, "tags.2") is MISSING
    assert resolve(PROFILE, "") is MISSING


def test_profiles_leave_out_unset_contact_fields() -> None:
    profile = customer_profile(external_id="x", timezone=None, email="", phone="+33612345678")
    assert profile == {"external_id": "x", "attributes": {}, "tags": [], "preferences": {}, "phone": "+33612345678"}


# --- properties -----------------------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=8,
)
keys = st.sampled_from(["a", "b", "c"])
profiles = st.builds(
    lambda attributes, tags, email: customer_profile(external_id="p", attributes=attributes, tags=tags, email=email),
    st.dictionaries(keys, json_values, max_size=3),
    st.lists(st.text(max_size=4), max_size=4),
    st.none() | st.text(max_size=10),
)
fields = st.sampled_from(["attributes.a", "attributes.b", "attributes.a.b", "tags", "email", "phone", "nothing"])
rules = st.builds(
    lambda field, operator, value: {"field": field, "operator": operator, "value": value},
    fields,
    st.sampled_from([*OPERATORS, "bogus"]),
    json_values,
)


@given(profiles, st.lists(rules, max_size=5), st.sampled_from(["all", "any", "none"]))
def test_evaluation_never_raises(profile: dict[str, Any], rule_list: list[dict[str, Any]], match: str) -> None:
    assert matches(rule_list, match, profile) in (True, False)


@given(profiles, fields, json_values)
def test_neq_is_the_negation_of_eq(profile: dict[str, Any], field: str, value: Any) -> None:
    eq = rule_holds({"field": field, "operator": "eq", "value": value}, profile)
    neq = rule_holds({"field": field, "operator": "neq", "value": value}, profile)
    assert eq is not neq


@given(profiles, fields, st.lists(scalars, max_size=4))
def test_not_in_is_the_negation_of_in(profile: dict[str, Any], field: str, options: list[Any]) -> None:
    inside = rule_holds({"field": field, "operator": "in", "value": options}, profile)
    outside = rule_holds({"field": field, "operator": "not_in", "value": options}, profile)
    assert inside is not outside


@given(st.dictionaries(keys, json_values, min_size=1), keys)
def test_a_stored_value_equals_itself_and_is_in_a_list_of_it(attributes: dict[str, Any], key: str) -> None:
    profile = customer_profile(external_id="p", attributes=attributes)
    if key not in attributes:
        assert not rule_holds({"field": f"attributes.{key}", "operator": "eq", "value": None}, profile)
        return
    value = attributes[key]
    assert rule_holds({"field": f"attributes.{key}", "operator": "eq", "value": value}, profile)
    if not isinstance(value, list):
        assert rule_holds({"field": f"attributes.{key}", "operator": "in", "value": [value]}, profile)


@given(st.integers() | st.floats(allow_nan=False), st.integers() | st.floats(allow_nan=False))
def test_gt_and_lt_order_numbers(actual: float, operand: float) -> None:
    profile = customer_profile(external_id="p", attributes={"n": actual})
    assert rule_holds({"field": "attributes.n", "operator": "gt", "value": operand}, profile) is (actual > operand)
    assert rule_holds({"field": "attributes.n", "operator": "lt", "value": operand}, profile) is (actual < operand)


@given(profiles, st.lists(rules, min_size=1, max_size=5))
def test_all_implies_any(profile: dict[str, Any], rule_list: list[dict[str, Any]]) -> None:
    if matches(rule_list, "all", profile):
        assert matches(rule_list, "any", profile)
