"""A `condition` node and a segment rule give the same answer (SPEC 7: segments are "evaluated by the same code
as `condition` nodes"), for every operator they share, on generated profiles, paths and operands.

Both sides are the real thing: `behaviour.condition` reading the profile at `customer` in the instance context
through a context whose `lookup` is the runtime's (`comparisons.lookup`, what `DbNodeContext.lookup` calls), and
`segments.rule_holds` reading the profile itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kalcifer_common import comparisons, segments
from kalcifer_engine.nodes.base import Branched
from kalcifer_engine.nodes.behaviour import condition
from kalcifer_engine.nodes.condition.condition import Condition
from kalcifer_engine.nodes.context import NodeContext

# The operators a condition node's config may name (its schema's enum).
CONDITION_OPERATORS = tuple(Condition.config_schema["properties"]["operator"]["enum"])
SHARED_OPERATORS = tuple(operator for operator in segments.OPERATORS if operator in CONDITION_OPERATORS)


@dataclass(frozen=True)
class ContextLookup:
    """The one part of `NodeContext` that `condition` uses: `lookup`, answered as the runtime answers it."""

    data: Mapping[str, Any]

    def lookup(self, path: str) -> tuple[bool, Any]:
        return comparisons.lookup(self.data, path)


def condition_says(profile: Mapping[str, Any], field: str, operator: str, value: Any) -> bool:
    ctx = cast("NodeContext", ContextLookup({"customer": profile, "event": {}}))
    result = condition({"field": f"customer.{field}", "operator": operator, "value": value}, ctx)
    assert isinstance(result, Branched)
    assert result.key in ("true", "false")
    return result.key == "true"


def segment_says(profile: Mapping[str, Any], field: str, operator: str, value: Any) -> bool:
    return segments.rule_holds({"field": field, "operator": operator, "value": value}, profile)


def test_segments_allow_only_operators_the_condition_node_has() -> None:
    assert SHARED_OPERATORS == segments.OPERATORS
    assert CONDITION_OPERATORS == comparisons.OPERATORS


PROFILE = segments.customer_profile(
    external_id="u-1",
    attributes={"vip": True, "score": 1, "ratio": 1.0, "orders": [{"sku": "a"}, {"sku": "b"}], "code": "1"},
    tags=["new", "fr"],
    email="ann@example.com",
)


@pytest.mark.parametrize(
    ("field", "operator", "value", "expected"),
    [
        ("attributes.vip", "eq", 1, False),
        ("attributes.vip", "neq", 1, True),
        ("attributes.vip", "in", [1], False),
        ("attributes.score", "eq", True, False),
        ("attributes.score", "eq", 1.0, True),
        ("attributes.ratio", "eq", 1, True),
        ("attributes.score", "eq", "1", False),
        ("attributes.code", "eq", 1, False),
        ("attributes.vip", "gt", 0, False),
        ("attributes.missing", "neq", "gold", True),
        ("attributes.missing", "not_in", ["gold"], True),
        ("attributes.missing", "eq", None, False),
        ("attributes.missing", "in", [None], False),
        ("attributes.orders.0.sku", "eq", "a", True),
        ("attributes.orders.1.sku", "in", ["b", "c"], True),
        ("attributes.orders.2.sku", "neq", "a", True),
        ("attributes.orders.01.sku", "eq", "b", False),
        ("tags", "in", ["fr", "de"], True),
        ("tags", "not_in", ["de"], True),
        ("tags", "contains", "fr", True),
        ("email", "contains", "@example.", True),
    ],
)
def test_tricky_cases_answer_the_same_on_both_sides(field: str, operator: str, value: Any, expected: bool) -> None:
    assert condition_says(PROFILE, field, operator, value) is expected
    assert segment_says(PROFILE, field, operator, value) is expected


# --- the property ----------------------------------------------------------------------------------------------

# Small pools so that the collisions that used to split the two (True vs 1, 1 vs 1.0, lists vs items) are common.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2)
    | st.sampled_from([0.0, 1.0, -1.5, 2.5])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet="ab01", max_size=3)
)
keys = st.sampled_from(["a", "b", "0", "1"])
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=10,
)
profiles = st.builds(
    lambda attributes, tags, email, phone: segments.customer_profile(
        external_id="p", attributes=attributes, tags=tags, email=email, phone=phone
    ),
    st.dictionaries(keys, json_values, max_size=4),
    st.lists(st.text(alphabet="ab01", max_size=3), max_size=3),
    st.none() | st.text(alphabet="ab01@.", max_size=6),
    st.none() | st.just("+33612345678"),
)
# Paths through objects and lists, and ones that cannot resolve (a step past a list's end, into a string, ...).
fields = st.sampled_from(
    [
        "attributes.a",
        "attributes.b",
        "attributes.0",
        "attributes.a.a",
        "attributes.a.0",
        "attributes.a.1",
        "attributes.a.0.b",
        "attributes.a.01",
        "attributes.a.1.0",
        "tags",
        "tags.0",
        "email",
        "email.0",
        "phone",
        "preferences.email",
        "external_id",
        "nothing",
        "nothing.deeper",
    ]
)
operands = json_values | st.lists(scalars, max_size=4) | st.lists(json_values, max_size=3)


@given(profiles, fields, st.sampled_from(SHARED_OPERATORS), operands)
def test_condition_and_segment_rule_agree(profile: dict[str, Any], field: str, operator: str, value: Any) -> None:
    assert condition_says(profile, field, operator, value) is segment_says(profile, field, operator, value)


@given(profiles, fields, st.sampled_from(SHARED_OPERATORS), operands)
def test_both_are_the_shared_comparison_of_the_resolved_value(
    profile: dict[str, Any], field: str, operator: str, value: Any
) -> None:
    expected = comparisons.compare(operator, comparisons.resolve(profile, field), value)
    assert condition_says(profile, field, operator, value) is expected
    assert segment_says(profile, field, operator, value) is expected
