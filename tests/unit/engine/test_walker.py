"""The walker's traversal rules (SPEC 5): fan-out, branches, joins, waits, end nodes, failures."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from kalcifer_engine.domain.graph import FlowGraph, GraphEdge, GraphNode
from kalcifer_engine.nodes.base import Branched, Completed, Failed, NodeResult, Waiting
from kalcifer_engine.runtime.walker import Walk, WalkOutcome, successors

TIMER = Waiting(kind="timer", fire_time=datetime(2030, 1, 1, tzinfo=UTC))


def graph_of(edges: list[tuple[str, str, str]], extra_nodes: tuple[str, ...] = ()) -> FlowGraph:
    """A graph with nodes named after the edge ends (type = name) and the given (source, target, branch) edges."""
    names = list(dict.fromkeys([*extra_nodes, *(s for s, _, _ in edges), *(t for _, t, _ in edges)]))
    return FlowGraph(
        tuple(GraphNode(name, name) for name in names),
        tuple(GraphEdge(f"e{i}", s, t, b) for i, (s, t, b) in enumerate(edges)),
    )


def run_walk(walk: Walk, behaviour: dict[str, NodeResult], ends: frozenset[str] = frozenset()) -> list[str]:
    """Drive a walk to its end; every node returns its `behaviour` (default Completed)."""
    ran: list[str] = []
    while (node := walk.next_node()) is not None:
        ran.append(node)
        walk.advance(node, behaviour.get(node, Completed()), ends_instance=node in ends)
    return ran


def test_completed_follows_every_outgoing_edge() -> None:
    graph = graph_of([("t", "a", ""), ("t", "b", ""), ("a", "c", "")])
    walk = Walk.from_heads(graph, ["t"])
    assert run_walk(walk, {}) == ["t", "a", "b", "c"]
    assert walk.outcome is WalkOutcome.PARKED
    assert walk.parked == []


def test_branched_follows_only_its_branch() -> None:
    graph = graph_of([("c", "yes", "true"), ("c", "no", "false")])
    assert successors(graph, "c", Branched("true")) == ("yes",)
    assert successors(graph, "c", Branched("false")) == ("no",)
    assert successors(graph, "c", Branched("other")) == ()


def test_wait_parks_its_path_and_the_others_go_on() -> None:
    graph = graph_of([("t", "w", ""), ("t", "a", ""), ("w", "after", "")])
    walk = Walk.from_heads(graph, ["t"])
    assert run_walk(walk, {"w": TIMER}) == ["t", "w", "a"]
    assert walk.parked == ["w"]
    assert walk.outcome is WalkOutcome.PARKED


def test_several_paths_can_wait_at_once() -> None:
    graph = graph_of([("t", "w1", ""), ("t", "w2", "")])
    walk = Walk.from_heads(graph, ["t"])
    run_walk(walk, {"w1": TIMER, "w2": Waiting(kind="event", event_type="x")})
    assert walk.parked == ["w1", "w2"]


def test_end_node_drops_every_other_path() -> None:
    graph = graph_of([("t", "end", ""), ("t", "a", ""), ("a", "b", "")])
    walk = Walk.from_heads(graph, ["t"])
    assert run_walk(walk, {}, ends=frozenset({"end"})) == ["t", "end"]
    assert walk.outcome is WalkOutcome.ENDED
    assert walk.ended_by == "end"
    assert not walk.ready


def test_failure_ends_the_walk() -> None:
    graph = graph_of([("t", "bad", ""), ("t", "a", ""), ("bad", "b", "")])
    walk = Walk.from_heads(graph, ["t"])
    assert run_walk(walk, {"bad": Failed("boom")}) == ["t", "bad"]
    assert walk.outcome is WalkOutcome.FAILED
    assert walk.ended_by == "bad"


def test_join_runs_once_per_arrival() -> None:
    graph = graph_of([("t", "a", ""), ("t", "b", ""), ("a", "j", ""), ("b", "j", "")])
    walk = Walk.from_heads(graph, ["t"])
    assert Counter(run_walk(walk, {}))["j"] == 2


def test_node_without_edges_ends_only_its_path() -> None:
    graph = graph_of([("t", "leaf", ""), ("t", "a", "")])
    walk = Walk.from_heads(graph, ["t"])
    assert run_walk(walk, {}) == ["t", "leaf", "a"]
    assert walk.outcome is WalkOutcome.PARKED


@dataclass(frozen=True)
class RandomFlow:
    """A random DAG (edges only go from lower to higher index) and what each node returns."""

    graph: FlowGraph
    behaviour: dict[str, NodeResult]
    ends: frozenset[str]


@st.composite
def random_flows(draw: st.DrawFn) -> RandomFlow:
    size = draw(st.integers(min_value=1, max_value=12))
    names = [f"n{i}" for i in range(size)]
    edges: list[tuple[str, str, str]] = []
    behaviour: dict[str, NodeResult] = {}
    ends: set[str] = set()
    for i, name in enumerate(names):
        targets = draw(st.lists(st.sampled_from(names[i + 1 :]), max_size=3)) if i + 1 < size else []
        kind = draw(st.sampled_from(["completed", "branched", "wait", "end", "fail"] if i else ["completed"]))
        if kind == "branched":
            keys = draw(st.lists(st.sampled_from(["a", "b"]), min_size=len(targets), max_size=len(targets)))
            edges += [(name, target, key) for target, key in zip(targets, keys, strict=True)]
            behaviour[name] = Branched(draw(st.sampled_from(["a", "b"])))
        else:
            edges += [(name, target, "") for target in targets]
            plain: dict[str, NodeResult] = {"completed": Completed(), "wait": TIMER, "fail": Failed("x")}
            behaviour[name] = plain.get(kind, Completed())
            if kind == "end":
                ends.add(name)
    return RandomFlow(graph_of(edges, tuple(names)), behaviour, frozenset(ends))


def arrivals(flow: RandomFlow, head: str) -> Counter[str]:
    """How many times each node is reached when nothing ends the instance early (paths counted in a DAG)."""
    counts: Counter[str] = Counter({head: 1})
    for node in flow.graph.nodes:  # nodes are in topological order by construction
        for target in successors(flow.graph, node.id, flow.behaviour[node.id]):
            counts[target] += counts[node.id]
    return counts


@settings(max_examples=300, deadline=None)
@given(random_flows())
def test_every_node_runs_at_most_once_per_arrival(flow: RandomFlow) -> None:
    walk = Walk.from_heads(flow.graph, ["n0"])
    ran = Counter(run_walk(walk, flow.behaviour, flow.ends))
    expected = arrivals(flow, "n0")
    for node, times in ran.items():
        assert times <= expected[node]
    if walk.outcome is WalkOutcome.PARKED:
        # Nothing ended the instance early: every arrival ran, exactly once.
        assert ran == +expected


@settings(max_examples=300, deadline=None)
@given(random_flows())
def test_an_end_node_always_ends_the_instance(flow: RandomFlow) -> None:
    walk = Walk.from_heads(flow.graph, ["n0"])
    ran = run_walk(walk, flow.behaviour, flow.ends)
    reached_ends = [node for node in ran if node in flow.ends]
    if reached_ends:
        assert walk.outcome is WalkOutcome.ENDED
        assert ran[-1] == reached_ends[0] == walk.ended_by
        assert walk.next_node() is None
    else:
        assert walk.outcome in (WalkOutcome.PARKED, WalkOutcome.FAILED)
