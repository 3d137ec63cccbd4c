"""Operator-driven ends and holds: CancelInstance, and a flow's Pause/Resume/Exit of its instances (SPEC 6.8).

The API owns a flow's status and commits it first; then it asks the engine, the only writer of instances and
waits, to bring the flow's instances in line (Pause/Resume/ExitFlowInstances). Each step is idempotent and acts
only when the flow's committed status still calls for it, so a delayed retry of a pause that lands after a resume
changes nothing. `reconcile_flow_holds` (run by recovery) converges whatever a lost call left behind. Every
change of an instance bumps its `run_revision`, as every engine write of an instance does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from kalcifer_common.errors import FailedPrecondition, NotFound
from kalcifer_common.logging import get_logger
from kalcifer_common.statuses import (
    FLOW_ARCHIVED_EXIT_REASON,
    LIVE_INSTANCE_STATUSES,
    FlowStatus,
    InstanceStatus,
    StepStatus,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.domain.tallies import Cohort
from kalcifer_engine.repo import flows, instances, waits
from kalcifer_engine.repo.instances import InstanceRow
from kalcifer_engine.repo.voiding import void_pending
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.resumes import ResumeRequest, resume_many
from kalcifer_engine.runtime.run import Effects, exit_instance

_log = get_logger(__name__)
_T = TypeVar("_T")


async def cancel_instance(rt: Runtime, tenant_id: uuid.UUID, instance_id: uuid.UUID, reason: str) -> InstanceRow:
    """End a live instance as EXITED and cancel its waits; NOT_FOUND, FAILED_PRECONDITION INSTANCE_FINISHED."""
    effects = Effects()
    async with rt.transaction(effects) as conn:
        now = rt.now()
        instance = await instances.lock_instance(conn, instance_id, tenant_id=tenant_id)
        if instance is None:
            raise NotFound("instance", f"instances/{instance_id}")
        if not instance.live:
            raise FailedPrecondition("INSTANCE_FINISHED", f"instance {instance_id} is already {instance.status}")
        await exit_instance(conn, instance, reason or "cancelled", effects, now=now)
        final = await instances.read_instance(conn, instance_id)
    await rt.after_commit(effects)
    assert final is not None
    return final


async def _require_flow(conn: AsyncConnection, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    if not await flows.flow_exists(conn, tenant_id, flow_id):
        raise NotFound("flow", f"flows/{flow_id}")


async def pause_flow_instances(rt: Runtime, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> int:
    """WAITING instances of a PAUSED flow become PAUSED (running ones pause when their run ends: it sees the
    flow). Nothing changes unless the flow is PAUSED. NOT_FOUND for an unknown flow."""
    effects = Effects()
    async with rt.transaction(effects) as conn:
        await _require_flow(conn, tenant_id, flow_id)
        moved = await instances.move_flow_instances(
            conn,
            tenant_id,
            flow_id,
            rt.now(),
            from_status=InstanceStatus.WAITING,
            to_status=InstanceStatus.PAUSED,
            flow_status=FlowStatus.PAUSED,
        )
        _count_moves(effects, tenant_id, flow_id, moved, InstanceStatus.WAITING, InstanceStatus.PAUSED)
    return sum(cohort.count for cohort in moved)


def _count_moves(
    effects: Effects,
    tenant_id: uuid.UUID,
    flow_id: uuid.UUID,
    moved: list[instances.CohortCount],
    from_status: InstanceStatus,
    to_status: InstanceStatus,
) -> None:
    for cohort in moved:
        where = Cohort(tenant_id, flow_id, cohort.version_number, cohort.enter_day)
        effects.tally.status_changed(where, from_status, to_status, cohort.count)


@dataclass(frozen=True)
class FlowResumed:
    """Instances released from PAUSED, and held resumes applied."""

    resumed: int
    applied: int


async def resume_flow_instances(rt: Runtime, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> FlowResumed:
    """Release the PAUSED instances of an ACTIVE flow, then apply what was held: overdue timers and events that
    arrived meanwhile. Nothing changes unless the flow is ACTIVE. NOT_FOUND for an unknown flow."""
    effects = Effects()
    async with rt.transaction(effects) as conn:
        await _require_flow(conn, tenant_id, flow_id)
        moved = await instances.move_flow_instances(
            conn,
            tenant_id,
            flow_id,
            rt.now(),
            from_status=InstanceStatus.PAUSED,
            to_status=InstanceStatus.WAITING,
            flow_status=FlowStatus.ACTIVE,
        )
        _count_moves(effects, tenant_id, flow_id, moved, InstanceStatus.PAUSED, InstanceStatus.WAITING)
        held = await waits.held_waits(conn, tenant_id, flow_id, rt.now())
    resumed = sum(cohort.count for cohort in moved)
    requests: list[ResumeRequest] = []
    for wait in held:
        held_event = wait.meta.get("held_event")
        if isinstance(held_event, dict):
            event_id = held_event.get("event_id")
            requests.append(
                ResumeRequest(
                    wait.instance_id,
                    wait.id,
                    "event",
                    held_event.get("data") or {},
                    event_id=uuid.UUID(event_id) if isinstance(event_id, str) else None,
                )
            )
        else:
            requests.append(ResumeRequest(wait.instance_id, wait.id, "timeout" if wait.kind == "event" else "timer"))
    outcomes = await resume_many(rt, requests)
    return FlowResumed(resumed, sum(1 for outcome in outcomes if outcome.applied))


# Instances exited per transaction: an archive of a flow with a million live instances is many short
# transactions, never one that outlives its deadline or holds every row.
EXIT_BATCH = 1000


async def exit_flow_instances(rt: Runtime, tenant_id: uuid.UUID, flow_id: uuid.UUID, reason: str) -> int:
    """Exit every live instance of the flow (after ArchiveFlow) and cancel their waits, `EXIT_BATCH` per
    transaction. Rows a run holds right now are skipped and taken by a later batch (or by recovery)."""
    exited = 0
    while True:
        effects = Effects()
        async with rt.transaction(effects) as conn:
            await _require_flow(conn, tenant_id, flow_id)
            now = rt.now()
            ended = await instances.exit_live_instances(
                conn, tenant_id, flow_id, reason or FLOW_ARCHIVED_EXIT_REASON, now, limit=EXIT_BATCH
            )
            ids = [instance.id for instance in ended]
            voided = await void_pending(conn, ids, now)
            effects.cancelled_timers += voided.timers
            for step in voided.steps:
                effects.tally.step_changed(tenant_id, flow_id, step, StepStatus.WAITING)
            for instance in ended:
                cohort = Cohort.of(tenant_id, flow_id, instance.version_number, instance.enter_time)
                effects.tally.status_changed(cohort, instance.status, InstanceStatus.EXITED)
        await rt.after_commit(effects)
        exited += len(ids)
        if len(ids) < EXIT_BATCH:
            return exited


@dataclass(frozen=True)
class FlowHoldsReconciled:
    """What one reconciliation pass changed, per flow status it carried to instances."""

    paused: int
    resumed: int
    exited: int


_FLOWS_PER_PASS = 100


async def _flows_needing(
    rt: Runtime, flow_status: str, instance_statuses: tuple[str, ...]
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    async with rt.db.connect() as conn:
        return await flows.flows_with_instances_in(conn, flow_status, instance_statuses, _FLOWS_PER_PASS)


async def reconcile_flow_holds(rt: Runtime) -> FlowHoldsReconciled:
    """Carry every flow's committed status to instances that missed it (the API's call after a pause, resume or
    archive never arrived): waiting instances of PAUSED flows pause, paused instances of ACTIVE flows are
    released (and events held during the pause are applied, also when a release was cut off before applying
    them), live instances of ARCHIVED flows exit. Bounded to `_FLOWS_PER_PASS` flows of each kind per pass."""
    paused = resumed = exited = 0
    for tenant_id, flow_id in await _flows_needing(rt, FlowStatus.PAUSED, (InstanceStatus.WAITING,)):
        paused += await _one_flow(pause_flow_instances(rt, tenant_id, flow_id), flow_id, 0)
    async with rt.db.connect() as conn:
        holding_events = await flows.active_flows_with_held_events(conn, _FLOWS_PER_PASS)
    to_release = await _flows_needing(rt, FlowStatus.ACTIVE, (InstanceStatus.PAUSED,))
    for tenant_id, flow_id in dict.fromkeys([*to_release, *holding_events]):
        released = await _one_flow(resume_flow_instances(rt, tenant_id, flow_id), flow_id, FlowResumed(0, 0))
        resumed += released.resumed
    for tenant_id, flow_id in await _flows_needing(rt, FlowStatus.ARCHIVED, LIVE_INSTANCE_STATUSES):
        exited += await _one_flow(exit_flow_instances(rt, tenant_id, flow_id, FLOW_ARCHIVED_EXIT_REASON), flow_id, 0)
    return FlowHoldsReconciled(paused, resumed, exited)


async def _one_flow(step: Awaitable[_T], flow_id: uuid.UUID, failed: _T) -> _T:
    """One flow's reconciliation; a failure is logged and leaves the other flows (and recovery's other work) to
    go on, and the flow is tried again next pass."""
    try:
        return await step
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - one flow must not stop the others
        _log.warning("could not carry a flow's status to its instances", flow_id=str(flow_id), error=repr(error))
        return failed
