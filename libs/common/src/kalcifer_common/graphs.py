"""A flow graph between its stored JSON form (`flow_versions.graph`) and `kalcifer.v1.FlowGraph`: the one
conversion the API (storing and sending graphs) and the engine (validating them) share.

The JSON form is the one SPEC 5 defines and the engine parses (`kalcifer_engine.domain.graph`):
`{"nodes": [{"id", "type", "config", "position"?}], "edges": [{"id"?, "source", "target", "branch"?}]}`.
Defaults are left out (an empty edge id or branch, an unset position), so a graph stored from protobuf and one
written by hand compare equal. Config numbers go through `struct_to_dict`, so `3` stays `3`, not `3.0`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kalcifer.v1 import flow_pb2

from kalcifer_common.structs import dict_to_struct, struct_to_dict


def graph_to_json(graph: flow_pb2.FlowGraph) -> dict[str, Any]:
    """Wire -> stored JSON form."""
    nodes: list[dict[str, Any]] = []
    for node in graph.nodes:
        item: dict[str, Any] = {"id": node.id, "type": node.type, "config": struct_to_dict(node.config)}
        if node.HasField("position"):
            item["position"] = {"x": node.position.x, "y": node.position.y}
        nodes.append(item)
    edges: list[dict[str, Any]] = []
    for edge in graph.edges:
        out: dict[str, Any] = {"source": edge.source, "target": edge.target}
        if edge.id:
            out["id"] = edge.id
        if edge.branch:
            out["branch"] = edge.branch
        edges.append(out)
    return {"nodes": nodes, "edges": edges}


def _text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    return value if isinstance(value, str) else ""


def graph_from_json(data: Mapping[str, Any]) -> flow_pb2.FlowGraph:
    """Stored JSON form -> wire. Stored graphs were validated on the way in; anything odd is dropped, not raised."""
    graph = flow_pb2.FlowGraph()
    for item in data.get("nodes") or ():
        if not isinstance(item, Mapping):
            continue
        config = item.get("config")
        node = graph.nodes.add(
            id=_text(item, "id"),
            type=_text(item, "type"),
            config=dict_to_struct(config if isinstance(config, dict) else None),
        )
        position = item.get("position")
        if isinstance(position, Mapping):
            node.position.x = float(position.get("x", 0.0))
            node.position.y = float(position.get("y", 0.0))
    for item in data.get("edges") or ():
        if isinstance(item, Mapping):
            graph.edges.add(
                id=_text(item, "id"),
                source=_text(item, "source"),
                target=_text(item, "target"),
                branch=_text(item, "branch"),
            )
    return graph
