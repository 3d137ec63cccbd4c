"""One run of one instance: from a start or a resume to the point where every path waits or the instance ends.

A run executes inside ONE database transaction that the caller opened and locked the instance row in (SPEC 6.3).
Nodes run against `DbNodeContext`, whose effects join that transaction; the run buffers its execution steps and
new wait rows and writes them, with the instance's status, current nodes and context, in one statement at the end
(`steps.write_run`; an instance that ended also cancels its other waits and their steps first). Whatever must reach
the scheduler is collected in `Effects` and sent only after the commit; what the analytics counters change is
collected in `Effects.tally` and written as the transaction's last statement (`Runtime.transaction`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from kalcifer_common.logging import get_logger
from kalcifer_common.outbound import SPEC_KEY
from kalcifer_common.sandbox import ExpressionSandbox
from kalcifer_common.settings import EngineSettings
from kalcifer_common.statuses import FINAL_INSTANCE_STATUSES, FlowStatus, InstanceStatus, StepStatus, WaitStatus
from kalcifer_common.structs import MAX_JSON_NESTING, nests_deeper_than
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.domain.graph import FlowGraph, GraphNode
from kalcifer_engine.domain.tallies import StepFacts, Tally
from kalcifer_engine.metrics import RunCounts
from kalcifer_engine.nodes.base import (
    Branched,
    Completed,
    Failed,
    NodeCategory,
    NodeResult,
    NodeType,
    Skipped,
    Waiting,
)
from kalcifer_engine.nodes.registry import NodeRegistry
from kalcifer_engine.repo.connection import DATABASE_ERRORS
from kalcifer_engine.repo.instances import InstanceRow, save_instance
from kalcifer_engine.repo.steps import ResolvedStep, RunWritten, write_run
from kalcifer_engine.repo.voiding import void_pending
from kalcifer_engine.repo.waits import WaitRow
from kalcifer_engine.runtime.db_context import DbNodeContext, RunScope
from kalcifer_engine.runtime.walker import Walk, WalkOutcome

_log = get_logger(__name__)

RESULT_TYPES = (Completed, Skipped, Branched, Waiting, Failed)


@dataclass(frozen=True)
class ArmedEventWait:
    """An event wait a run armed: checked after commit for an event that arrived just before it (lookback)."""

    tenant_id: uuid.UUID
    instance_id: uuid.UUID
    wait_id: uuid.UUID
    participant_id: str
    event_type: str
    since: datetime


@dataclass
class Effects:
    """What to do once the transaction has committed: arm and cancel timers, queue deliveries, look back."""

    timers: list[tuple[uuid.UUID, uuid.UUID, datetime]] = field(default_factory=list)
    cancelled_timers: list[tuple[uuid.UUID, datetime]] = field(default_factory=list)  # (wait id, fire time)
    deliveries: list[uuid.UUID] = field(default_factory=list)
    event_waits: list[ArmedEventWait] = field(default_factory=list)
    # Not after the commit but just before it: the analytics counters the transaction changes, written as its last
    # statement by `Runtime.transaction` (so they commit with what they count).
    tally: Tally = field(default_factory=Tally)
    # The runs and steps for /metrics, recorded by `Runtime.transaction` once the transaction has committed.
    counts: RunCounts = field(default_factory=RunCounts)

    def extend(self, other: Effects) -> None:
        """Add another run's effects (several runs may share one commit)."""
        self.timers += other.timers
        self.cancelled_timers += other.cancelled_timers
        self.deliveries += other.deliveries
        self.event_waits += other.event_waits
        self.tally.extend(other.tally)
        self.counts.extend(other.counts)

    def __bool__(self) -> bool:
        """Whether anything is left to do after the commit."""
        return bool(self.timers or self.cancelled_timers or self.deliveries or self.event_waits)


def count_cancelled_steps(tally: Tally, instance: InstanceRow, cancelled: list[StepFacts]) -> None:
    """Waiting steps of the instance that `void_pending` cancelled."""
    for step in cancelled:
        tally.step_changed(instance.tenant_id, instance.flow_id, step, StepStatus.WAITING)


async def exit_instance(
    conn: AsyncConnection, instance: InstanceRow, reason: str, effects: Effects, *, now: datetime
) -> None:
    """Take a live instance out (SPEC 6.3 EXITED, with `reason`): its pending waits are cancelled (their timers
    disarmed after the commit, through `effects`) and its waiting steps end CANCELLED. For CancelInstance, a
    migration that removed the instance's node, and a run of an instance whose flow was archived."""
    voided = await void_pending(conn, [instance.id], now)
    effects.cancelled_timers += voided.timers
    count_cancelled_steps(effects.tally, instance, voided.steps)
    await save_instance(
        conn,
        instance.id,
        status=InstanceStatus.EXITED,
        current_nodes=[],
        context=instance.context,
        exit_reason=reason,
        now=now,
        finished=True,
    )
    effects.tally.status_changed(instance.cohort(now), instance.status, InstanceStatus.EXITED)
    instance.status = InstanceStatus.EXITED


def _waiting_step_of(wait: WaitRow) -> uuid.UUID | None:
    """The step a wait's node left WAITING (recorded in the wait's metadata since steps are one per visit)."""
    step_id = wait.meta.get("step_id")
    try:
        return uuid.UUID(step_id) if isinstance(step_id, str) else None
    except ValueError:
        return None


def plain_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """A node's output as plain JSON (dates, decimals and the like become strings), as it will be stored."""
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(dict(value), default=str))
    return loaded


def retry_delay(settings: EngineSettings, attempt: int) -> timedelta:
    """Exponential backoff before retry number `attempt` (1 = first retry), capped."""
    seconds = min(settings.retry_backoff_seconds * 2 ** (attempt - 1), settings.retry_backoff_max_seconds)
    return timedelta(seconds=seconds)


def _step_facts(where: Mapping[str, Any] | ResolvedStep, outcome: Mapping[str, Any]) -> StepFacts:
    """A step as the counters see it: where and when it ran (a step row, or a resolved step as it was) and its
    outcome (the row this run writes)."""
    if isinstance(where, ResolvedStep):
        node_id, node_type, version, started = where.node_id, where.node_type, where.version_number, where.start_time
    else:
        node_id, node_type = where["node_id"], where["node_type"]
        version, started = where["version_number"], where["start_time"]
    return StepFacts(node_id, node_type, version, started, outcome["status"], outcome["output"], outcome["end_time"])


class InstanceRun:
    """Runs nodes of one locked instance and writes the outcome; use once: `start`/`resume`, then `finish`."""

    def __init__(
        self,
        conn: AsyncConnection,
        instance: InstanceRow,
        graph: FlowGraph,
        registry: NodeRegistry,
        settings: EngineSettings,
        now: datetime,
        expressions: ExpressionSandbox,
    ) -> None:
        self.instance = instance
        self.graph = graph
        self.registry = registry
        self.settings = settings
        self.now = now
        self.scope = RunScope.of(conn, instance, now, expressions)
        self.walk = Walk(graph)
        self.current_nodes = list(instance.current_nodes)
        self.step_rows: list[dict[str, Any]] = []
        # Steps of earlier runs' waits that this run resolved, finished in place (id, status, output, ...).
        self.finished_steps: list[dict[str, Any]] = []
        self.wait_rows: list[dict[str, Any]] = []
        self.effects = Effects()
        self.steps_taken = 0
        self.end_status: str | None = None
        self.end_reason: str | None = None
        self.started_here = False  # the instance was created by this run (`start`): no earlier runs

    @property
    def context(self) -> dict[str, Any]:
        """The instance context as this run changes it."""
        return self.scope.context

    async def start(self, heads: list[str]) -> None:
        """Run a new instance from its entry nodes."""
        self.started_here = True
        await self._walk_from(heads)

    async def _walk_from(self, heads: list[str]) -> None:
        self.walk.ready.extend(heads)
        await self._drain()

    async def resume(self, wait: WaitRow, trigger: str, data: Mapping[str, Any]) -> None:
        """Continue the path parked at `wait`: a retry re-executes its node, anything else resumes it."""
        if wait.node_id in self.current_nodes:
            self.current_nodes.remove(wait.node_id)
        if trigger == "event":
            self.context["event"] = dict(data)
        retry_attempt = wait.meta.get("retry_attempt")
        if isinstance(retry_attempt, int):
            await self._run_node(wait.node_id, attempt=retry_attempt)
        else:
            attempt = wait.meta.get("attempt", 1)
            await self._run_node(
                wait.node_id,
                attempt=attempt if isinstance(attempt, int) else 1,
                resume=(trigger, data),
                step_id=_waiting_step_of(wait),
            )
        await self._drain()

    def fail_at_wait(self, wait: WaitRow, reason: str) -> None:
        """Fail the path parked at `wait` without running its node: a failed step, and the instance fails."""
        if wait.node_id in self.current_nodes:
            self.current_nodes.remove(wait.node_id)
        node = self.graph.node(wait.node_id)
        node_type = node.type if node is not None else ""
        attempt = wait.meta.get("attempt", 1)
        self._record_step(
            wait.node_id,
            node_type,
            StepStatus.FAILED,
            {"trigger": "event"},
            None,
            reason,
            attempt if isinstance(attempt, int) else 1,
            datetime.now(UTC),
            step_id=_waiting_step_of(wait),
        )
        self._fail(wait.node_id, f"node {wait.node_id!r} ({node_type}) failed: {reason}")

    async def run_heads(self, heads: list[str]) -> None:
        """Run heads that were left without a wait (recovery of an interrupted multi-step state)."""
        for head in heads:
            if head in self.current_nodes:
                self.current_nodes.remove(head)
        await self._walk_from(heads)

    async def _drain(self) -> None:
        while (node_id := self.walk.next_node()) is not None:
            await self._run_node(node_id)

    async def _run_node(
        self,
        node_id: str,
        *,
        attempt: int = 1,
        resume: tuple[str, Mapping[str, Any]] | None = None,
        step_id: uuid.UUID | None = None,
    ) -> None:
        self.steps_taken += 1
        started = datetime.now(UTC)
        node = self.graph.node(node_id)
        if node is None:
            self._record_step(
                node_id, "", "failed", {}, None, f"node {node_id!r} is not in the graph", attempt, started
            )
            self._fail(node_id, f"node {node_id!r} is not in version {self.instance.version_number}")
            return
        node_type = self.registry.get(node.type)
        step_input: dict[str, Any] = {"config": dict(node.config)}
        if resume is not None:
            step_input["trigger"] = resume[0]
        if self.steps_taken > self.settings.max_steps_per_run:
            result: NodeResult = Failed(f"the run exceeded {self.settings.max_steps_per_run} steps")
        elif node_type is None:
            result = Failed(f"unknown node type {node.type!r}")
        else:
            result = await self._call(node, node_type, attempt, resume)
        self._apply(node, node_type, result, attempt, step_input, started, step_id)

    async def _call(
        self, node: GraphNode, node_type: NodeType, attempt: int, resume: tuple[str, Mapping[str, Any]] | None
    ) -> NodeResult:
        """Run the node's behaviour; anything it raises (but database errors) is a failed step."""
        if node_type.category is NodeCategory.TRIGGER and resume is None:
            # Triggers are matched by whoever started the instance (event, webhook, segment); reaching one is entry.
            return Completed()
        ctx = DbNodeContext(self.scope, node.id, attempt)
        try:
            if resume is None:
                result = await node_type.execute(node.config, ctx)
            else:
                result = await node_type.resume(node.config, ctx, resume[0], resume[1])
        except asyncio.CancelledError:
            raise
        except DATABASE_ERRORS:
            raise  # the run cannot go on: the transaction rolls back and the work is retried
        except NotImplementedError as error:
            return Failed(str(error) or f"node type {node_type.key!r} is not implemented")
        except Exception as error:  # noqa: BLE001 - a node's bug fails its step, never the engine
            _log.warning("node raised", node_id=node.id, node_type=node.type, error=repr(error))
            return Failed(f"{type(error).__name__}: {error}")
        if not isinstance(result, RESULT_TYPES):
            return Failed(f"node type {node_type.key!r} returned {type(result).__name__}, not a node result")
        if not isinstance(result, Failed) and nests_deeper_than(result.output, MAX_JSON_NESTING):
            # A webhook's answer, say: stored in the context, it would make every message carrying it undecodable.
            return Failed(f"its output nests objects and arrays more than {MAX_JSON_NESTING} deep")
        return result

    def _apply(
        self,
        node: GraphNode,
        node_type: NodeType | None,
        result: NodeResult,
        attempt: int,
        step_input: dict[str, Any],
        started: datetime,
        step_id: uuid.UUID | None = None,
    ) -> None:
        """Record the visit's step (in place, `step_id`, when it resolves a wait's step) and act on the result."""
        ends_instance = node_type is not None and node_type.category is NodeCategory.END
        if isinstance(result, Completed | Branched):
            output = plain_json(result.output)
            if isinstance(result, Branched):
                output = {"branch": result.key, **output}
            self.context.setdefault("accumulated", {})[node.id] = output
            self._record_step(
                node.id, node.type, StepStatus.COMPLETED, step_input, output, None, attempt, started, step_id=step_id
            )
            self.walk.advance(node.id, result, ends_instance=ends_instance)
            if ends_instance:
                self._end_by(node)
        elif isinstance(result, Skipped):
            output = {"skipped": result.reason, **plain_json(result.output)}
            self.context.setdefault("accumulated", {})[node.id] = output
            self._record_step(
                node.id, node.type, StepStatus.SKIPPED, step_input, output, None, attempt, started, step_id=step_id
            )
            self.walk.advance(node.id, result)
        elif isinstance(result, Waiting):
            waiting_step = self._record_step(
                node.id,
                node.type,
                StepStatus.WAITING,
                step_input,
                plain_json(result.output),
                None,
                attempt,
                started,
                step_id=step_id,
            )
            self._park(node.id, result, attempt, extra={"step_id": str(waiting_step)})
            self.walk.advance(node.id, result)
        else:
            self._record_step(
                node.id,
                node.type,
                StepStatus.FAILED,
                step_input,
                None,
                result.reason,
                attempt,
                started,
                step_id=step_id,
            )
            retries = node_type.retries if node_type is not None else 0
            if result.retryable and attempt <= retries:
                fire_time = self.now + retry_delay(self.settings, attempt)
                retry = Waiting(kind="timer", fire_time=fire_time)
                self._park(node.id, retry, attempt, extra={"retry_attempt": attempt + 1, "last_error": result.reason})
                self.walk.advance(node.id, retry)
            else:
                self.walk.advance(node.id, result)
                self._fail(node.id, f"node {node.id!r} ({node.type}) failed: {result.reason}")

    def _record_step(
        self,
        node_id: str,
        node_type: str,
        status: str,
        step_input: dict[str, Any],
        output: dict[str, Any] | None,
        error: str | None,
        attempt: int,
        started: datetime,
        *,
        step_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """A step row for this visit; with `step_id` (the step of the wait this visit resolves) that row is
        finished in place instead: one row per visit (SPEC 6.3). Returns the row's id."""
        end_time = None if status == StepStatus.WAITING else datetime.now(UTC)
        if step_id is not None:
            self.finished_steps.append(
                {
                    "id": step_id,
                    "status": status,
                    "input": step_input,
                    "output": output,
                    "error": error,
                    "end_time": end_time,
                }
            )
            return step_id
        row_id = uuid.uuid4()
        self.step_rows.append(
            {
                "id": row_id,
                "tenant_id": self.instance.tenant_id,
                "instance_id": self.instance.id,
                "node_id": node_id,
                "node_type": node_type,
                "version_number": self.instance.version_number,
                "status": status,
                "input": step_input,
                "output": output,
                "error": error,
                "attempt": attempt,
                "start_time": started,
                "end_time": end_time,
            }
        )
        return row_id

    def _park(self, node_id: str, waiting: Waiting, attempt: int, *, extra: dict[str, Any] | None = None) -> None:
        wait_id = uuid.uuid4()
        meta: dict[str, Any] = {"attempt": attempt, "reached_time": self.now.isoformat(), **(extra or {})}
        if waiting.timeout_branch:
            meta["timeout_branch"] = waiting.timeout_branch
        fire_time = waiting.fire_time
        if waiting.call is not None:
            # Due at once: the scheduler's timer path (Redis bucket, or the sweep) claims it and makes the call.
            meta[SPEC_KEY] = waiting.call.to_json()
            fire_time = self.now
        self.wait_rows.append(
            {
                "id": wait_id,
                "tenant_id": self.instance.tenant_id,
                "instance_id": self.instance.id,
                "node_id": node_id,
                "kind": waiting.kind,
                "status": WaitStatus.PENDING,
                "fire_time": fire_time,
                "event_type": waiting.event_type,
                "event_filter": waiting.event_filter,
                "participant_id": self.instance.participant_id,
                "branch_path": meta,
                "create_time": self.now,
            }
        )
        self.current_nodes.append(node_id)
        if fire_time is not None:
            self.effects.timers.append((self.instance.id, wait_id, fire_time))
        if waiting.kind == "event" and waiting.event_type:
            since = self.now - timedelta(seconds=self.settings.event_lookback_seconds)
            self.effects.event_waits.append(
                ArmedEventWait(
                    self.instance.tenant_id,
                    self.instance.id,
                    wait_id,
                    self.instance.participant_id,
                    waiting.event_type,
                    since,
                )
            )

    def _end_by(self, node: GraphNode) -> None:
        # Reaching an end node (`exit`, `goal_reached`) is the normal end: COMPLETED (SPEC 6.3). EXITED is only for
        # participants taken out (cancel, exit criteria, archive, a removed node), each with its reason.
        self.end_status, self.end_reason = InstanceStatus.COMPLETED, None

    def _fail(self, node_id: str, reason: str) -> None:
        if self.walk.outcome is None:
            self.walk.outcome = WalkOutcome.FAILED
            self.walk.ended_by = node_id
            self.walk.ready.clear()
        self.end_status, self.end_reason = "failed", reason

    async def finish(self) -> str:
        """Write the run (steps, waits, instance row) into the transaction; returns the instance's new status."""
        conn = self.scope.conn
        if self.end_status is not None:
            # The instance is over: waits of other paths (earlier runs) and of this run are void.
            if not self.started_here:  # a new instance has no waits or steps of earlier runs
                voided = await void_pending(conn, [self.instance.id], self.now)
                self.effects.cancelled_timers += voided.timers
                count_cancelled_steps(self.effects.tally, self.instance, voided.steps)
            new_wait_ids = {row["id"] for row in self.wait_rows}
            self.effects.timers = [t for t in self.effects.timers if t[1] not in new_wait_ids]
            self.effects.event_waits = []
            self.wait_rows = []
            for row in [*self.step_rows, *self.finished_steps]:
                if row["status"] == StepStatus.WAITING:
                    row["status"], row["end_time"] = StepStatus.CANCELLED, self.now
            self.current_nodes = []
            status, reason = self.end_status, self.end_reason
        elif self.current_nodes:
            held = self.instance.flow_status == FlowStatus.PAUSED or self.instance.status == InstanceStatus.PAUSED
            status, reason = (InstanceStatus.PAUSED if held else InstanceStatus.WAITING), None
        else:
            status, reason = InstanceStatus.COMPLETED, None
        self.effects.deliveries += self.scope.delivery_ids
        written = await write_run(
            conn,
            self.instance.id,
            steps=self.step_rows,
            finished_steps=self.finished_steps,
            new_waits=self.wait_rows,
            status=status,
            current_nodes=self.current_nodes,
            context=self.context,
            exit_reason=reason,
            now=self.now,
            finished=status in FINAL_INSTANCE_STATUSES,
        )
        self._count(written, status)
        self.effects.counts.ran(status, (row["status"] for row in [*self.step_rows, *self.finished_steps]))
        self.instance.status = status
        return status

    def _count(self, written: RunWritten, status: str) -> None:
        """The run's analytics: its steps (new and resolved), the nodes the instance reached for the first time,
        its status change, and what its nodes counted (conversions, A/B assignments)."""
        tally = self.effects.tally
        tally.extend(self.scope.tally)
        tenant_id, flow_id = self.instance.tenant_id, self.instance.flow_id
        for row in self.step_rows:
            tally.step_written(tenant_id, flow_id, _step_facts(row, row))
        for row in self.finished_steps:
            before = written.resolved.get(row["id"])
            if before is not None:
                tally.step_changed(tenant_id, flow_id, _step_facts(before, row), before.status)
        cohort = self.instance.cohort(self.now)
        for node_id in dict.fromkeys(row["node_id"] for row in self.step_rows):
            if node_id not in written.visited_before:
                tally.node_reached(cohort, node_id, self.instance.version_number)
        tally.status_changed(cohort, self.instance.status, status)
