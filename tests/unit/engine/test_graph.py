"""Parsing the graph's JSON form, writing it back, and the lookups a walker needs."""

from __future__ import annotations

from typing import Any

import pytest
from kalcifer_common.errors import InvalidArgument
from kalcifer_engine.domain import FlowGraph, GraphEdge, GraphNode, GraphViolation, ViolationReason, parse_graph

from tests.unit.engine.samples import REGISTRY, edge, graph, node

WELCOME = graph(
    [
        {**node("t", "event_entry", {"event_type": "signup"}), "position": {"x": 10, "y": 20.5}},
        node("c", "check_segment", {"segment_id": "vip"}),
        node("mail", "send_email", {"template_id": "welcome"}),
        node("bye", "exit"),
    ],
    [edge("t", "c"), edge("c", "mail", "true"), edge("c", "bye", "false"), {"source": "mail", "target": "bye"}],
)


def test_parse_builds_typed_nodes_and_edges() -> None:
    flow, violations = parse_graph(WELCOME)
    assert violations == []
    assert flow is not None
    assert flow.nodes[0] == GraphNode("t", "event_entry", {"event_type": "signup"}, (10.0, 20.5))
    assert flow.edges[1] == GraphEdge("c-mail-true", "c", "mail", "true")
    assert flow.edges[3] == GraphEdge("", "mail", "bye", "")


def test_json_round_trips() -> None:
    flow = FlowGraph.from_json(WELCOME)
    assert FlowGraph.from_json(flow.to_json()) == flow


def test_absent_and_null_fields_take_proto_defaults() -> None:
    flow = FlowGraph.from_json({"nodes": [{"id": "t", "type": "exit", "config": None, "position": None}]})
    assert flow.nodes == (GraphNode("t", "exit", {}, None),)
    assert flow.edges == ()
    assert FlowGraph.from_json({}) == FlowGraph()


def test_position_may_be_a_pair() -> None:
    assert FlowGraph.from_json({"nodes": [{"id": "a", "type": "exit", "position": [1, 2]}]}).nodes[0].position == (
        1.0,
        2.0,
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], ""),
        ({"nodes": {}}, "nodes"),
        ({"nodes": [], "edges": "a->b"}, "edges"),
        ({"nodes": [], "flows": []}, "flows"),
        ({"nodes": ["t"]}, "nodes[0]"),
        ({"nodes": [{"id": 1, "type": "exit"}]}, "nodes[0].id"),
        ({"nodes": [{"id": "a", "type": ["exit"]}]}, "nodes[0].type"),
        ({"nodes": [{"id": "a", "type": "exit", "config": "{}"}]}, "nodes[0].config"),
        ({"nodes": [{"id": "a", "type": "exit", "position": {"x": "1"}}]}, "nodes[0].position"),
        ({"nodes": [{"id": "a", "type": "exit", "label": "A"}]}, "nodes[0].label"),
        ({"nodes": [], "edges": [{"source": "a", "target": 2}]}, "edges[0].target"),
        ({"nodes": [], "edges": [{"source": "a", "target": "b", "branch": True}]}, "edges[0].branch"),
        ({"nodes": [], "edges": [None]}, "edges[0]"),
    ],
)
def test_malformed_shapes_are_violations_not_exceptions(data: Any, field: str) -> None:
    flow, violations = parse_graph(data)
    assert flow is None
    assert [v.field for v in violations] == [field]
    assert all(isinstance(v, GraphViolation) and v.reason is ViolationReason.MALFORMED_GRAPH for v in violations)


def test_parse_reports_every_malformed_field_at_once() -> None:
    _, violations = parse_graph({"nodes": [{"id": 1, "type": 2}], "edges": [{"source": 3}]})
    assert [v.field for v in violations] == ["nodes[0].id", "nodes[0].type", "edges[0].source"]


def test_from_json_raises_invalid_argument_on_a_malformed_shape() -> None:
    with pytest.raises(InvalidArgument) as caught:
        FlowGraph.from_json({"nodes": "none"})
    assert caught.value.violations[0].field == "nodes"


def test_walker_lookups() -> None:
    flow = FlowGraph.from_json(WELCOME)
    assert [e.target for e in flow.outgoing("c")] == ["mail", "bye"]
    assert [e.source for e in flow.incoming("bye")] == ["c", "mail"]
    assert flow.outgoing("bye") == ()
    assert flow.incoming("t") == ()
    assert [n.id for n in flow.trigger_nodes(REGISTRY)] == ["t"]
    assert flow.node("mail") == flow.nodes[2]
    assert flow.node("nope") is None
