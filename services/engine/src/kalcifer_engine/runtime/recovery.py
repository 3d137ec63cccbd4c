"""Crash recovery (SPEC 6.9): on start and every `recovery_interval_seconds`, finish what was interrupted.

Runs are transactional, so a crash loses only uncommitted work and leaves the last committed state. What can be
left behind is work nobody will redo on their own:
- timers whose scheduler job was lost and that the scheduler's own sweep has not fired either: a pending wait
  more than `recovery_overdue_seconds` past its fire time is fired here (the scheduler's sweep normally fires
  it within its period; both firing is harmless, the wait row decides);
- events stored by the API whose routing never committed (the engine died mid-route): routed here after
  `recovery_event_seconds`;
- instances committed as 'running' and untouched for `recovery_running_seconds` (not produced by normal runs,
  which commit waiting/finished states, but possible after manual repair or an older engine): re-run from the
  heads in `current_nodes` that have no pending wait;
- instances that missed their flow's status (the API's Pause/Resume/ExitFlowInstances call after a lifecycle
  move never arrived): paused, released or exited as the flow's committed status says (`reconcile_flow_holds`);
- finished instances older than `instance_retention_seconds`, with their steps and waits, are pruned
  (`prune_finished_instances`): the engine writes instances, so it is the one that deletes them.
Every replica may run this loop: each piece is idempotent (wait ids, event claims, row locks).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from datetime import timedelta
from typing import Final

from kalcifer_common.logging import get_logger
from kalcifer_common.statuses import FLOW_ARCHIVED_EXIT_REASON, FlowStatus, InstanceStatus

from kalcifer_engine.repo import events, instances, waits
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.events import EventToRoute, route_event
from kalcifer_engine.runtime.lifecycle import reconcile_flow_holds
from kalcifer_engine.runtime.migration import continue_migrations
from kalcifer_engine.runtime.resumes import ResumeRequest, resume_many
from kalcifer_engine.runtime.run import Effects, exit_instance

_log = get_logger(__name__)

BATCH: Final = 500


async def fire_overdue_waits(rt: Runtime) -> int:
    """Fire pending timers long overdue (not of paused instances); returns how many were applied."""
    cutoff = rt.now() - timedelta(seconds=rt.settings.recovery_overdue_seconds)
    async with rt.db.connect() as conn:
        overdue = await waits.overdue_waits(conn, cutoff, BATCH)
    requests = [ResumeRequest(w.instance_id, w.id, "timeout" if w.kind == "event" else "timer") for w in overdue]
    outcomes = await resume_many(rt, requests)
    return sum(1 for outcome in outcomes if outcome.applied)


async def route_unrouted_events(rt: Runtime) -> int:
    """Route events that were stored but never routed; returns how many."""
    cutoff = rt.now() - timedelta(seconds=rt.settings.recovery_event_seconds)
    async with rt.db.connect() as conn:
        unrouted = await events.unrouted_events(conn, cutoff, BATCH)
    for event in unrouted:
        await route_event(
            rt, EventToRoute(event.tenant_id, event.id, event.participant_id, event.event_type, event.data)
        )
    return len(unrouted)


async def rerun_stuck_instances(rt: Runtime) -> int:
    """Re-run instances left 'running' from their committed state; returns how many."""
    cutoff = rt.now() - timedelta(seconds=rt.settings.recovery_running_seconds)
    async with rt.db.connect() as conn:
        ids = await instances.stuck_running_instances(conn, cutoff, BATCH)
    done = 0
    for instance_id in ids:
        if await _rerun(rt, instance_id):
            done += 1
    return done


async def _rerun(rt: Runtime, instance_id: uuid.UUID) -> bool:
    effects = Effects()
    async with rt.transaction(effects) as conn:
        instance = await instances.lock_instance(conn, instance_id)
        if instance is None or instance.status != InstanceStatus.RUNNING:
            return False
        if instance.flow_status == FlowStatus.ARCHIVED:
            # Its flow was archived meanwhile: exit it, never run it.
            await exit_instance(conn, instance, FLOW_ARCHIVED_EXIT_REASON, effects, now=rt.now())
        else:
            waiting = Counter(w.node_id for w in await waits.pending_waits(conn, instance_id))
            heads: list[str] = []
            for node_id in instance.current_nodes:
                if waiting[node_id]:
                    waiting[node_id] -= 1
                else:
                    heads.append(node_id)
            run = await rt.instance_run(conn, instance, rt.now())
            await run.run_heads(heads)
            await run.finish()
            effects.extend(run.effects)
    await rt.after_commit(effects)
    return True


_PRUNE_BATCHES_PER_PASS = 10


async def prune_finished_instances(rt: Runtime) -> int:
    """Delete finished instances (their steps and waits go by cascade) that ended before the retention, in
    batches of `BATCH`, each its own short transaction; replicas skip rows another is deleting."""
    cutoff = rt.now() - timedelta(seconds=rt.settings.instance_retention_seconds)
    total = 0
    for _ in range(_PRUNE_BATCHES_PER_PASS):
        async with rt.db.begin() as conn:
            deleted = await instances.prune_finished_instances(conn, cutoff, BATCH)
        total += deleted
        if deleted < BATCH:
            break
    return total


async def recover_once(rt: Runtime) -> dict[str, int]:
    """One pass of every recovery; returns what each did."""
    holds = await reconcile_flow_holds(rt)
    return {
        "flow_holds_paused": holds.paused,
        "flow_holds_resumed": holds.resumed,
        "flow_holds_exited": holds.exited,
        "stuck_instances": await rerun_stuck_instances(rt),
        "unrouted_events": await route_unrouted_events(rt),
        "overdue_waits": await fire_overdue_waits(rt),
        "pruned_instances": await prune_finished_instances(rt),
        "migrations_taken_up": await continue_migrations(rt),
    }


class RecoveryLoop:
    """Runs `recover_once` at start and then periodically, until stopped."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop in the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop (an in-flight pass is cancelled; its transactions roll back)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                done = await recover_once(self._rt)
                if any(done.values()):
                    _log.info("recovery pass", **done)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the loop must outlive one bad pass (database down, a bug)
                _log.warning("recovery pass failed; will retry", error=repr(error))
            await asyncio.sleep(self._rt.settings.recovery_interval_seconds)
