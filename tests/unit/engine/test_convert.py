"""Wire <-> domain conversions of the registry RPCs."""

from __future__ import annotations

from kalcifer.v1 import flow_pb2, node_type_pb2
from kalcifer_common.errors import FieldViolation
from kalcifer_common.graphs import graph_to_json
from kalcifer_common.structs import dict_to_struct, struct_to_dict
from kalcifer_engine.convert import node_type_to_proto, violation_to_proto
from kalcifer_engine.domain.graph import FlowGraph
from kalcifer_engine.domain.violations import GraphViolation, ViolationReason
from kalcifer_engine.nodes.base import NodeCategory
from kalcifer_engine.nodes.webhook import WebhookNodeType

from tests.unit.engine.samples import REGISTRY


def test_a_wire_graph_becomes_the_json_form_the_engine_parses() -> None:
    wire = flow_pb2.FlowGraph(
        nodes=[
            flow_pb2.GraphNode(
                id="in",
                type="event_entry",
                config=dict_to_struct({"event_type": "signup"}),
                position=flow_pb2.Position(x=1.5, y=2),
            ),
            flow_pb2.GraphNode(id="cap", type="frequency_cap", config=dict_to_struct({"max_messages": 3})),
        ],
        edges=[
            flow_pb2.GraphEdge(source="in", target="cap"),
            flow_pb2.GraphEdge(id="e", source="cap", target="x", branch="allowed"),
        ],
    )
    data = graph_to_json(wire)
    assert data == {
        "nodes": [
            {"id": "in", "type": "event_entry", "config": {"event_type": "signup"}, "position": {"x": 1.5, "y": 2.0}},
            {"id": "cap", "type": "frequency_cap", "config": {"max_messages": 3}},
        ],
        "edges": [{"source": "in", "target": "cap"}, {"id": "e", "source": "cap", "target": "x", "branch": "allowed"}],
    }
    assert isinstance(data["nodes"][1]["config"]["max_messages"], int)
    assert FlowGraph.from_json(data).to_json() == data


def test_violations_keep_their_node_edge_and_reason() -> None:
    graph_violation = GraphViolation("edges[0].target", "no such node", ViolationReason.MISSING_EDGE_END, edge_id="e1")
    assert violation_to_proto(graph_violation) == flow_pb2.GraphViolation(
        field="edges[0].target", description="no such node", edge_id="e1", reason="MISSING_EDGE_END"
    )
    assert violation_to_proto(FieldViolation("nodes", "too many")) == flow_pb2.GraphViolation(
        field="nodes", description="too many"
    )


def test_builtin_node_types_on_the_wire() -> None:
    condition = REGISTRY.get("condition")
    ab_split = REGISTRY.get("ab_split")
    assert condition is not None
    assert ab_split is not None
    wire = node_type_to_proto(condition)
    assert (wire.key, wire.category, list(wire.branches), wire.builtin, wire.endpoint_url) == (
        "condition",
        node_type_pb2.NODE_CATEGORY_CONDITION,
        ["true", "false"],
        True,
        "",
    )
    assert struct_to_dict(wire.config_schema) == condition.config_schema
    assert list(node_type_to_proto(ab_split).branches) == []


def test_webhook_node_types_on_the_wire() -> None:
    hook = WebhookNodeType(
        key="score",
        category=NodeCategory.WAIT,
        description="waits for the CRM",
        config_schema={"type": "object"},
        resumable=True,
        endpoint_url="https://crm.example.com/score",
    )
    wire = node_type_to_proto(hook)
    assert (wire.builtin, wire.resumable, wire.category, wire.endpoint_url, wire.description) == (
        False,
        True,
        node_type_pb2.NODE_CATEGORY_WAIT,
        "https://crm.example.com/score",
        "waits for the CRM",
    )
