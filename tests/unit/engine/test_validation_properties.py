"""Properties of graph validation: forward-wired DAGs are valid, one back edge is always a cycle, junk never raises."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kalcifer_common.errors import FieldViolation
from kalcifer_engine.domain import FlowGraph, GraphViolation, ViolationReason, validate_graph
from kalcifer_engine.nodes import NodeCategory, NodeType

from tests.unit.engine.samples import REGISTRY, VALID_CONFIGS, edge, node

TRIGGERS = sorted(t.key for t in REGISTRY.all() if t.category is NodeCategory.TRIGGER)
NON_TRIGGERS = sorted(t.key for t in REGISTRY.all() if t.category is not NodeCategory.TRIGGER)
# The last node needs no successor: a type that completes (or ends) whatever its config.
SINKS = sorted(
    t.key
    for t in REGISTRY.all()
    if t.category is not NodeCategory.TRIGGER and not t.branches_depend_on_config and not t.branches({})
)


def node_type(key: str) -> NodeType:
    found = REGISTRY.get(key)
    assert found is not None
    return found


def labels(key: str, config: dict[str, Any]) -> tuple[str, ...]:
    """The branch labels an edge leaving such a node may carry ("" for a completing node)."""
    return node_type(key).branches(config) or ("",)


@st.composite
def forward_dags(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A trigger, random built-ins, then a sink, in topological order: edges only go forward, every branch wired,
    every node entered from an earlier one; the node list is then shuffled (order must not matter)."""
    keys = [draw(st.sampled_from(TRIGGERS))]
    keys += draw(st.lists(st.sampled_from(NON_TRIGGERS), max_size=10))
    keys.append(draw(st.sampled_from(SINKS)))
    nodes = [node(f"n{i}", key, draw(st.sampled_from(VALID_CONFIGS[key]))) for i, key in enumerate(keys)]
    pairs: set[tuple[int, int, str]] = set()
    last = len(nodes) - 1
    for i in range(last):
        current = node_type(keys[i])
        if current.category is NodeCategory.END:
            continue
        branches = current.branches(nodes[i]["config"])
        for branch in branches or ("",):
            # A branch needs an edge; a completing node may have none and still be a valid dead end.
            targets = draw(st.lists(st.integers(i + 1, last), min_size=1 if branches else 0, max_size=2))
            pairs.update((i, target, branch) for target in targets)
    for j in range(1, len(nodes)):
        if not any(target == j for _, target, _ in pairs):
            source = draw(st.sampled_from([i for i in range(j) if node_type(keys[i]).category is not NodeCategory.END]))
            pairs.add((source, j, draw(st.sampled_from(labels(keys[source], nodes[source]["config"])))))
    edges = [edge(f"n{s}", f"n{t}", b, edge_id=f"e{k}") for k, (s, t, b) in enumerate(sorted(pairs))]
    return draw(st.permutations(nodes)), edges


@settings(max_examples=150, deadline=None)
@given(forward_dags())
def test_forward_wired_dags_are_valid(dag: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    nodes, edges = dag
    assert validate_graph({"nodes": nodes, "edges": edges}, REGISTRY) == []


def descendants(start: str, edges: list[dict[str, Any]]) -> set[str]:
    seen, pending = {start}, [start]
    while pending:
        current = pending.pop()
        for e in edges:
            if e["source"] == current and e["target"] not in seen:
                seen.add(e["target"])
                pending.append(e["target"])
    return seen


@settings(max_examples=150, deadline=None)
@given(forward_dags(), st.data())
def test_one_back_edge_is_always_a_cycle(
    dag: tuple[list[dict[str, Any]], list[dict[str, Any]]], data: st.DataObject
) -> None:
    nodes, edges = dag
    by_id = {n["id"]: n for n in nodes}
    # A back edge u -> v closes a cycle when u is v or a descendant of v; triggers cannot be entered, ends left.
    candidates = [
        (u, v)
        for v, target in by_id.items()
        if node_type(target["type"]).category is not NodeCategory.TRIGGER
        for u in sorted(descendants(v, edges))
        if node_type(by_id[u]["type"]).category is not NodeCategory.END
    ]
    assume(candidates)
    source, target = data.draw(st.sampled_from(candidates))
    branch = data.draw(st.sampled_from(labels(by_id[source]["type"], by_id[source]["config"])))
    violations = validate_graph({"nodes": nodes, "edges": [*edges, edge(source, target, branch, "back")]}, REGISTRY)
    assert violations
    assert all(isinstance(v, GraphViolation) and v.reason is ViolationReason.CYCLE for v in violations)
    assert all("creates a cycle: " in v.description for v in violations)


GRAPH_WORDS = ["nodes", "edges", "id", "type", "config", "position", "source", "target", "branch", "x", "y"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(GRAPH_WORDS + sorted(REGISTRY.keys()) + ["1d", "30", "event.x >", "true"])
)
junk = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(GRAPH_WORDS) | st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(junk)
def test_junk_never_raises(data: Any) -> None:
    violations = validate_graph(data, REGISTRY)
    assert isinstance(violations, list)
    assert all(isinstance(v, FieldViolation) and isinstance(v.field, str) for v in violations)


junk_nodes = st.fixed_dictionaries(
    {"id": st.sampled_from(["a", "b", "c", ""]), "type": st.sampled_from([*REGISTRY.keys(), "nope", ""])},
    optional={"config": st.dictionaries(st.text(max_size=10), junk, max_size=4) | junk},
)
junk_edges = st.fixed_dictionaries(
    {"source": st.sampled_from(["a", "b", "c", "z"]), "target": st.sampled_from(["a", "b", "c", "z"])},
    optional={"branch": st.sampled_from(["", "true", "false", "a", "timed_out"]), "id": st.sampled_from(["e", "f"])},
)


@settings(max_examples=400, deadline=None)
@given(st.lists(junk_nodes, max_size=6), st.lists(junk_edges, max_size=8))
def test_graph_shaped_junk_never_raises_and_parses_alike(nodes: list[Any], edges: list[Any]) -> None:
    data = {"nodes": nodes, "edges": edges}
    violations = validate_graph(data, REGISTRY)
    assert all(isinstance(v, FieldViolation) for v in violations)
    if not any(isinstance(v, GraphViolation) and v.reason is ViolationReason.MALFORMED_GRAPH for v in violations):
        assert validate_graph(FlowGraph.from_json(data), REGISTRY) == violations
