"""Which node runs next (SPEC 5, traversal): pure bookkeeping of one run's path heads, no I/O.

A run starts with one or more heads (the entry trigger nodes, or the successors of a resumed wait). Each node's
result decides where its path goes: `Completed` and `Skipped` follow every outgoing edge (fan-out makes parallel
paths), `Branched(key)` follows the edges labelled `key`, `Waiting` parks the path, `Failed` ends the instance, and
a node of the END category ends the whole instance at once (the other paths are dropped and their waits
cancelled). A path also ends at a node without matching outgoing edges. A node reached by two edges (a join)
runs once per arrival: each arrival is its own path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from kalcifer_engine.domain.graph import FlowGraph
from kalcifer_engine.nodes.base import Branched, Completed, Failed, NodeResult, Skipped, Waiting


class WalkOutcome(StrEnum):
    """How the walk of one run ended."""

    PARKED = "parked"  # no head is left to run: every path of this run waits or ended
    ENDED = "ended"  # an END node ended the instance
    FAILED = "failed"  # a node failed for good


def successors(graph: FlowGraph, node_id: str, result: NodeResult) -> tuple[str, ...]:
    """The nodes the path continues to after `node_id` returned `result` (empty: the path ends or parks)."""
    if isinstance(result, Completed | Skipped):
        return tuple(edge.target for edge in graph.outgoing(node_id))
    if isinstance(result, Branched):
        return tuple(edge.target for edge in graph.outgoing(node_id) if edge.branch == result.key)
    return ()


@dataclass
class Walk:
    """The heads still to run in one run, in breadth-first order, and what became of the others."""

    graph: FlowGraph
    ready: deque[str] = field(default_factory=deque)
    parked: list[str] = field(default_factory=list)
    outcome: WalkOutcome | None = None
    ended_by: str | None = None

    @classmethod
    def from_heads(cls, graph: FlowGraph, heads: Iterable[str]) -> Walk:
        """A walk that will run `heads`, each as its own path."""
        return cls(graph, deque(heads))

    def next_node(self) -> str | None:
        """The next head to run, or None when the walk is over (no head left, or the instance ended)."""
        if self.outcome is not None or not self.ready:
            if self.outcome is None:
                self.outcome = WalkOutcome.PARKED
            return None
        return self.ready.popleft()

    def advance(self, node_id: str, result: NodeResult, *, ends_instance: bool = False) -> tuple[str, ...]:
        """Record `node_id`'s result; returns the heads it added. `ends_instance`: the node is an END node."""
        if isinstance(result, Failed):
            self._stop(WalkOutcome.FAILED, node_id)
            return ()
        if ends_instance and not isinstance(result, Waiting):
            self._stop(WalkOutcome.ENDED, node_id)
            return ()
        if isinstance(result, Waiting):
            self.parked.append(node_id)
            return ()
        added = successors(self.graph, node_id, result)
        self.ready.extend(added)
        return added

    def _stop(self, outcome: WalkOutcome, node_id: str) -> None:
        self.outcome = outcome
        self.ended_by = node_id
        # The instance is over: paths not yet run are dropped, not run.
        self.ready.clear()
