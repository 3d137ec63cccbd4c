"""The flow graph (SPEC 5): typed nodes joined by edges, parsed from and written to its JSON form.

`{"nodes": [{"id", "type", "config", "position"?}], "edges": [{"id"?, "source", "target", "branch"?}]}`.
Parsing checks only the shape (JSON types and field names); what the graph means is `validation`'s business.
Absent and null fields take their proto3 defaults ("" for strings, {} for config), so a graph that came through
protobuf and one that came as JSON parse alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeGuard

from kalcifer_common.errors import InvalidArgument

from kalcifer_engine.domain.violations import GraphViolation, ViolationReason
from kalcifer_engine.nodes.base import NodeCategory
from kalcifer_engine.nodes.registry import NodeRegistry
from kalcifer_engine.nodes.schema import json_type, quote

_GRAPH_FIELDS = ("nodes", "edges")
_NODE_FIELDS = ("id", "type", "config", "position")
_EDGE_FIELDS = ("id", "source", "target", "branch")


@dataclass(frozen=True)
class GraphNode:
    """A node: `type` is a registered node type key; `position` is where an editor draws it (ignored here)."""

    id: str
    type: str
    config: Mapping[str, Any] = field(default_factory=dict, hash=False)
    position: tuple[float, float] | None = None


@dataclass(frozen=True)
class GraphEdge:
    """An edge from `source` to `target`; `branch` is the source's branch key it follows ("" = unlabelled)."""

    id: str
    source: str
    target: str
    branch: str = ""


@dataclass(frozen=True)
class FlowGraph:
    """A flow graph as stored in a version. Not necessarily valid: see `validation.validate_graph`."""

    nodes: tuple[GraphNode, ...] = ()
    edges: tuple[GraphEdge, ...] = ()

    @classmethod
    def from_json(cls, data: object) -> FlowGraph:
        """Parse the JSON form; raises `InvalidArgument` naming every malformed field."""
        graph, violations = parse_graph(data)
        if graph is None:
            raise InvalidArgument(list(violations))
        return graph

    def to_json(self) -> dict[str, Any]:
        """The JSON form; `from_json(g.to_json()) == g`. Defaults (empty edge id or branch) are left out."""
        nodes: list[dict[str, Any]] = []
        for node in self.nodes:
            item: dict[str, Any] = {"id": node.id, "type": node.type, "config": dict(node.config)}
            if node.position is not None:
                item["position"] = {"x": node.position[0], "y": node.position[1]}
            nodes.append(item)
        edges: list[dict[str, Any]] = []
        for edge in self.edges:
            out: dict[str, Any] = {"source": edge.source, "target": edge.target}
            if edge.id:
                out["id"] = edge.id
            if edge.branch:
                out["branch"] = edge.branch
            edges.append(out)
        return {"nodes": nodes, "edges": edges}

    def node(self, node_id: str) -> GraphNode | None:
        """The node with id `node_id` (the first, should a malformed graph repeat it)."""
        return self._nodes_by_id.get(node_id)

    def outgoing(self, node_id: str) -> tuple[GraphEdge, ...]:
        """Edges leaving `node_id`, in graph order."""
        return self._outgoing.get(node_id, ())

    def incoming(self, node_id: str) -> tuple[GraphEdge, ...]:
        """Edges entering `node_id`, in graph order."""
        return self._incoming.get(node_id, ())

    def trigger_nodes(self, registry: NodeRegistry) -> tuple[GraphNode, ...]:
        """Nodes whose type is a registered trigger, in graph order."""
        return tuple(
            node
            for node in self.nodes
            if (node_type := registry.get(node.type)) is not None and node_type.category is NodeCategory.TRIGGER
        )

    # Indexes are built on first use and kept: graphs are immutable and a walker asks again and again.
    @cached_property
    def _nodes_by_id(self) -> dict[str, GraphNode]:
        found: dict[str, GraphNode] = {}
        for node in self.nodes:
            found.setdefault(node.id, node)
        return found

    @cached_property
    def _outgoing(self) -> dict[str, tuple[GraphEdge, ...]]:
        grouped: dict[str, list[GraphEdge]] = {}
        for edge in self.edges:
            grouped.setdefault(edge.source, []).append(edge)
        return {key: tuple(edges) for key, edges in grouped.items()}

    @cached_property
    def _incoming(self) -> dict[str, tuple[GraphEdge, ...]]:
        grouped: dict[str, list[GraphEdge]] = {}
        for edge in self.edges:
            grouped.setdefault(edge.target, []).append(edge)
        return {key: tuple(edges) for key, edges in grouped.items()}


def parse_graph(data: object) -> tuple[FlowGraph | None, list[GraphViolation]]:
    """Parse the JSON form: the graph, or None and one violation per malformed field. Never raises."""
    parser = _Parser()
    graph = parser.graph(data)
    return (None, parser.violations) if parser.violations else (graph, [])


class _Parser:
    """Collects every shape problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.violations: list[GraphViolation] = []

    def report(self, field_path: str, description: str, *, node_id: str = "", edge_id: str = "") -> None:
        """Record one malformed field."""
        self.violations.append(
            GraphViolation(field_path, description, ViolationReason.MALFORMED_GRAPH, node_id=node_id, edge_id=edge_id)
        )

    def graph(self, data: object) -> FlowGraph:
        """The whole graph; a non-object yields an empty graph and one violation."""
        if not isinstance(data, Mapping):
            self.report("", f'the graph must be an object with "nodes" and "edges", got {json_type(data)}')
            return FlowGraph()
        self.unknown_fields(data, "", _GRAPH_FIELDS)
        nodes = [self.node(item, f"nodes[{i}]") for i, item in enumerate(self.array(data.get("nodes"), "nodes"))]
        edges = [self.edge(item, f"edges[{i}]") for i, item in enumerate(self.array(data.get("edges"), "edges"))]
        return FlowGraph(tuple(nodes), tuple(edges))

    def array(self, value: object, path: str) -> list[object]:
        """A JSON array (absent or null = empty)."""
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            self.report(path, f"must be an array, got {json_type(value)}")
            return []
        return list(value)

    def unknown_fields(self, item: Mapping[Any, Any], path: str, allowed: tuple[str, ...]) -> None:
        """Report fields the JSON form does not define (typos would otherwise vanish)."""
        for key in item:
            if key not in allowed:
                name = key if isinstance(key, str) else quote(key)
                where = f"{path}.{name}" if path else name
                self.report(where, f"unknown field; allowed: {', '.join(allowed)}")

    def string(self, item: Mapping[Any, Any], name: str, path: str) -> str:
        """A string field (absent or null = "")."""
        value = item.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            self.report(f"{path}.{name}", f"must be a string, got {json_type(value)}")
            return ""
        return value

    def node(self, item: object, path: str) -> GraphNode:
        """One node; config absent or null = {}."""
        if not isinstance(item, Mapping):
            self.report(path, f"a node must be an object, got {json_type(item)}")
            return GraphNode("", "")
        self.unknown_fields(item, path, _NODE_FIELDS)
        node_id = self.string(item, "id", path)
        node_type = self.string(item, "type", path)
        config = item.get("config")
        if config is None:
            config = {}
        elif not isinstance(config, Mapping):
            self.report(f"{path}.config", f"must be an object, got {json_type(config)}", node_id=node_id)
            config = {}
        return GraphNode(node_id, node_type, dict(config), self.position(item.get("position"), path, node_id))

    def position(self, value: object, path: str, node_id: str) -> tuple[float, float] | None:
        """`{"x", "y"}` or `[x, y]`, finite numbers; absent or null = None."""
        if value is None:
            return None
        if isinstance(value, Mapping) and set(value) <= {"x", "y"}:
            x, y = value.get("x", 0.0), value.get("y", 0.0)
        elif isinstance(value, list | tuple) and len(value) == 2:
            x, y = value
        else:
            x = y = None
        if _is_coordinate(x) and _is_coordinate(y):
            return (float(x), float(y))
        self.report(f"{path}.position", 'must be {"x": number, "y": number}', node_id=node_id)
        return None

    def edge(self, item: object, path: str) -> GraphEdge:
        """One edge; id and branch default to ""."""
        if not isinstance(item, Mapping):
            self.report(path, f"an edge must be an object, got {json_type(item)}")
            return GraphEdge("", "", "")
        self.unknown_fields(item, path, _EDGE_FIELDS)
        return GraphEdge(
            self.string(item, "id", path),
            self.string(item, "source", path),
            self.string(item, "target", path),
            self.string(item, "branch", path),
        )


def _is_coordinate(value: object) -> TypeGuard[int | float]:
    # bool is an int to Python but not a number to JSON; huge ints would overflow float().
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) if isinstance(value, float) else abs(value) <= 2**53
