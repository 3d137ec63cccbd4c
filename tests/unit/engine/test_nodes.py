"""The node contract, the registry, the 23 built-ins' config schemas and branches, and webhook node types."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from kalcifer_common.errors import InvalidArgument
from kalcifer_engine.domain import validate_graph
from kalcifer_engine.nodes import (
    Completed,
    NodeCategory,
    NodeRegistry,
    Waiting,
    WebhookNodeType,
    builtin_registry,
)
from kalcifer_engine.nodes import registry as registry_module
from kalcifer_engine.nodes.base import NodeType
from kalcifer_engine.nodes.condition.ab_split import AbSplit
from kalcifer_engine.nodes.schema import schema_errors
from kalcifer_engine.nodes.wait.wait import Wait

from tests.unit.engine.samples import REGISTRY, VALID_CONFIGS, Plugin, around, edge, graph, node, registry_with

SPEC_NODES = {
    "event_entry": ("trigger", ()),
    "segment_entry": ("trigger", ()),
    "webhook_entry": ("trigger", ()),
    "send_email": ("action", ()),
    "send_sms": ("action", ()),
    "send_push": ("action", ()),
    "send_whatsapp": ("action", ()),
    "send_in_app": ("action", ()),
    "call_webhook": ("action", ()),
    "update_profile": ("action", ()),
    "add_tag": ("action", ()),
    "custom_code": ("action", ()),
    "track_conversion": ("action", ()),
    "wait": ("wait", ()),
    "wait_until": ("wait", ()),
    "wait_for_event": ("wait", ("event_received", "timed_out")),
    "condition": ("condition", ("true", "false")),
    "ab_split": ("condition", None),  # config-dependent
    "frequency_cap": ("condition", ("allowed", "capped")),
    "check_segment": ("condition", ("true", "false")),
    "preference_gate": ("condition", ("true", "false")),
    "exit": ("end", ()),
    "goal_reached": ("end", ()),
}


def builtin(key: str) -> NodeType:
    found = REGISTRY.get(key)
    assert found is not None
    return found


# -- the built-ins ---------------------------------------------------------------------------------------------------


def test_builtin_registry_holds_the_23_spec_nodes_with_their_categories() -> None:
    assert sorted(REGISTRY.keys()) == sorted(SPEC_NODES)
    assert len(REGISTRY) == 23
    for key, (category, _) in SPEC_NODES.items():
        node_type = REGISTRY.get(key)
        assert node_type is not None
        assert node_type.category == category


@pytest.mark.parametrize("key", [k for k, (_, b) in SPEC_NODES.items() if b is not None])
def test_builtin_branches_match_the_spec(key: str) -> None:
    node_type = REGISTRY.get(key)
    assert node_type is not None
    assert node_type.branches(VALID_CONFIGS[key][0]) == SPEC_NODES[key][1]


def test_the_waits_and_call_webhook_are_resumable() -> None:
    # call_webhook parks on its outbound call and is resumed with the answer (SPEC 6.10).
    assert {t.key for t in REGISTRY.all() if t.resumable} == {"wait", "wait_until", "wait_for_event", "call_webhook"}


@pytest.mark.parametrize("key", sorted(SPEC_NODES))
def test_builtin_schema_is_a_closed_draft_2020_12_object_schema(key: str) -> None:
    node_type = REGISTRY.get(key)
    assert node_type is not None
    schema = node_type.config_schema
    assert schema_errors(schema) == []
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert isinstance(schema["required"], list)
    assert node_type.description


def test_ab_split_branches_are_its_variant_keys() -> None:
    split = AbSplit()
    assert split.branches({"variants": [{"key": "a", "weight": 1}, {"key": "b", "weight": 3}]}) == ("a", "b")
    assert split.branches({"variants": [{"key": "only", "weight": 1}]}) == ("only",)


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"variants": "a"},
        {"variants": [1, None, {"key": 3}, {"key": ""}]},
        {"variants": [{"key": "a"}, {"key": "a"}]},
    ],
)
def test_ab_split_branches_never_raise_on_bad_configs(config: dict[str, Any]) -> None:
    assert AbSplit().branches(config) in {(), ("a",)}


# -- one good and bad configs per built-in ---------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "config"), [(k, c) for k, configs in VALID_CONFIGS.items() for c in configs])
def test_valid_config_has_no_violations(key: str, config: dict[str, Any]) -> None:
    assert validate_graph(around(key, config), REGISTRY) == []


BAD_CONFIGS: list[tuple[str, dict[str, Any], str]] = [
    ("event_entry", {}, "event_type"),
    ("event_entry", {"event_type": ""}, "event_type"),
    ("event_entry", {"event_type": "signup", "filter": "event.amount >"}, "filter"),
    ("event_entry", {"event_type": "signup", "source": "web"}, "source"),
    ("segment_entry", {"segment_id": 5}, "segment_id"),
    ("webhook_entry", {"webhook_path": "/Orders"}, "webhook_path"),
    ("webhook_entry", {"webhook_path": "orders//paid"}, "webhook_path"),
    ("send_email", {}, "template_id"),
    ("send_email", {"template_id": "welcome", "data": ["x"]}, "data"),
    ("send_sms", {"template_id": "otp", "sender_id": "TWELVE_CHARS"}, "sender_id"),
    ("send_push", {"template_id": ""}, "template_id"),
    ("send_whatsapp", {"template_id": "t", "language": "english"}, "language"),
    ("send_in_app", {"template_id": "banner", "expiry": "7"}, "expiry"),
    ("call_webhook", {"url": "ftp://files.example.com"}, "url"),
    ("call_webhook", {"url": "https://x.example", "method": "TRACE"}, "method"),
    ("call_webhook", {"url": "https://x.example", "headers": {"X-Retry": 3}}, 'headers["X-Retry"]'),
    ("call_webhook", {"url": "https://x.example", "timeout": "5"}, "timeout"),
    ("call_webhook", {"url": "https://x.example", "timeout": "1h"}, "timeout"),
    ("update_profile", {"fields": {}}, "fields"),
    ("update_profile", {"fields": {"a.b": 1}}, "fields"),
    ("add_tag", {"tag": ""}, "tag"),
    ("custom_code", {"expression": "1 +"}, "expression"),
    ("custom_code", {"expression": "1", "output": "not-an-identifier"}, "output"),
    ("track_conversion", {"event_name": "purchase", "revenue": -1}, "revenue"),
    ("track_conversion", {"event_name": "purchase", "currency": "eur"}, "currency"),
    ("wait", {"duration": "30"}, "duration"),
    ("wait", {"duration": 30}, "duration"),
    ("wait", {}, "duration"),
    ("wait_until", {"datetime": "2030-01-31T09:00:00"}, "datetime"),
    ("wait_until", {"datetime": "tomorrow"}, "datetime"),
    ("wait_for_event", {"event_type": "paid", "timeout": "-5d"}, "timeout"),
    ("wait_for_event", {"event_type": "paid"}, "timeout"),
    ("wait_for_event", {"event_type": "paid", "timeout": "1d", "filter": "event.x =="}, "filter"),
    ("condition", {"field": "a..b", "operator": "eq", "value": 1}, "field"),
    ("condition", {"field": "a", "operator": "like", "value": 1}, "operator"),
    ("condition", {"field": "a", "operator": "eq"}, "value"),
    ("condition", {"field": "a", "operator": "not_in", "value": "PT"}, "value"),
    ("ab_split", {"variants": []}, "variants"),
    ("ab_split", {"variants": [{"key": "a", "weight": 0}]}, "variants[0].weight"),
    ("ab_split", {"variants": [{"key": "a"}]}, "variants[0].weight"),
    ("ab_split", {"variants": [{"key": "a", "weight": 1}, {"key": "a", "weight": 2}]}, "variants[1].key"),
    ("frequency_cap", {"max_messages": 0, "time_window": "1d", "channel": "email"}, "max_messages"),
    ("frequency_cap", {"max_messages": 1, "time_window": "1 day", "channel": "email"}, "time_window"),
    ("frequency_cap", {"max_messages": 1, "time_window": "1d", "channel": "fax"}, "channel"),
    ("check_segment", {}, "segment_id"),
    ("preference_gate", {"channel": "any"}, "channel"),
    ("exit", {"reason": 5}, "reason"),
    ("goal_reached", {"goal_name": ""}, "goal_name"),
]


def test_every_builtin_has_a_bad_config_case() -> None:
    assert {key for key, _, _ in BAD_CONFIGS} == set(SPEC_NODES)


@pytest.mark.parametrize(("key", "config", "field"), BAD_CONFIGS)
def test_bad_config_is_reported_at_its_field(key: str, config: dict[str, Any], field: str) -> None:
    index = 0 if builtin(key).category is NodeCategory.TRIGGER else 1
    violations = validate_graph(around(key, config), REGISTRY)
    assert [v.field for v in violations] == [f"nodes[{index}].config.{field}"]


def test_duration_violation_says_what_a_duration_looks_like() -> None:
    [violation] = validate_graph(around("wait", {"duration": "30"}), REGISTRY)
    assert violation.field == "nodes[1].config.duration"
    assert "'30' is not a duration" in violation.description


def test_cel_violation_is_one_line_with_a_position() -> None:
    [violation] = validate_graph(around("custom_code", {"expression": "1 +"}), REGISTRY)
    assert "\n" not in violation.description
    assert violation.description.startswith('"1 +" is not a valid CEL expression (Syntax error')
    assert "at 1:4" in violation.description


def test_condition_exists_needs_no_value() -> None:
    config = {"field": "customer.email", "operator": "exists"}
    assert validate_graph(around("condition", config), REGISTRY) == []


# -- results ---------------------------------------------------------------------------------------------------------


def test_timer_wait_needs_an_aware_fire_time() -> None:
    with pytest.raises(ValueError, match="fire_time"):
        Waiting(kind="timer")
    with pytest.raises(ValueError, match="timezone"):
        Waiting(kind="timer", fire_time=datetime(2030, 1, 1))
    assert Waiting(kind="timer", fire_time=datetime(2030, 1, 1, tzinfo=UTC)).fire_time is not None


def test_event_wait_needs_an_event_type() -> None:
    with pytest.raises(ValueError, match="event_type"):
        Waiting(kind="event")
    assert Waiting(kind="event", event_type="paid", timeout_branch="timed_out").event_type == "paid"


def test_results_do_not_share_their_default_output() -> None:
    assert Completed().output is not Completed().output


# -- the registry ----------------------------------------------------------------------------------------------------


def test_registry_get_unknown_key_is_none() -> None:
    assert REGISTRY.get("nope") is None
    assert "nope" not in REGISTRY


def test_registering_a_key_twice_is_refused() -> None:
    registry = NodeRegistry([Wait()])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Wait())


def test_with_extra_adds_types_without_changing_the_original() -> None:
    extended = REGISTRY.with_extra([Plugin()])
    assert extended.get("plugin_score") is not None
    assert REGISTRY.get("plugin_score") is None
    assert len(extended) == 24


def test_with_extra_refuses_to_shadow_a_builtin() -> None:
    impostor = WebhookNodeType(
        key="wait", category="action", description="x", config_schema={}, endpoint_url="https://x.example/hook"
    )
    with pytest.raises(ValueError, match="'wait' is already registered"):
        REGISTRY.with_extra([impostor])


def test_builtin_registry_loads_plugins_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = EntryPoint("score", "tests.unit.engine.samples:Plugin", registry_module.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [plugin] if group == plugin.group else [])
    registry = builtin_registry()
    assert isinstance(registry.get("plugin_score"), Plugin)
    assert len(registry) == 24


def test_builtin_registry_refuses_an_entry_point_that_is_not_a_node_type(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint("broken", "tests.unit.engine.samples:graph", registry_module.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [broken])
    with pytest.raises(TypeError, match="'broken'"):
        builtin_registry()


# -- webhook node types ----------------------------------------------------------------------------------------------

SCORE_SCHEMA = {
    "type": "object",
    "properties": {"model": {"type": "string", "minLength": 1}},
    "required": ["model"],
    "additionalProperties": False,
}


def score_type(**overrides: Any) -> WebhookNodeType:
    definition: dict[str, Any] = {
        "key": "score_lead",
        "category": "condition",
        "description": "Score a lead with the tenant's model.",
        "config_schema": SCORE_SCHEMA,
        "branches": ("hot", "cold"),
        "endpoint_url": "https://ml.example.com/score",
        "timeout_ms": 2000,
    }
    return WebhookNodeType(**{**definition, **overrides})


def test_webhook_type_configs_are_validated_against_its_schema() -> None:
    registry = registry_with(score_type())
    nodes = [node("t", "event_entry", {"event_type": "lead"}), node("s", "score_lead", {"model": ""})]
    nodes += [node("hot", "exit"), node("cold", "exit")]
    edges = [edge("t", "s"), edge("s", "hot", "hot"), edge("s", "cold", "cold")]
    assert [v.field for v in validate_graph(graph(nodes, edges), registry)] == ["nodes[1].config.model"]
    nodes[1]["config"] = {"model": "v2"}
    assert validate_graph(graph(nodes, edges), registry) == []


def test_webhook_type_branches_are_the_declared_ones() -> None:
    webhook = score_type()
    assert webhook.branches({}) == ("hot", "cold")
    assert webhook.category is NodeCategory.CONDITION


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"key": "Score Lead"}, "key"),
        ({"category": "trigger"}, "category"),
        ({"config_schema": {"type": "objekt"}}, "config_schema"),
        ({"config_schema": {"$ref": "https://evil.example/schema.json"}}, "config_schema"),
        ({"branches": ("hot", "hot")}, "branches"),
        ({"category": "end"}, "branches"),
        ({"endpoint_url": "ftp://ml.example.com/score"}, "endpoint_url"),
        ({"endpoint_url": "https:///no-host"}, "endpoint_url"),
        ({"timeout_ms": 120_000}, "timeout_ms"),
    ],
)
def test_bad_webhook_type_definitions_are_refused(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        score_type(**overrides)
    assert [v.field for v in caught.value.violations] == [field]


def test_a_stored_plain_http_type_still_loads() -> None:
    # Whether plain http is allowed is OUTBOUND_ALLOWLIST's to say, at registration and again at every call, so a
    # stored type loads whatever the allowlist is today (tests/integration/api/test_node_types_api.py, outbound).
    assert score_type(endpoint_url="http://127.0.0.1:8080/score").endpoint_url.startswith("http://")
