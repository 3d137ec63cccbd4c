"""Condition nodes branch on the context, never raise on odd data (SPEC 6.2)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kalcifer_engine.nodes.base import Branched, NodeType

from tests.unit.engine.fake_context import NOW, FakeContext
from tests.unit.engine.samples import REGISTRY


def node(key: str) -> NodeType:
    found = REGISTRY.get(key)
    assert found is not None
    return found


async def branch(key: str, config: dict[str, Any], ctx: FakeContext) -> str:
    result = await node(key).execute(config, ctx)
    assert isinstance(result, Branched)
    return result.key


CUSTOMER = {
    "customer": {
        "tier": "gold",
        "age": 30,
        "tags": ["vip", "new"],
        "name": "Ada",
        "none": None,
        "vip": True,
        "flags": [True],
        "address": {"city": "Lyon"},
    },
    "event": {"items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]},
}


@pytest.mark.parametrize(
    ("field", "operator", "value", "expected"),
    [
        ("customer.tier", "eq", "gold", "true"),
        ("customer.tier", "eq", "silver", "false"),
        ("customer.tier", "neq", "silver", "true"),
        ("customer.tier", "neq", "gold", "false"),
        ("customer.age", "gt", 29, "true"),
        ("customer.age", "gt", 30, "false"),
        ("customer.age", "gte", 30, "true"),
        ("customer.age", "gte", 31, "false"),
        ("customer.age", "lt", 31, "true"),
        ("customer.age", "lt", 30, "false"),
        ("customer.age", "lte", 30, "true"),
        ("customer.age", "lte", 29, "false"),
        ("customer.tags", "contains", "vip", "true"),
        ("customer.tags", "contains", "old", "false"),
        ("customer.name", "contains", "d", "true"),
        ("customer.name", "contains", "z", "false"),
        ("customer.tier", "in", ["gold", "platinum"], "true"),
        ("customer.tier", "in", ["silver"], "false"),
        ("customer.tier", "not_in", ["silver"], "true"),
        ("customer.tier", "not_in", ["gold"], "false"),
        ("customer.tier", "exists", None, "true"),
        ("customer.missing", "exists", None, "false"),
        ("customer.none", "exists", None, "false"),
        ("customer.age", "eq", 30.0, "true"),
        ("customer.vip", "eq", True, "true"),
        ("customer.vip", "neq", 1, "true"),
        ("customer.flags", "contains", True, "true"),
        ("customer.flags", "contains", 1, "false"),
        ("customer.tags", "in", ["new", "old"], "true"),
        ("customer.tags", "not_in", ["old"], "true"),
        ("customer.address", "contains", "city", "true"),
        ("customer.address", "eq", {"city": "Lyon"}, "true"),
        ("event.items.0.sku", "eq", "a", "true"),
        ("event.items.1.qty", "lt", 2, "true"),
        ("event.items.2.sku", "exists", None, "false"),
        ("event.items.2.sku", "neq", "a", "true"),
    ],
)
async def test_condition_operators(field: str, operator: str, value: Any, expected: str) -> None:
    config = {"field": field, "operator": operator, "value": value}
    assert await branch("condition", config, FakeContext(data=CUSTOMER)) == expected


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        ("eq", "false"),
        ("gt", "false"),
        ("gte", "false"),
        ("lt", "false"),
        ("lte", "false"),
        ("contains", "false"),
        ("in", "false"),
        ("exists", "false"),
        ("neq", "true"),
        ("not_in", "true"),
    ],
)
async def test_condition_missing_field_fails_positive_tests_and_passes_negative_ones(
    operator: str, expected: str
) -> None:
    """As in segments: "tier is not gold" holds for a customer with no tier at all."""
    value: Any = [1] if operator in ("in", "not_in") else 1
    config = {"field": "customer.nope", "operator": operator, "value": value}
    assert await branch("condition", config, FakeContext(data=CUSTOMER)) == expected


@pytest.mark.parametrize(
    ("field", "operator", "value"),
    [
        ("customer.tier", "gt", 3),
        ("customer.age", "lt", "forty"),
        ("customer.age", "contains", 3),
        ("customer.name", "contains", 3),
        ("customer.age", "gte", True),
        ("customer.vip", "eq", 1),
        ("customer.vip", "gte", False),
        ("customer.tags", "gt", ["a"]),
        ("customer.tags", "contains", 1),
        ("customer.age", "eq", "30"),
    ],
)
async def test_condition_incomparable_types_are_false(field: str, operator: str, value: Any) -> None:
    config = {"field": field, "operator": operator, "value": value}
    assert await branch("condition", config, FakeContext(data=CUSTOMER)) == "false"


async def test_ab_split_is_sticky_per_participant() -> None:
    ctx = FakeContext(participant_id="p-42")
    config = {"variants": [{"key": "a", "weight": 1}, {"key": "b", "weight": 1}]}
    first = await branch("ab_split", config, ctx)
    assert {await branch("ab_split", config, ctx) for _ in range(5)} == {first}


@settings(max_examples=20, deadline=None)
@given(weight_a=st.integers(min_value=1, max_value=9))
async def test_ab_split_respects_weights(weight_a: int) -> None:
    config = {"variants": [{"key": "a", "weight": weight_a}, {"key": "b", "weight": 10 - weight_a}]}
    counts: Counter[str] = Counter()
    participants = 2000
    for i in range(participants):
        counts[await branch("ab_split", config, FakeContext(participant_id=f"p-{i}"))] += 1
    assert abs(counts["a"] / participants - weight_a / 10) < 0.05


@pytest.mark.parametrize(("sent", "expected"), [(0, "allowed"), (2, "allowed"), (3, "capped"), (4, "capped")])
async def test_frequency_cap_boundary(sent: int, expected: str) -> None:
    ctx = FakeContext(delivery_counts={"email": sent})
    config = {"max_messages": 3, "time_window": "1d", "channel": "email"}
    assert await branch("frequency_cap", config, ctx) == expected
    assert ctx.count_queries == [("email", NOW - timedelta(days=1))]


async def test_frequency_cap_any_channel_counts_all() -> None:
    ctx = FakeContext(delivery_counts={"any": 5})
    assert await branch("frequency_cap", {"max_messages": 5, "time_window": "1w", "channel": "any"}, ctx) == "capped"
    assert ctx.count_queries == [("any", NOW - timedelta(weeks=1))]


async def test_check_segment_both_branches() -> None:
    assert await branch("check_segment", {"segment_id": "s1"}, FakeContext(segments={"s1"})) == "true"
    assert await branch("check_segment", {"segment_id": "s1"}, FakeContext(segments={"s2"})) == "false"


async def test_preference_gate_both_branches() -> None:
    assert await branch("preference_gate", {"channel": "sms"}, FakeContext()) == "true"
    assert await branch("preference_gate", {"channel": "sms"}, FakeContext(refused_channels={"sms"})) == "false"
