"""Applying resumes to waits (SPEC 6.4, 6.8): exactly once per wait, held while the flow is paused.

Every resume names its wait. Under the instance's row lock the wait is marked fired in the same transaction as
the run it starts, so a duplicate, a late timer after an event, or a resume racing another replica finds the wait
no longer pending and changes nothing (applied=false with a reason). Triggers: "timer" (a duration or date
elapsed, or a retry's backoff), "timeout" (a wait_for_event gave up; a "timer" resume of an event wait means the
same), "event" (the awaited event arrived; its data goes to context `event`), "call" (the scheduler made a call
wait's outbound call; its data is the answer, SPEC 6.10). Only "call" resumes a call wait, and only a call wait.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from kalcifer_common.logging import get_logger
from kalcifer_common.outbound import CALL_TRIGGER
from kalcifer_common.sandbox import ExpressionFailed, ExpressionRunaway, ExpressionSandbox
from kalcifer_common.statuses import FLOW_ARCHIVED_EXIT_REASON, FlowStatus, InstanceStatus, WaitKind, WaitStatus
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.connection import DATABASE_ERRORS
from kalcifer_engine.repo.instances import InstanceRow, lock_instance
from kalcifer_engine.repo.waits import WaitRow, fire_wait, get_wait, merge_wait_meta
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.run import Effects, exit_instance

_log = get_logger(__name__)

TRIGGERS: Final = frozenset({"timer", "event", "timeout", CALL_TRIGGER})

# Reasons of applied=false (the proto documents them).
WAIT_NOT_FOUND: Final = "wait_not_found"  # duplicate, stale, cancelled, or another instance's wait
INSTANCE_FINISHED: Final = "instance_finished"
NOT_DUE: Final = "not_due"  # a timer resume before its fire time: re-armed, applied later
HELD_FLOW_PAUSED: Final = "held_flow_paused"  # kept pending, applied by ResumeFlowInstances
# An "event" resume of a timer wait; a "call" resume of another kind of wait, or another trigger for a call wait.
TRIGGER_MISMATCH: Final = "trigger_mismatch"
FILTER_NOT_MATCHED: Final = "filter_not_matched"  # the event does not pass the wait's filter
# The wait's filter was stopped by its time or memory budget: the instance failed at that wait (held ones wait on).
FILTER_STOPPED: Final = "filter_stopped"

# How many resumes share one transaction (and one commit) in a batch.
BATCH_COMMIT_SIZE: Final = 50


@dataclass(frozen=True)
class ResumeRequest:
    """One resume, parsed at the edge."""

    instance_id: uuid.UUID
    wait_id: uuid.UUID
    trigger: str
    data: Mapping[str, Any] = field(default_factory=dict)
    event_id: uuid.UUID | None = None


@dataclass(frozen=True)
class ResumeOutcome:
    """Whether the resume was applied now, and why not."""

    applied: bool
    reason: str = ""


async def filter_passes(
    expressions: ExpressionSandbox, expression: str | None, context: Mapping[str, Any], event: Mapping[str, Any]
) -> bool:
    """Whether an event passes a wait's (or trigger's) CEL filter over `event` and the context.

    A filter that cannot be evaluated for this event (a missing field, a type mismatch) does not pass; one stopped
    by its budget raises `ExpressionRunaway` (the caller decides what that costs).
    """
    if not expression:
        return True
    try:
        return await expressions.evaluate(expression, {**context, "event": dict(event)}) is True
    except ExpressionRunaway:
        raise
    except ExpressionFailed as error:
        _log.info("event filter did not evaluate", filter=expression[:200], error=str(error))
        return False


async def resume_in(
    rt: Runtime,
    conn: AsyncConnection,
    request: ResumeRequest,
    effects: Effects,
    *,
    now: datetime,
    known_wait: WaitRow | None = None,
) -> ResumeOutcome:
    """Apply one resume inside the caller's transaction (locks the instance row).

    `known_wait`: the wait row as the caller just read it (event routing), saving a read; its pending state is
    still re-checked under the lock by the conditional update that fires it.
    """
    instance = await lock_instance(conn, request.instance_id)
    if instance is None:
        return _ignored(request, WAIT_NOT_FOUND)
    if not instance.live:
        return _ignored(request, INSTANCE_FINISHED)
    if instance.flow_status == FlowStatus.ARCHIVED:
        # The flow was archived and its instances' exit has not reached this one yet: exit it now, never run it.
        await exit_instance(conn, instance, FLOW_ARCHIVED_EXIT_REASON, effects, now=now)
        return _ignored(request, INSTANCE_FINISHED)
    by_event = request.trigger == "event"
    held = instance.status == InstanceStatus.PAUSED or instance.flow_status == FlowStatus.PAUSED
    meta: dict[str, Any] = {"fired_by": request.trigger}
    if request.event_id is not None:
        meta["event_id"] = str(request.event_id)
    if by_event or held:
        wait = known_wait if known_wait is not None else await get_wait(conn, request.wait_id)
        if wait is None or wait.instance_id != instance.id or wait.status != WaitStatus.PENDING:
            return _ignored(request, WAIT_NOT_FOUND)
        if by_event and wait.kind != "event":
            return _ignored(request, TRIGGER_MISMATCH)
        if by_event:
            try:
                passes = await filter_passes(rt.expressions, wait.event_filter, instance.context, request.data)
            except ExpressionRunaway as error:
                if held:
                    return _ignored(request, FILTER_STOPPED)
                await _fail_at_wait(rt, conn, instance, wait, f"its event filter {error}", effects, now=now)
                return _ignored(request, FILTER_STOPPED)
            if not passes:
                return _ignored(request, FILTER_NOT_MATCHED)
        if held:
            if by_event:
                held_event = {"data": dict(request.data), "event_id": meta.get("event_id")}
                await merge_wait_meta(conn, wait.id, {"held_event": held_event})
            return _ignored(request, HELD_FLOW_PAUSED)
    by = "event" if by_event else (WaitKind.CALL if request.trigger == CALL_TRIGGER else "timer")
    fired = await fire_wait(conn, request.wait_id, instance.id, by=by, now=now, meta=meta)
    if fired is None:
        existing = await get_wait(conn, request.wait_id)
        if existing is None or existing.instance_id != instance.id or existing.status != WaitStatus.PENDING:
            return _ignored(request, WAIT_NOT_FOUND)
        if (existing.kind == WaitKind.CALL) != (by == WaitKind.CALL):
            return _ignored(request, TRIGGER_MISMATCH)
        if existing.fire_time is not None:
            effects.timers.append((instance.id, existing.id, existing.fire_time))
        return _ignored(request, NOT_DUE)
    trigger = request.trigger
    if fired.kind == "event" and not by_event:
        trigger = "timeout"
    elif fired.kind == "timer":
        trigger = "timer"
    if by_event and fired.fire_time is not None:
        effects.cancelled_timers.append((fired.id, fired.fire_time))
    run = await rt.instance_run(conn, instance, now)
    await run.resume(fired, trigger, request.data if by_event or by == WaitKind.CALL else {})
    await run.finish()
    effects.extend(run.effects)
    return ResumeOutcome(True)


async def _fail_at_wait(
    rt: Runtime,
    conn: AsyncConnection,
    instance: InstanceRow,
    wait: WaitRow,
    reason: str,
    effects: Effects,
    *,
    now: datetime,
) -> None:
    """Fail the instance at `wait` (a runaway filter): every event would stop it again, so waiting on is futile."""
    await fire_wait(conn, wait.id, instance.id, by="event", now=now, meta={"fired_by": FILTER_STOPPED})
    if wait.fire_time is not None:
        effects.cancelled_timers.append((wait.id, wait.fire_time))
    run = await rt.instance_run(conn, instance, now)
    run.fail_at_wait(wait, reason)
    await run.finish()
    effects.extend(run.effects)


def _ignored(request: ResumeRequest, reason: str) -> ResumeOutcome:
    _log.info(
        "resume not applied",
        instance_id=str(request.instance_id),
        wait_id=str(request.wait_id),
        trigger=request.trigger,
        reason=reason,
    )
    return ResumeOutcome(False, reason)


async def resume_one(rt: Runtime, request: ResumeRequest) -> ResumeOutcome:
    """One resume in its own transaction; scheduler calls happen after the commit."""
    effects = Effects()
    async with rt.transaction(effects) as conn:
        outcome = await resume_in(rt, conn, request, effects, now=rt.now())
    await rt.after_commit(effects)
    return outcome


async def resume_many(rt: Runtime, requests: Sequence[ResumeRequest]) -> list[ResumeOutcome]:
    """A batch of resumes, several per commit (instances locked in id order, so batches never deadlock).

    If a shared transaction fails (a database error), its resumes are retried one transaction each, so one
    bad resume cannot hold back the others.
    """
    outcomes: list[ResumeOutcome | None] = [None] * len(requests)
    order = sorted(range(len(requests)), key=lambda i: (requests[i].instance_id, requests[i].wait_id))
    for start in range(0, len(order), BATCH_COMMIT_SIZE):
        chunk = order[start : start + BATCH_COMMIT_SIZE]
        effects = Effects()
        try:
            async with rt.transaction(effects) as conn:
                now = rt.now()
                results = [await resume_in(rt, conn, requests[i], effects, now=now) for i in chunk]
        except DATABASE_ERRORS as error:
            _log.warning("batched resume failed; retrying one by one", error=repr(error), size=len(chunk))
            for i in chunk:
                outcomes[i] = await resume_one(rt, requests[i])
            continue
        for i, result in zip(chunk, results, strict=True):
            outcomes[i] = result
        await rt.after_commit(effects)
    return [outcome if outcome is not None else ResumeOutcome(False, WAIT_NOT_FOUND) for outcome in outcomes]
