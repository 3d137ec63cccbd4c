"""Graph validation (SPEC 5): every problem of a graph at once, each naming its field, node or edge.

Runs on version create, activate and publish; a graph with any violation never becomes active. It must not raise
on any input, since its input is whatever an operator sent: each check guards the types it reads instead of
catching errors broadly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from kalcifer_common.errors import FieldViolation
from kalcifer_common.structs import nesting_problem
from kalcifer_common.templates import TEMPLATE_ID

from kalcifer_engine.domain.graph import FlowGraph, GraphEdge, GraphNode, parse_graph
from kalcifer_engine.domain.violations import GraphViolation, ViolationReason
from kalcifer_engine.nodes.action.channel._base import ChannelSend
from kalcifer_engine.nodes.base import NodeCategory, NodeType
from kalcifer_engine.nodes.registry import NodeRegistry
from kalcifer_engine.nodes.schema import quote


@dataclass(frozen=True, slots=True)
class GraphLimits:
    """Size limits of one graph: beyond them a graph is refused before its nodes are looked at."""

    max_nodes: int = 500
    max_edges: int = 2000
    max_config_bytes: int = 64 * 1024
    # Violations reported at most, then one TOO_LARGE saying more were left out: within the limits above a graph
    # can still hold hundreds of thousands (every unknown key of every config), an answer too big to send.
    max_violations: int = 1000


DEFAULT_LIMITS = GraphLimits()


def validate_graph(
    graph: Mapping[str, Any] | FlowGraph,
    registry: NodeRegistry,
    limits: GraphLimits = DEFAULT_LIMITS,
    *,
    templates: Mapping[str, str] | None = None,
) -> list[FieldViolation]:
    """Every violation of `graph` (its JSON form or a parsed `FlowGraph`); empty when it is valid.

    Each item is a `GraphViolation` (reason code, node and edge ids). A malformed JSON shape is reported alone:
    nothing else can be checked reliably. A graph over `limits` is reported alone too, to bound the work.
    `templates` (template id -> channel, of the tenant's templates the graph names: `template_ids`) makes every
    channel node's `template_id` name one of its channel; None skips that check (no tenant to look in).
    """
    if isinstance(graph, FlowGraph):
        flow = graph
    else:
        raw_nodes = graph.get("nodes") if isinstance(graph, Mapping) else None
        raw_edges = graph.get("edges") if isinstance(graph, Mapping) else None
        too_large = _count_violations(
            len(raw_nodes) if isinstance(raw_nodes, list) else 0,
            len(raw_edges) if isinstance(raw_edges, list) else 0,
            limits,
        )
        if too_large:
            return too_large
        parsed, malformed = parse_graph(graph)
        if parsed is None:
            return list(malformed)
        flow = parsed
    too_large = _count_violations(len(flow.nodes), len(flow.edges), limits)
    if too_large:
        return too_large
    return _Checker(flow, registry, limits, templates).run()


def template_ids(graph: Mapping[str, Any], limits: GraphLimits = DEFAULT_LIMITS) -> set[str]:
    """The template ids the nodes of a graph's JSON form name, to look up before `validate_graph` (any node's
    `template_id` that could be a template id: a superset is fine). Empty for a graph over `limits`, which
    validation refuses before looking at its nodes."""
    nodes = graph.get("nodes") if isinstance(graph, Mapping) else None
    if not isinstance(nodes, list) or len(nodes) > limits.max_nodes:
        return set()
    found: set[str] = set()
    for node in nodes:
        config = node.get("config") if isinstance(node, Mapping) else None
        value = config.get("template_id") if isinstance(config, Mapping) else None
        if isinstance(value, str) and TEMPLATE_ID.fullmatch(value):
            found.add(value)
    return found


def _count_violations(nodes: int, edges: int, limits: GraphLimits) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    if nodes > limits.max_nodes:
        found.append(
            GraphViolation(
                "nodes", f"the graph has {nodes} nodes; the limit is {limits.max_nodes}", ViolationReason.TOO_LARGE
            )
        )
    if edges > limits.max_edges:
        found.append(
            GraphViolation(
                "edges", f"the graph has {edges} edges; the limit is {limits.max_edges}", ViolationReason.TOO_LARGE
            )
        )
    return found


def _join(prefix: str, relative: str) -> str:
    """`nodes[1].config` + `variants[0].key` -> `nodes[1].config.variants[0].key`."""
    if not relative:
        return prefix
    return f"{prefix}{relative}" if relative.startswith("[") else f"{prefix}.{relative}"


class _EnoughViolations(Exception):
    """Raised by `_Checker.report` to end a run that found as many violations as it reports."""


class _Checker:
    """One validation run over a parsed graph; the rules run in order and append to `found`."""

    def __init__(
        self, graph: FlowGraph, registry: NodeRegistry, limits: GraphLimits, templates: Mapping[str, str] | None
    ) -> None:
        self.graph = graph
        self.registry = registry
        self.limits = limits
        self.templates = templates
        self.found: list[FieldViolation] = []
        # Node id -> index of the first node with it; later duplicates are reported and then left out.
        self.index: dict[str, int] = {}
        # Node index -> its registered type; nodes of unknown types are absent.
        self.types: dict[int, NodeType] = {}
        self.config_ok: set[int] = set()
        # Node index -> indexes of edges leaving it (any target), and of edges leaving it to an existing node.
        self.leaving: dict[int, list[int]] = {}
        self.successors: dict[int, list[int]] = {}

    def run(self) -> list[FieldViolation]:
        """Apply every rule; the violations in rule order (the first `max_violations` of them)."""
        try:
            self.check_node_ids()
            self.check_types_and_configs()
            triggers = self.check_triggers()
            self.check_edges()
            self.check_cycles()
            self.check_reachability(triggers)
            self.check_branches()
        except _EnoughViolations:
            limit = self.limits.max_violations
            self.found.append(
                GraphViolation(
                    "", f"more than {limit} violations; the first {limit} are shown", ViolationReason.TOO_LARGE
                )
            )
        return self.found

    # -- reporting -------------------------------------------------------------------------------------------------

    def report(
        self,
        field_path: str,
        description: str,
        reason: ViolationReason,
        *,
        node: GraphNode | None = None,
        edge: GraphEdge | None = None,
    ) -> None:
        """Record one violation, naming its node or edge; past `max_violations`, stop the run."""
        if len(self.found) >= self.limits.max_violations:
            raise _EnoughViolations
        self.found.append(
            GraphViolation(
                field_path,
                description,
                reason,
                node_id=node.id if node is not None else "",
                edge_id=edge.id if edge is not None else "",
            )
        )

    def unique_nodes(self) -> Iterator[tuple[int, GraphNode]]:
        """Nodes that take part in the graph: non-empty ids, first of their id."""
        for position, node in enumerate(self.graph.nodes):
            if node.id and self.index.get(node.id) == position:
                yield position, node

    def describe_node(self, position: int) -> str:
        """`node "id" (type)`, how messages name a node."""
        node = self.graph.nodes[position]
        return f"node {quote(node.id)} ({node.type})"

    def describe_edge(self, edge: GraphEdge) -> str:
        """`edge "id"`, or `edge "a" -> "b"` for an edge without id."""
        if edge.id:
            return f"edge {quote(edge.id)}"
        return f"edge {quote(edge.source)} -> {quote(edge.target)}"

    # -- rules -----------------------------------------------------------------------------------------------------

    def check_node_ids(self) -> None:
        """Node ids are non-empty and unique."""
        for position, node in enumerate(self.graph.nodes):
            if not node.id:
                self.report(f"nodes[{position}].id", "a node needs a non-empty id", ViolationReason.EMPTY_NODE_ID)
            elif node.id in self.index:
                first = self.index[node.id]
                self.report(
                    f"nodes[{position}].id",
                    f"node id {quote(node.id)} is already used by nodes[{first}]",
                    ViolationReason.DUPLICATE_NODE_ID,
                    node=node,
                )
            else:
                self.index[node.id] = position

    def check_types_and_configs(self) -> None:
        """Every node's type is registered and its config is valid for that type."""
        for position, node in enumerate(self.graph.nodes):
            node_type = self.registry.get(node.type) if isinstance(node.type, str) else None
            if node_type is None:
                what = f"unknown type {quote(node.type)}" if node.type else "no type"
                self.report(
                    f"nodes[{position}].type",
                    f"node {quote(node.id)} has {what}",
                    ViolationReason.UNKNOWN_NODE_TYPE,
                    node=node,
                )
                continue
            self.types[position] = node_type
            before = len(self.found)
            self.check_config(position, node, node_type)
            if len(self.found) == before:
                self.config_ok.add(position)
                self.check_template(position, node, node_type)

    def check_template(self, position: int, node: GraphNode, node_type: NodeType) -> None:
        """A channel node's (valid) config names a template the tenant has, of the node's channel."""
        if self.templates is None or not isinstance(node_type, ChannelSend):
            return
        template_id = dict(node.config).get("template_id")
        channel = self.templates.get(template_id) if isinstance(template_id, str) else None
        if channel is None:
            self.report(
                f"nodes[{position}].config.template_id",
                f"{self.describe_node(position)} names template {quote(str(template_id))}, which does not exist; "
                "create it with TemplateService.CreateTemplate",
                ViolationReason.UNKNOWN_TEMPLATE,
                node=node,
            )
        elif channel != node_type.channel:
            self.report(
                f"nodes[{position}].config.template_id",
                f"{self.describe_node(position)} sends {node_type.channel}, but template {quote(str(template_id))} "
                f"is for {channel}",
                ViolationReason.UNKNOWN_TEMPLATE,
                node=node,
            )

    def check_config(self, position: int, node: GraphNode, node_type: NodeType) -> None:
        """One node's config: an object, JSON, within the size limit, valid for its type."""
        prefix = f"nodes[{position}].config"
        if not isinstance(node.config, Mapping):
            self.report(prefix, "must be an object", ViolationReason.INVALID_CONFIG, node=node)
            return
        # jsonschema's "object" is a dict; orjson serializes dicts only.
        config = dict(node.config)
        try:
            size = len(orjson.dumps(config))
        except orjson.JSONEncodeError as error:
            self.report(prefix, f"is not JSON: {error}", ViolationReason.INVALID_CONFIG, node=node)
            return
        if size > self.limits.max_config_bytes:
            self.report(
                prefix,
                f"is {size} bytes of JSON; the limit is {self.limits.max_config_bytes}",
                ViolationReason.INVALID_CONFIG,
                node=node,
            )
            return
        if problem := nesting_problem(config):
            # Like a payload (kalcifer_common.structs): a version answered with its graph must stay decodable.
            self.report(prefix, problem, ViolationReason.INVALID_CONFIG, node=node)
            return
        found = node_type.config_validator.violations(config) + node_type.semantic_violations(config)
        # By field, so a node's problems read top to bottom whichever check found them.
        for violation in sorted(found, key=lambda v: v.field):
            self.report(
                _join(prefix, violation.field), violation.description, ViolationReason.INVALID_CONFIG, node=node
            )

    def check_triggers(self) -> list[int]:
        """The graph has a trigger node; returns the triggers that take part in the graph."""
        triggers = [p for p, _ in self.unique_nodes() if self.category(p) is NodeCategory.TRIGGER]
        has_any = any(t.category is NodeCategory.TRIGGER for t in self.types.values())
        if not has_any:
            keys = [t.key for t in self.registry.all() if t.category is NodeCategory.TRIGGER]
            self.report(
                "nodes",
                f"the graph needs at least one trigger node ({', '.join(keys)})",
                ViolationReason.NO_TRIGGER,
            )
        return triggers

    def check_edges(self) -> None:
        """Edge ids are unique, edge ends exist, and no edge enters a trigger."""
        first_edge: dict[str, int] = {}
        for position, edge in enumerate(self.graph.edges):
            name = self.describe_edge(edge)
            if edge.id:
                if edge.id in first_edge:
                    self.report(
                        f"edges[{position}].id",
                        f"edge id {quote(edge.id)} is already used by edges[{first_edge[edge.id]}]",
                        ViolationReason.DUPLICATE_EDGE_ID,
                        edge=edge,
                    )
                else:
                    first_edge[edge.id] = position
            source = self.index.get(edge.source)
            target = self.index.get(edge.target)
            if source is None:
                what = f"leaves node {quote(edge.source)}, which does not exist" if edge.source else "has no source"
                self.report(f"edges[{position}].source", f"{name} {what}", ViolationReason.MISSING_EDGE_END, edge=edge)
            else:
                self.leaving.setdefault(source, []).append(position)
            if target is None:
                what = f"enters node {quote(edge.target)}, which does not exist" if edge.target else "has no target"
                self.report(f"edges[{position}].target", f"{name} {what}", ViolationReason.MISSING_EDGE_END, edge=edge)
            elif self.category(target) is NodeCategory.TRIGGER:
                self.report(
                    f"edges[{position}].target",
                    f"{name} enters trigger {self.describe_node(target)}; a trigger cannot have incoming edges",
                    ViolationReason.TRIGGER_HAS_INCOMING_EDGE,
                    edge=edge,
                )
            if source is not None and target is not None:
                self.successors.setdefault(source, []).append(position)

    def check_cycles(self) -> None:
        """No cycles: a depth-first search reports each edge that closes one (each cycle once), with its path."""
        edges, nodes = self.graph.edges, self.graph.nodes
        done: set[int] = set()
        for root, _ in self.unique_nodes():
            if root in done:
                continue
            # An explicit stack, not recursion: depth is bounded by the graph, not by Python's recursion limit.
            path = [root]
            on_path = {root: 0}
            stack = [(root, iter(self.successors.get(root, ())))]
            while stack:
                current, pending = stack[-1]
                edge_position = next(pending, None)
                if edge_position is None:
                    stack.pop()
                    path.pop()
                    del on_path[current]
                    done.add(current)
                    continue
                edge = edges[edge_position]
                target = self.index[edge.target]
                if target in on_path:
                    cycle = " -> ".join(nodes[p].id for p in [*path[on_path[target] :], target])
                    self.report(
                        f"edges[{edge_position}]",
                        f"{self.describe_edge(edge)} creates a cycle: {cycle}",
                        ViolationReason.CYCLE,
                        edge=edge,
                    )
                elif target not in done:
                    on_path[target] = len(path)
                    path.append(target)
                    stack.append((target, iter(self.successors.get(target, ()))))

    def check_reachability(self, triggers: list[int]) -> None:
        """Every node can be reached from a trigger (silent when there is no trigger: that is reported already)."""
        if not triggers:
            return
        reached = set(triggers)
        queue = deque(triggers)
        while queue:
            current = queue.popleft()
            for edge_position in self.successors.get(current, ()):
                target = self.index[self.graph.edges[edge_position].target]
                if target not in reached:
                    reached.add(target)
                    queue.append(target)
        for position, node in self.unique_nodes():
            if position not in reached:
                self.report(
                    f"nodes[{position}]",
                    f"{self.describe_node(position)} cannot be reached from any trigger",
                    ViolationReason.UNREACHABLE_NODE,
                    node=node,
                )

    def check_branches(self) -> None:
        """Every branch a node can return has an edge; no edge carries a branch its node cannot return."""
        for position, node in self.unique_nodes():
            node_type = self.types.get(position)
            if node_type is None:
                continue
            leaving = self.leaving.get(position, [])
            name = self.describe_node(position)
            if node_type.category is NodeCategory.END:
                for edge_position in leaving:
                    edge = self.graph.edges[edge_position]
                    self.report(
                        f"edges[{edge_position}].source",
                        f"{self.describe_edge(edge)} leaves end {name}; an end node ends the instance",
                        ViolationReason.END_HAS_OUTGOING_EDGE,
                        edge=edge,
                    )
                continue
            if node_type.branches_depend_on_config and position not in self.config_ok:
                continue  # its branches are unknown until its config is fixed; the config is reported already
            branches = node_type.branches(dict(node.config) if isinstance(node.config, Mapping) else {})
            shown = ", ".join(quote(b) for b in branches)
            covered: set[str] = set()
            for edge_position in leaving:
                edge = self.graph.edges[edge_position]
                where = f"edges[{edge_position}].branch"
                if not branches and edge.branch:
                    self.report(
                        where,
                        f"{self.describe_edge(edge)} has branch {quote(edge.branch)}, but {name} does not branch; "
                        "leave the branch empty",
                        ViolationReason.UNKNOWN_BRANCH,
                        edge=edge,
                    )
                elif branches and not edge.branch:
                    self.report(
                        where,
                        f"{self.describe_edge(edge)} needs a branch: {name} returns one of {shown}",
                        ViolationReason.UNKNOWN_BRANCH,
                        edge=edge,
                    )
                elif branches and edge.branch not in branches:
                    self.report(
                        where,
                        f"{name} cannot return branch {quote(edge.branch)}; its branches are {shown}",
                        ViolationReason.UNKNOWN_BRANCH,
                        edge=edge,
                    )
                covered.add(edge.branch)
            for branch in branches:
                if branch not in covered:
                    self.report(
                        f"nodes[{position}]",
                        f"{name} has no edge for its branch {quote(branch)}",
                        ViolationReason.MISSING_BRANCH_EDGE,
                        node=node,
                    )

    def category(self, position: int) -> NodeCategory | None:
        """The category of the node at `position`, None when its type is unknown."""
        node_type = self.types.get(position)
        return node_type.category if node_type is not None else None
