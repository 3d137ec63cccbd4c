"""Customer profile rules (validation, merging) and segment definition validation, without I/O."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kalcifer_api.domain.customers import (
    email_problem,
    phone_problem,
    validated_patch,
    validated_tags,
    with_tags,
    without_tags,
)
from kalcifer_api.domain.marketing_common import check_etag, etag_of, masked_fields, timezone_problem
from kalcifer_api.domain.segments import rule_violations, validated_definition
from kalcifer_common.errors import EtagMismatch, InvalidArgument
from kalcifer_common.profiles import merged_attributes


@pytest.mark.parametrize("email", ["a@b.co", "first.last+tag@mail.example.org", "x@sub.domain.fr"])
def test_plausible_emails_pass(email: str) -> None:
    assert email_problem(email) is None


@pytest.mark.parametrize(
    "email", ["", "plain", "a@b", "a b@c.d", "a@@b.c", "@b.co", "a@b.", "a@.co", "x" * 250 + "@b.co"]
)
def test_implausible_emails_fail(email: str) -> None:
    assert email_problem(email) is not None


@pytest.mark.parametrize(
    ("phone", "ok"),
    [
        ("+33612345678", True),
        ("+1415555", True),
        ("0612345678", False),
        ("+0612345678", False),
        ("+33 6 12", False),
        ("+1234567890123456", False),
    ],
)
def test_phones_are_e164(phone: str, ok: bool) -> None:
    assert (phone_problem(phone) is None) is ok


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("Europe/Paris", True),
        ("UTC", True),
        ("America/Argentina/Salta", True),
        ("Paris", False),
        ("", False),
        ("../../etc/passwd", False),
        (" UTC", False),
    ],
)
def test_timezones_are_iana_names(name: str, ok: bool) -> None:
    assert (timezone_problem(name) is None) is ok


def test_patch_reports_every_bad_field_at_once() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validated_patch(
            external_id="",
            attributes={},
            tags=["", "ok"],
            preferences={"fax": True},
            timezone="Nowhere",
            email="nope",
            phone="123",
        )
    assert {v.field for v in raised.value.violations} == {
        "external_id",
        "tags[0]",
        "preferences.fax",
        "timezone",
        "email",
        "phone",
    }


def test_patch_treats_empty_strings_as_unchanged() -> None:
    patch = validated_patch(
        external_id="u", attributes={"a": 1}, tags=["x", "x"], preferences={}, timezone="", email="", phone=""
    )
    assert (patch.timezone, patch.email, patch.phone, patch.tags) == (None, None, None, ["x"])


def test_oversized_attributes_are_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validated_patch(
            external_id="u", attributes={"blob": "x" * 70_000}, tags=[], preferences={}, timezone="", email="", phone=""
        )
    assert [v.field for v in raised.value.violations] == ["attributes"]


def test_tags_are_deduplicated_in_order() -> None:
    assert validated_tags(["b", "a", "b"]) == ["b", "a"]
    with pytest.raises(InvalidArgument):
        validated_tags([])


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)


@given(st.dictionaries(st.text(max_size=3), json_scalars), st.dictionaries(st.text(max_size=3), json_scalars))
def test_merging_attributes(current: dict[str, Any], patch: dict[str, Any]) -> None:
    merged = merged_attributes(current, patch)
    for key, value in patch.items():
        if value is None:
            assert key not in merged
        else:
            assert merged[key] == value
    for key, value in current.items():
        if key not in patch:
            assert merged[key] == value


@given(st.lists(st.text(max_size=3)), st.lists(st.text(max_size=3)))
def test_tag_sets(current: list[str], other: list[str]) -> None:
    current = list(dict.fromkeys(current))
    added = with_tags(current, other)
    assert added[: len(current)] == current
    assert set(added) == set(current) | set(other)
    assert len(added) == len(set(added))
    assert set(without_tags(added, other)) == set(current) - set(other)


def test_etags_match_only_the_current_revision() -> None:
    check_etag("", 3, resource_type="segment", resource_name="s")
    check_etag(etag_of(3), 3, resource_type="segment", resource_name="s")
    with pytest.raises(EtagMismatch):
        check_etag(etag_of(2), 3, resource_type="segment", resource_name="s")


def test_update_masks_name_unknown_paths() -> None:
    assert masked_fields([], ("a", "b")) == {"a", "b"}
    assert masked_fields(["b"], ("a", "b")) == {"b"}
    with pytest.raises(InvalidArgument) as raised:
        masked_fields(["a", "c", "d"], ("a", "b"))
    assert [v.field for v in raised.value.violations] == ["update_mask.paths[1]", "update_mask.paths[2]"]


@pytest.mark.parametrize(
    ("rule", "bad"),
    [
        ({"field": "attributes.tier", "operator": "eq", "value": "gold"}, set()),
        ({"field": "attributes.a.b", "operator": "neq", "value": None}, set()),
        ({"field": "preferences.sms", "operator": "eq", "value": True}, set()),
        ({"field": "tags", "operator": "in", "value": ["a", 1, True, None]}, set()),
        ({"field": "email", "operator": "contains", "value": "@corp."}, set()),
        ({"field": "attributes.n", "operator": "lt", "value": 1.5}, set()),
        ({"field": "", "operator": "eq", "value": 1}, {"rules[0].field"}),
        ({"field": "profile.x", "operator": "eq", "value": 1}, {"rules[0].field"}),
        ({"field": "tags.first", "operator": "eq", "value": 1}, {"rules[0].field"}),
        ({"field": "attributes.", "operator": "eq", "value": 1}, {"rules[0].field"}),
        ({"field": "preferences.email.x", "operator": "eq", "value": 1}, {"rules[0].field"}),
        ({"field": "tags", "operator": "has", "value": 1}, {"rules[0].operator"}),
        ({"field": "tags", "operator": "contains"}, {"rules[0].value"}),
        ({"field": "tags", "operator": "contains", "value": None}, {"rules[0].value"}),
        ({"field": "tags", "operator": "in", "value": [[1]]}, {"rules[0].value"}),
        ({"field": "tags", "operator": "in", "value": ["x"] * 1001}, {"rules[0].value"}),
        ({"field": "tags", "operator": "gt", "value": None}, {"rules[0].value"}),
        ({"field": "tags", "operator": "eq", "value": {"a": 1}}, {"rules[0].value"}),
        ({"field": "tags", "operator": "eq", "value": "x" * 1001}, {"rules[0].value"}),
        ({"field": "nope", "operator": "nope", "value": 1}, {"rules[0].field", "rules[0].operator"}),
    ],
)
def test_segment_rule_validation(rule: dict[str, Any], bad: set[str]) -> None:
    assert {v.field for v in rule_violations([rule])} == bad


def test_segment_definitions_need_name_match_and_rules() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validated_definition(name="", description="d" * 2001, match="", rules=[])
    assert {v.field for v in raised.value.violations} == {"name", "description", "match", "rules"}
    checked = validated_definition(name="  ok ", description="", match="any", rules=[], fields=frozenset({"name"}))
    assert checked.name == "ok"
    too_many = [{"field": "tags", "operator": "contains", "value": "x"}] * 101
    assert [v.field for v in rule_violations(too_many)] == ["rules"]


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused_where_json_cannot_store_them(number: float) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validated_patch(
            external_id="u",
            attributes={"ok": 1, "deep": {"list": [1, number]}},
            tags=[],
            preferences={},
            timezone="",
            email="",
            phone="",
        )
    assert [v.field for v in raised.value.violations] == ["attributes.deep.list[1]"]
    assert {v.field for v in rule_violations([{"field": "attributes.n", "operator": "gt", "value": number}])} == {
        "rules[0].value"
    }
    assert {v.field for v in rule_violations([{"field": "tags", "operator": "in", "value": ["a", number]}])} == {
        "rules[0].value"
    }
