"""Waits (`waits`): where a path is parked, and the one place a resume is decided.

A wait is fired at most once: `fire_wait` is a conditional UPDATE of a pending row, under the instance's row
lock, in the transaction of the run it starts. New waits are inserted by the run's one write (`steps.write_run`).
`branch_path` holds the wait's metadata (attempt, reached time, a held event, what fired it). The rest are the
set-wise reads and writes of a flow's or the whole database's waits: held while paused, cancelled with their
instances, re-armed by a migration, long overdue for recovery.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from typing import cast as typed

from kalcifer_common.db.models import FlowInstance, Wait
from kalcifer_common.statuses import LIVE_INSTANCE_STATUSES, InstanceStatus, WaitKind, WaitStatus
from sqlalchemy import ColumnElement, Table, and_, cast, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.connection import driver, json_text

_waits = typed(Table, Wait.__table__)
_instances = typed(Table, FlowInstance.__table__)


def _with_meta(meta: dict[str, Any]) -> ColumnElement[Any]:
    """`branch_path || meta`: the wait's metadata with `meta`'s keys merged in."""
    current = func.coalesce(_waits.c.branch_path, cast(literal({}, JSONB), JSONB))
    return current.op("||", return_type=JSONB)(cast(literal(meta, JSONB), JSONB))


@dataclass
class WaitRow:
    """A wait row as a resume sees it."""

    id: uuid.UUID
    instance_id: uuid.UUID
    node_id: str
    kind: str
    status: str
    fire_time: datetime | None
    event_type: str | None
    event_filter: str | None
    meta: dict[str, Any]


_WAIT_COLUMNS = (
    _waits.c.id,
    _waits.c.instance_id,
    _waits.c.node_id,
    _waits.c.kind,
    _waits.c.status,
    _waits.c.fire_time,
    _waits.c.event_type,
    _waits.c.event_filter,
    _waits.c.branch_path,
)


def _wait(row: Any) -> WaitRow:
    return WaitRow(
        id=row.id,
        instance_id=row.instance_id,
        node_id=row.node_id,
        kind=row.kind,
        status=row.status,
        fire_time=row.fire_time,
        event_type=row.event_type,
        event_filter=row.event_filter,
        meta=dict(row.branch_path or {}),
    )


_WAIT_FIELDS = "id, instance_id, node_id, kind, status, fire_time, event_type, event_filter, branch_path"
_FIRE_WAIT = f"""
    UPDATE waits SET status = 'fired', resolved_time = $3, branch_path = coalesce(branch_path, '{{}}') || $4::jsonb
    WHERE id = $1 AND instance_id = $2 AND status = 'pending'
      AND (CASE $5 WHEN 'event' THEN kind = 'event' WHEN 'call' THEN kind = 'call'
           ELSE kind <> 'call' AND fire_time <= $3 END)
    RETURNING {_WAIT_FIELDS}
"""  # noqa: S608 - constant column list
_GET_WAIT = f"SELECT {_WAIT_FIELDS} FROM waits WHERE id = $1"  # noqa: S608 - constant column list


def wait_record(row: Any) -> WaitRow:
    """A wait from a driver record with the columns of `_WAIT_FIELDS`."""
    return WaitRow(
        id=row["id"],
        instance_id=row["instance_id"],
        node_id=row["node_id"],
        kind=row["kind"],
        status=row["status"],
        fire_time=row["fire_time"],
        event_type=row["event_type"],
        event_filter=row["event_filter"],
        meta=dict(row["branch_path"] or {}),
    )


async def fire_wait(
    conn: AsyncConnection,
    wait_id: uuid.UUID,
    instance_id: uuid.UUID,
    *,
    by: str,
    now: datetime,
    meta: dict[str, Any],
) -> WaitRow | None:
    """Mark a pending wait fired when this resume may fire it: `by` "event" fires an event wait, "call" a call
    wait (with the call's answer), anything else a due timer or event timeout.

    None when the wait is not pending, belongs to another instance, is of another kind, or is not yet due.
    """
    row = await (await driver(conn)).fetchrow(_FIRE_WAIT, wait_id, instance_id, now, json_text(meta), by)
    return None if row is None else wait_record(row)


async def get_wait(conn: AsyncConnection, wait_id: uuid.UUID) -> WaitRow | None:
    """One wait row, whatever its status."""
    row = await (await driver(conn)).fetchrow(_GET_WAIT, wait_id)
    return None if row is None else wait_record(row)


async def merge_wait_meta(conn: AsyncConnection, wait_id: uuid.UUID, meta: dict[str, Any]) -> None:
    """Merge keys into a wait's metadata (e.g. an event held while the flow is paused)."""
    await conn.execute(update(_waits).where(_waits.c.id == wait_id).values(branch_path=_with_meta(meta)))


async def pending_waits(conn: AsyncConnection, instance_id: uuid.UUID) -> list[WaitRow]:
    """The pending waits of an instance."""
    query = select(*_WAIT_COLUMNS).where(_waits.c.instance_id == instance_id, _waits.c.status == WaitStatus.PENDING)
    return [_wait(row) for row in await conn.execute(query.order_by(_waits.c.create_time, _waits.c.id))]


async def held_waits(conn: AsyncConnection, tenant_id: uuid.UUID, flow_id: uuid.UUID, now: datetime) -> list[WaitRow]:
    """Pending waits of the flow's live instances that a pause held back: timers due by `now`, and waits that
    keep an event that arrived meanwhile (`held_event` in their metadata). Not call waits: the scheduler makes
    their call once the flow runs again."""
    query = (
        select(*_WAIT_COLUMNS)
        .join(_instances, _instances.c.id == _waits.c.instance_id)
        .where(
            _instances.c.tenant_id == tenant_id,
            _instances.c.flow_id == flow_id,
            _instances.c.status.in_(LIVE_INSTANCE_STATUSES),
            _waits.c.status == WaitStatus.PENDING,
            or_(
                and_(_waits.c.fire_time <= now, _waits.c.kind != WaitKind.CALL),
                _waits.c.branch_path.has_key("held_event"),
            ),
        )
    )
    return [_wait(row) for row in await conn.execute(query)]


async def rearm_wait(
    conn: AsyncConnection,
    wait_id: uuid.UUID,
    *,
    kind: str,
    fire_time: datetime | None,
    event_type: str | None,
    event_filter: str | None,
    meta: dict[str, Any],
) -> None:
    """Replace what a pending wait waits for (a migration re-ran its node on the new version), and its metadata."""
    await conn.execute(
        update(_waits)
        .where(_waits.c.id == wait_id)
        .values(kind=kind, fire_time=fire_time, event_type=event_type, event_filter=event_filter, branch_path=meta)
    )


async def overdue_waits(conn: AsyncConnection, due_before: datetime, limit: int) -> list[WaitRow]:
    """Pending timers due before `due_before` (not of paused instances, not call waits, which only the scheduler's
    call can resume), earliest first, at most `limit`."""
    query = (
        select(*_WAIT_COLUMNS)
        .join(_instances, _instances.c.id == _waits.c.instance_id)
        .where(
            _waits.c.status == WaitStatus.PENDING,
            _waits.c.fire_time <= due_before,
            _waits.c.kind != WaitKind.CALL,
            _instances.c.status != InstanceStatus.PAUSED,
        )
        .order_by(_waits.c.fire_time)
        .limit(limit)
    )
    return [_wait(row) for row in await conn.execute(query)]
