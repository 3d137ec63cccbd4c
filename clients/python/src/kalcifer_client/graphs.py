"""Flow graphs and JSON values between Python and protobuf: the forms operators write in JSON or YAML files.

A graph is SPEC 5's JSON form, `{"nodes": [{"id", "type", "config", "position"?}], "edges": [{"id"?, "source",
"target", "branch"?}]}`, the form the server stores. Defaults are left out (an empty edge id or branch, an unset
position) and integral numbers come back as `int`, so a graph written by hand, sent and read back compares equal
to what was written. (The services have their own copy in `kalcifer_common.graphs`, which this SDK does not
depend on; tests/unit/sdk checks the two agree.)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from kalcifer.v1 import flow_pb2

_MAX_EXACT_INT = 2**53

GraphLike = Mapping[str, Any] | flow_pb2.FlowGraph


def value_to_python(value: struct_pb2.Value) -> Any:
    """One `Value` as None, bool, int (when integral), float, str, list or dict."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [value_to_python(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) <= _MAX_EXACT_INT else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A `Struct` as a dict of plain JSON values, keys sorted: a Struct is a map, whose order protobuf does not
    keep, so sorting is what makes the same Struct always give the same dict, and an exported file the same text."""
    return {key: value_to_python(struct.fields[key]) for key in sorted(struct.fields)}


def dict_to_struct(data: Mapping[str, Any] | None) -> struct_pb2.Struct:
    """A mapping of JSON values as a `Struct` (None gives an empty one)."""
    struct = struct_pb2.Struct()
    if data:
        struct.update(dict(data))
    return struct


def timestamp_of(moment: datetime) -> timestamp_pb2.Timestamp:
    """A `Timestamp` of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime names no instant; give it a timezone")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def graph_from_dict(data: Mapping[str, Any]) -> flow_pb2.FlowGraph:
    """SPEC 5's JSON form -> `FlowGraph`. Malformed items raise ValueError naming them; validating the graph
    itself (node types, configs, edges) is the server's job (`flows.validate`)."""
    graph = flow_pb2.FlowGraph()
    nodes, edges = data.get("nodes") or [], data.get("edges") or []
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise ValueError("a graph's `nodes` and `edges` must be lists")
    for index, item in enumerate(nodes):
        if not isinstance(item, Mapping):
            raise ValueError(f"nodes[{index}] must be an object")
        config = item.get("config")
        if config is not None and not isinstance(config, Mapping):
            raise ValueError(f"nodes[{index}].config must be an object")
        node = graph.nodes.add(id=_text(item, "id"), type=_text(item, "type"), config=dict_to_struct(config))
        position = item.get("position")
        if position is not None:
            if not isinstance(position, Mapping):
                raise ValueError(f"nodes[{index}].position must be an object with x and y")
            node.position.x, node.position.y = float(position.get("x", 0)), float(position.get("y", 0))
    for index, item in enumerate(edges):
        if not isinstance(item, Mapping):
            raise ValueError(f"edges[{index}] must be an object")
        graph.edges.add(
            id=_text(item, "id"),
            source=_text(item, "source"),
            target=_text(item, "target"),
            branch=_text(item, "branch"),
        )
    return graph


def graph_to_dict(graph: flow_pb2.FlowGraph) -> dict[str, Any]:
    """`FlowGraph` -> SPEC 5's JSON form (defaults left out, integral numbers as int)."""
    nodes: list[dict[str, Any]] = []
    for node in graph.nodes:
        item: dict[str, Any] = {"id": node.id, "type": node.type, "config": struct_to_dict(node.config)}
        if node.HasField("position"):
            item["position"] = {"x": _number(node.position.x), "y": _number(node.position.y)}
        nodes.append(item)
    edges: list[dict[str, Any]] = []
    for edge in graph.edges:
        out: dict[str, Any] = {}
        if edge.id:
            out["id"] = edge.id
        out["source"], out["target"] = edge.source, edge.target
        if edge.branch:
            out["branch"] = edge.branch
        edges.append(out)
    return {"nodes": nodes, "edges": edges}


def as_graph(graph: GraphLike) -> flow_pb2.FlowGraph:
    """A `FlowGraph` as is, or one built from its JSON form."""
    return graph if isinstance(graph, flow_pb2.FlowGraph) else graph_from_dict(graph)


def _text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"`{key}` must be a string, got {value!r}")
    return value


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() and abs(value) <= _MAX_EXACT_INT else value
