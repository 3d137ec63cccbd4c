"""Valid configs for every built-in and small builders of graphs, shared by the engine's unit tests."""

from __future__ import annotations

from typing import Any

from kalcifer_engine.nodes import NodeCategory, NodeRegistry, NodeType, builtin_registry
from kalcifer_engine.nodes.schema import object_schema

REGISTRY = builtin_registry()

# At least one config per built-in; several where optional fields change the shape.
VALID_CONFIGS: dict[str, list[dict[str, Any]]] = {
    "event_entry": [{"event_type": "signup"}, {"event_type": "order.paid", "filter": "event.amount > 100"}],
    "segment_entry": [{"segment_id": "vip"}],
    "webhook_entry": [{"webhook_path": "orders/paid"}, {"webhook_path": "leads"}],
    "send_email": [
        {"template_id": "welcome"},
        {"template_id": "welcome", "subject": "Hi", "reply_to": "a@b.example", "data": {"coupon": "X1"}},
    ],
    "send_sms": [{"template_id": "otp"}, {"template_id": "otp", "sender_id": "KALCIFER"}],
    "send_push": [{"template_id": "nudge", "title": "Back?", "deep_link": "app://cart"}],
    "send_whatsapp": [{"template_id": "order_update", "language": "pt_BR"}],
    "send_in_app": [{"template_id": "banner"}, {"template_id": "banner", "placement": "home", "expiry": "7d"}],
    "call_webhook": [
        {"url": "https://hooks.example.com/x"},
        {
            "url": "http://crm.example.com/lead?x=1",
            "method": "PUT",
            "headers": {"X-Key": "k"},
            "body": [1],
            "timeout": "5s",
        },
    ],
    "update_profile": [{"fields": {"tier": "gold", "score": None}}],
    "add_tag": [{"tag": "engaged"}],
    "custom_code": [{"expression": "customer.attributes.score * 2", "output": "double_score"}, {"expression": "1"}],
    "track_conversion": [{"event_name": "purchase"}, {"event_name": "purchase", "revenue": 19.9, "currency": "EUR"}],
    "wait": [{"duration": "1.5h"}, {"duration": "30s"}],
    "wait_until": [{"datetime": "2030-01-31T09:00:00+01:00"}, {"datetime": "2030-01-31T09:00:00Z"}],
    "wait_for_event": [
        {"event_type": "order.paid", "timeout": "3d"},
        {"event_type": "order.paid", "timeout": "1w", "filter": "event.total >= 10"},
    ],
    "condition": [
        {"field": "customer.attributes.tier", "operator": "eq", "value": "gold"},
        {"field": "event.tags", "operator": "contains", "value": "vip"},
        {"field": "event.country", "operator": "in", "value": ["PT", "ES"]},
        {"field": "customer.email", "operator": "exists"},
    ],
    "ab_split": [
        {"variants": [{"key": "a", "weight": 50}, {"key": "b", "weight": 50}]},
        {"variants": [{"key": "control", "weight": 0.5}]},
        {"variants": [{"key": "x", "weight": 1}, {"key": "y", "weight": 2}, {"key": "z", "weight": 3}]},
    ],
    "frequency_cap": [{"max_messages": 3, "time_window": "1d", "channel": "email"}],
    "check_segment": [{"segment_id": "churn_risk"}],
    "preference_gate": [{"channel": "sms"}],
    "exit": [{}, {"reason": "unsubscribed"}],
    "goal_reached": [{"goal_name": "first_purchase"}],
}


def node(node_id: str, node_type: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """A node in the graph's JSON form."""
    return {"id": node_id, "type": node_type, "config": {} if config is None else config}


def edge(source: str, target: str, branch: str = "", edge_id: str | None = None) -> dict[str, Any]:
    """An edge in the graph's JSON form (id defaults to "source-target[-branch]")."""
    default_id = f"{source}-{target}" + (f"-{branch}" if branch else "")
    out = {"id": default_id if edge_id is None else edge_id, "source": source, "target": target}
    if branch:
        out["branch"] = branch
    return out


def graph(nodes: list[dict[str, Any]], edges: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A graph in its JSON form."""
    return {"nodes": nodes, "edges": edges or []}


def around(key: str, config: dict[str, Any]) -> dict[str, Any]:
    """A valid graph around one node `n` of type `key`: a trigger before it (unless it is one), every branch wired.

    Only `n`'s own config can then cause violations, at `nodes[0].config...` (triggers) or `nodes[1].config...`.
    """
    node_type = REGISTRY.get(key)
    assert node_type is not None
    if node_type.category is NodeCategory.TRIGGER:
        return graph([node("n", key, config), node("done", "exit")], [edge("n", "done")])
    nodes = [node("t", "event_entry", {"event_type": "signup"}), node("n", key, config)]
    edges = [edge("t", "n")]
    for branch in node_type.branches(config):
        nodes.append(node(f"end_{branch}", "exit"))
        edges.append(edge("n", f"end_{branch}", branch))
    return graph(nodes, edges)


class Plugin(NodeType):
    """A third-party node type, loaded through the `kalcifer.nodes` entry-point group in tests."""

    key = "plugin_score"
    category = NodeCategory.ACTION
    description = "Score a lead (plugin)."
    config_schema = object_schema(description, {"model": {"type": "string"}}, required=["model"])


def registry_with(*nodes: NodeType) -> NodeRegistry:
    """The built-ins plus `nodes`."""
    return REGISTRY.with_extra(nodes)
