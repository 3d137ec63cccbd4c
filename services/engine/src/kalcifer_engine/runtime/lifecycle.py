"""Operator-driven ends and holds: CancelInstance, and a flow's Pause/Resume/Exit of its instances (SPEC 6.8)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from kalcifer_common.errors import FailedPrecondition, NotFound
from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.runtime import store
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.resumes import ResumeRequest, resume_many
from kalcifer_engine.runtime.run import Effects

_instances: Table = store.instances
_waits: Table = store.waits
_flows: Table = store.flows
_LIVE = ("running", "waiting", "paused")


async def cancel_instance(rt: Runtime, tenant_id: uuid.UUID, instance_id: uuid.UUID, reason: str) -> store.InstanceRow:
    """End a live instance as EXITED and cancel its waits; NOT_FOUND, FAILED_PRECONDITION INSTANCE_FINISHED."""
    effects = Effects()
    async with rt.db.begin() as conn:
        now = rt.now()
        instance = await store.lock_instance(conn, instance_id, tenant_id=tenant_id)
        if instance is None:
            raise NotFound("instance", f"instances/{instance_id}")
        if not instance.live:
            raise FailedPrecondition("INSTANCE_FINISHED", f"instance {instance_id} is already {instance.status}")
        effects.cancelled_timers += await store.cancel_pending_waits(conn, instance_id, now)
        await store.save_instance(
            conn,
            instance_id,
            status="exited",
            current_nodes=[],
            context=instance.context,
            exit_reason=reason or "cancelled",
            now=now,
            finished=True,
        )
        final = await store.read_instance(conn, instance_id)
    await rt.after_commit(effects)
    assert final is not None
    return final


async def _require_flow(conn: AsyncConnection, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    found = await conn.execute(select(_flows.c.id).where(_flows.c.id == flow_id, _flows.c.tenant_id == tenant_id))
    if found.first() is None:
        raise NotFound("flow", f"flows/{flow_id}")


async def pause_flow_instances(rt: Runtime, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> int:
    """WAITING instances of the flow become PAUSED (running ones pause when their run ends: it sees the flow)."""
    async with rt.db.begin() as conn:
        await _require_flow(conn, tenant_id, flow_id)
        paused = await conn.execute(
            update(_instances)
            .where(
                _instances.c.tenant_id == tenant_id, _instances.c.flow_id == flow_id, _instances.c.status == "waiting"
            )
            .values(status="paused", update_time=rt.now())
            .returning(_instances.c.id)
        )
        return len(paused.all())


@dataclass(frozen=True)
class FlowResumed:
    """Instances released from PAUSED, and held resumes applied."""

    resumed: int
    applied: int


async def resume_flow_instances(rt: Runtime, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> FlowResumed:
    """Release PAUSED instances, then apply what was held: overdue timers and events that arrived meanwhile."""
    async with rt.db.begin() as conn:
        await _require_flow(conn, tenant_id, flow_id)
        released = await conn.execute(
            update(_instances)
            .where(
                _instances.c.tenant_id == tenant_id, _instances.c.flow_id == flow_id, _instances.c.status == "paused"
            )
            .values(status="waiting", update_time=rt.now())
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
                exit_reason=reason or "flow_archived",
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
