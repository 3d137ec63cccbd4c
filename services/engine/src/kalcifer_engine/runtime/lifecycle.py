"""Operator-driven ends and holds: CancelInstance, and a flow's Pause/Resume/Exit of its instances (SPEC 6.8).

The API owns a flow's status and commits it first; then it asks the engine, the only writer of instances and
waits, to bring the flow's instances in line (Pause/Resume/ExitFlowInstances). Each step is idempotent and acts
only when the flow's committed status still calls for it, so a delayed retry of a pause that lands after a resume
changes nothing. `reconcile_flow_holds` (run by recovery) converges whatever a lost call left behind. Every
change of an instance bumps its `run_revision`, as every engine write of an instance does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import cast

from kalcifer_common.db.models import Flow, FlowInstance, Wait
from kalcifer_common.errors import FailedPrecondition, NotFound
from kalcifer_common.statuses import FLOW_ARCHIVED_EXIT_REASON, LIVE_INSTANCE_STATUSES, FlowStatus, InstanceStatus
from sqlalchemy import ColumnElement, Table, and_, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.instances import InstanceRow, lock_instance, read_instance, save_instance
from kalcifer_engine.repo.waits import cancel_pending_waits
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.resumes import ResumeRequest, resume_many
from kalcifer_engine.runtime.run import Effects

_instances: Table = cast(Table, FlowInstance.__table__)
_waits: Table = cast(Table, Wait.__table__)
_flows: Table = cast(Table, Flow.__table__)
_LIVE = LIVE_INSTANCE_STATUSES


async def cancel_instance(rt: Runtime, tenant_id: uuid.UUID, instance_id: uuid.UUID, reason: str) -> InstanceRow:
    """End a live instance as EXITED and cancel its waits; NOT_FOUND, FAILED_PRECONDITION INSTANCE_FINISHED."""
    effects = Effects()
    async with rt.db.begin() as conn:
        now = rt.now()
        instance = await lock_instance(conn, instance_id, tenant_id=tenant_id)
        if instance is None:
            raise NotFound("instance", f"instances/{instance_id}")
        if not instance.live:
            raise FailedPrecondition("INSTANCE_FINISHED", f"instance {instance_id} is already {instance.status}")
        effects.cancelled_timers += await cancel_pending_waits(conn, instance_id, now)
        await save_instance(
            conn,
            instance_id,
            status="exited",
            current_nodes=[],
            context=instance.context,
            exit_reason=reason or "cancelled",
            now=now,
            finished=True,
        )
        final = await read_instance(conn, instance_id)
    await rt.after_commit(effects)
    assert final is not None
    return final


async def _require_flow(conn: AsyncConnection, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    found = await conn.execute(select(_flows.c.id).where(_flows.c.id == flow_id, _flows.c.tenant_id == tenant_id))
    if found.first() is None:
        raise NotFound("flow", f"flows/{flow_id}")


def _flow_is(flow_id: uuid.UUID, status: str) -> ColumnElement[bool]:
    """The flow's committed status is `status` (checked in the same statement as the instance update)."""
    return exists().where(_flows.c.id == flow_id, _flows.c.status == status)


async def pause_flow_instances(rt: Runtime, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> int:
    """WAITING instances of a PAUSED flow become PAUSED (running ones pause when their run ends: it sees the
    flow). Nothing changes unless the flow is PAUSED. NOT_FOUND for an unknown flow."""
    async with rt.db.begin() as conn:
        await _require_flow(conn, tenant_id, flow_id)
        paused = await conn.execute(
            update(_instances)
            .where(
                _instances.c.tenant_id == tenant_id,
                _instances.c.flow_id == flow_id,
                _instances.c.status == "waiting",
                _flow_is(flow_id, FlowStatus.PAUSED),
            )
            .values(status="paused", update_time=rt.now(), run_revision=_instances.c.run_revision + 1)
            .returning(_instances.c.id)
        )
        return len(paused.all())


@dataclass(frozen=True)
class FlowResumed:
    """Instances released from PAUSED, and held resumes applied."""

    resumed: int
    applied: int


async def resume_flow_instances(rt: Runtime, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> FlowResumed:
    """Release the PAUSED instances of an ACTIVE flow, then apply what was held: overdue timers and events that
    arrived meanwhile. Nothing changes unless the flow is ACTIVE. NOT_FOUND for an unknown flow."""
    async with rt.db.begin() as conn:
        await _require_flow(conn, tenant_id, flow_id)
        released = await conn.execute(
            update(_instances)
            .where(
                _instances.c.tenant_id == tenant_id,
                _instances.c.flow_id == flow_id,
                _instances.c.status == "paused",
                _flow_is(flow_id, FlowStatus.ACTIVE),
            )
            .values(status="waiting", update_time=rt.now(), run_revision=_instances.c.run_revision + 1)
            .returning(_instances.c.id)
        )
        resumed = len(released.all())
        now = rt.now()
        held = await conn.execute(
            select(_waits.c.id, _waits.c.instance_id, _waits.c.kind, _waits.c.branch_path)
            .join(_instances, _instances.c.id == _waits.c.instance_id)
            .where(
                _instances.c.tenant_id == tenant_id,
                _instances.c.flow_id == flow_id,
                _instances.c.status.in_(_LIVE),
                _waits.c.status == "pending",
                or_(_waits.c.fire_time <= now, _waits.c.branch_path.has_key("held_event")),
            )
        )
        rows = held.all()
    requests: list[ResumeRequest] = []
    for wait_id, instance_id, kind, meta in rows:
        held_event = (meta or {}).get("held_event")
        if isinstance(held_event, dict):
            event_id = held_event.get("event_id")
            requests.append(
                ResumeRequest(
                    instance_id,
                    wait_id,
                    "event",
                    held_event.get("data") or {},
                    event_id=uuid.UUID(event_id) if isinstance(event_id, str) else None,
                )
            )
        else:
            requests.append(ResumeRequest(instance_id, wait_id, "timeout" if kind == "event" else "timer"))
    outcomes = await resume_many(rt, requests)
    return FlowResumed(resumed, sum(1 for outcome in outcomes if outcome.applied))


async def exit_flow_instances(rt: Runtime, tenant_id: uuid.UUID, flow_id: uuid.UUID, reason: str) -> int:
    """Exit every live instance of the flow (after ArchiveFlow) and cancel their waits."""
    effects = Effects()
    async with rt.db.begin() as conn:
        await _require_flow(conn, tenant_id, flow_id)
        now = rt.now()
        exited = await conn.execute(
            update(_instances)
            .where(
                _instances.c.tenant_id == tenant_id,
                _instances.c.flow_id == flow_id,
                _instances.c.status.in_(_LIVE),
            )
            .values(
                status="exited",
                lease_until=None,
                exit_reason=reason or FLOW_ARCHIVED_EXIT_REASON,
                current_nodes=[],
                end_time=now,
                update_time=now,
                run_revision=_instances.c.run_revision + 1,
            )
            .returning(_instances.c.id)
        )
        ids = [row.id for row in exited]
        if ids:
            cancelled = await conn.execute(
                update(_waits)
                .where(and_(_waits.c.instance_id.in_(ids), _waits.c.status == "pending"))
                .values(status="cancelled", resolved_time=now)
                .returning(_waits.c.id, _waits.c.fire_time)
            )
            effects.cancelled_timers += [row.id for row in cancelled if row.fire_time is not None]
    await rt.after_commit(effects)
    return len(ids)


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
        rows = await conn.execute(
            select(_flows.c.tenant_id, _flows.c.id)
            .where(
                _flows.c.status == flow_status,
                exists().where(_instances.c.flow_id == _flows.c.id, _instances.c.status.in_(instance_statuses)),
            )
            .limit(_FLOWS_PER_PASS)
        )
        return [(row.tenant_id, row.id) for row in rows]


async def reconcile_flow_holds(rt: Runtime) -> FlowHoldsReconciled:
    """Carry every flow's committed status to instances that missed it (the API's call after a pause, resume or
    archive never arrived): waiting instances of PAUSED flows pause, paused instances of ACTIVE flows are
    released, live instances of ARCHIVED flows exit. Bounded to `_FLOWS_PER_PASS` flows of each kind per pass."""
    paused = resumed = exited = 0
    for tenant_id, flow_id in await _flows_needing(rt, FlowStatus.PAUSED, (InstanceStatus.WAITING,)):
        paused += await pause_flow_instances(rt, tenant_id, flow_id)
    for tenant_id, flow_id in await _flows_needing(rt, FlowStatus.ACTIVE, (InstanceStatus.PAUSED,)):
        resumed += (await resume_flow_instances(rt, tenant_id, flow_id)).resumed
    for tenant_id, flow_id in await _flows_needing(rt, FlowStatus.ARCHIVED, LIVE_INSTANCE_STATUSES):
        exited += await exit_flow_instances(rt, tenant_id, flow_id, FLOW_ARCHIVED_EXIT_REASON)
    return FlowHoldsReconciled(paused, resumed, exited)
