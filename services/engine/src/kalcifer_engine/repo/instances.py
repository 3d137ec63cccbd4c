"""Flow instances (`flow_instances`): the row every run locks, enters with, and writes back.

A run costs few round trips: it locks the instance row (one SELECT .. FOR UPDATE on the driver, `lock_instance`)
and ends with one statement that writes its steps, new waits and the instance (`steps.write_run`). Entering a
flow is one statement too (`enter_flow`). The rest are the set-wise moves of a flow's instances (pause, release,
exit, migrate to a version) and what recovery looks for (stuck runs, finished instances to prune). Every engine
write of an instance bumps its `run_revision`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from typing import cast as typed

from kalcifer_common.db.models import Flow, FlowInstance
from kalcifer_common.statuses import FINAL_INSTANCE_STATUSES, LIVE_INSTANCE_STATUSES, FlowStatus, InstanceStatus
from sqlalchemy import ColumnElement, Date, Table, any_, cast, exists, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.domain.tallies import Cohort
from kalcifer_engine.repo.connection import driver, json_text, uuid_array

_instances = typed(Table, FlowInstance.__table__)
_flows = typed(Table, Flow.__table__)


@dataclass
class InstanceRow:
    """The locked instance row a run starts from, with its flow's status."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    flow_id: uuid.UUID
    version_number: int
    participant_id: str
    status: str
    current_nodes: list[str]
    context: dict[str, Any]
    flow_status: str
    exit_reason: str | None = None
    enter_time: datetime | None = None
    end_time: datetime | None = None

    @property
    def live(self) -> bool:
        """Running, waiting or paused (terminal states never change)."""
        return self.status in LIVE_INSTANCE_STATUSES

    def cohort(self, now: datetime) -> Cohort:
        """Where the instance's analytics counters are kept: its flow, version and UTC enter day (`now` for a row
        that has no enter time yet)."""
        return Cohort.of(self.tenant_id, self.flow_id, self.version_number, self.enter_time or now)


_INSTANCE_COLUMNS = (
    _instances.c.id,
    _instances.c.tenant_id,
    _instances.c.flow_id,
    _instances.c.version_number,
    _instances.c.participant_id,
    _instances.c.status,
    _instances.c.current_nodes,
    _instances.c.context,
    _instances.c.exit_reason,
    _instances.c.enter_time,
    _instances.c.end_time,
    _flows.c.status.label("flow_status"),
)


def _instance(row: Any) -> InstanceRow:
    return InstanceRow(
        id=row.id,
        tenant_id=row.tenant_id,
        flow_id=row.flow_id,
        version_number=row.version_number,
        participant_id=row.participant_id,
        status=row.status,
        current_nodes=list(row.current_nodes or []),
        context=dict(row.context or {}),
        flow_status=row.flow_status,
        exit_reason=row.exit_reason,
        enter_time=row.enter_time,
        end_time=row.end_time,
    )


_LOCK_INSTANCE = """
    SELECT i.id, i.tenant_id, i.flow_id, i.version_number, i.participant_id, i.status, i.current_nodes, i.context,
           i.exit_reason, i.enter_time, i.end_time, f.status AS flow_status
    FROM flow_instances i JOIN flows f ON f.id = i.flow_id
    WHERE i.id = $1 AND ($2::uuid IS NULL OR i.tenant_id = $2)
    FOR UPDATE OF i
"""


async def lock_instance(
    conn: AsyncConnection, instance_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None
) -> InstanceRow | None:
    """The instance row, locked until the transaction ends: the one serialization point of every run."""
    row = await (await driver(conn)).fetchrow(_LOCK_INSTANCE, instance_id, tenant_id)
    if row is None:
        return None
    return InstanceRow(
        id=row["id"],
        tenant_id=row["tenant_id"],
        flow_id=row["flow_id"],
        version_number=row["version_number"],
        participant_id=row["participant_id"],
        status=row["status"],
        current_nodes=list(row["current_nodes"] or []),
        context=dict(row["context"] or {}),
        flow_status=row["flow_status"],
        exit_reason=row["exit_reason"],
        enter_time=row["enter_time"],
        end_time=row["end_time"],
    )


async def read_instance(conn: AsyncConnection, instance_id: uuid.UUID) -> InstanceRow | None:
    """The instance row without a lock (for answers after a commit)."""
    query = (
        select(*_INSTANCE_COLUMNS)
        .join(_flows, _flows.c.id == _instances.c.flow_id)
        .where(_instances.c.id == instance_id)
    )
    row = (await conn.execute(query)).first()
    return None if row is None else _instance(row)


_ENTER_FLOW = f"""
    WITH f AS (
        SELECT f.status, f.active_version_number, f.re_entry,
               (SELECT jsonb_strip_nulls(jsonb_build_object(
                    'external_id', c.external_id, 'attributes', c.attributes, 'tags', to_jsonb(c.tags),
                    'preferences', c.preferences, 'timezone', c.timezone, 'email', c.email, 'phone', c.phone))
                FROM customers c WHERE c.tenant_id = $1 AND c.external_id = $3) AS customer,
               f.re_entry = 'never' AND EXISTS (
                    SELECT 1 FROM flow_entries e WHERE e.flow_id = $2 AND e.participant_id = $3) AS entered_before
        FROM flows f WHERE f.id = $2 AND f.tenant_id = $1
    ), claim AS (
        -- NEVER: claim the participant's one entry in the ledger before inserting the instance. A concurrent first
        -- entry waits on the ledger's key here, then takes nothing, even if the first instance already ended.
        INSERT INTO flow_entries (flow_id, participant_id, tenant_id, first_enter_time)
        SELECT $2, $3, $1, $6 FROM f
        WHERE f.re_entry = 'never' AND f.status = 'active' AND f.active_version_number IS NOT NULL
            AND NOT f.entered_before
        ON CONFLICT (flow_id, participant_id) DO NOTHING
        RETURNING 1
    ), ins AS (
        INSERT INTO flow_instances (id, tenant_id, flow_id, version_number, participant_id, status, exclusive,
                                    context, current_nodes, run_revision, enter_time, update_time)
        SELECT $4, $1, $2, f.active_version_number, $3, 'running', f.re_entry <> 'always',
               $5::jsonb || CASE WHEN f.customer IS NULL THEN '{{}}'::jsonb
                                 ELSE jsonb_build_object('customer', f.customer) END,
               '[]'::jsonb, 0, $6, $6
        FROM f
        WHERE f.status = 'active' AND f.active_version_number IS NOT NULL AND NOT f.entered_before
            AND (f.re_entry <> 'never' OR EXISTS (SELECT 1 FROM claim))
        ON CONFLICT (tenant_id, flow_id, participant_id)
            WHERE exclusive AND status IN ({", ".join(f"'{s}'" for s in LIVE_INSTANCE_STATUSES)})
        DO NOTHING
        RETURNING context
    ), ledger AS (
        -- The entry ledger outlives pruned instances, so `never` holds forever (SPEC 4); `never` wrote it above.
        INSERT INTO flow_entries (flow_id, participant_id, tenant_id, first_enter_time)
        SELECT $2, $3, $1, $6 FROM ins, f WHERE f.re_entry <> 'never'
        ON CONFLICT (flow_id, participant_id) DO NOTHING
    )
    SELECT f.status, f.active_version_number, f.entered_before, (SELECT context FROM ins) AS context FROM f
"""  # noqa: S608 - the f-string splices a constant tuple


@dataclass
class Entry:
    """What entering a flow found: the flow's state, and the new instance's context when it was inserted."""

    flow_status: str
    version_number: int | None
    entered_before: bool
    context: dict[str, Any] | None  # None: not inserted (see the other fields, else a live instance exists)


async def enter_flow(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    flow_id: uuid.UUID,
    participant_id: str,
    instance_id: uuid.UUID,
    context: dict[str, Any],
    now: datetime,
) -> Entry | None:
    """Insert a running instance if the flow admits the participant, in one round trip; None: no such flow.

    One statement reads the flow and the participant's profile (merged into `context` at `customer`), applies
    the re-entry policy (`never`: no row in the entry ledger `flow_entries`, which pruning never touches;
    `always`: a non-exclusive row), inserts, and records the entry in the ledger. `ON CONFLICT
    DO NOTHING` on the partial unique index (its predicate spelled out literally, so PostgreSQL can infer the
    index) waits for a concurrent insert to commit or roll back, so twenty racing starts give one instance and
    nineteen answers without one, and no aborted transaction to clean up.
    """
    row = await (await driver(conn)).fetchrow(
        _ENTER_FLOW, tenant_id, flow_id, participant_id, instance_id, json_text(context), now
    )
    if row is None:
        return None
    return Entry(row["status"], row["active_version_number"], bool(row["entered_before"]), row["context"])


async def save_instance(
    conn: AsyncConnection,
    instance_id: uuid.UUID,
    *,
    status: str,
    current_nodes: list[str],
    context: dict[str, Any],
    exit_reason: str | None,
    now: datetime,
    finished: bool,
) -> None:
    """Write a run's outcome to the instance row (and bump its run revision)."""
    await conn.execute(
        update(_instances)
        .where(_instances.c.id == instance_id)
        .values(
            status=status,
            current_nodes=current_nodes,
            context=context,
            exit_reason=exit_reason,
            end_time=now if finished else None,
            run_revision=_instances.c.run_revision + 1,
            lease_until=None,
            update_time=now,
        )
    )


def _live_to_move(
    tenant_id: uuid.UUID, flow_id: uuid.UUID, not_on_version: int, on_version: int
) -> list[ColumnElement[bool]]:
    """The flow's live instances not on `not_on_version` (and, unless 0, on `on_version`)."""
    conditions = [
        _instances.c.tenant_id == tenant_id,
        _instances.c.flow_id == flow_id,
        _instances.c.status.in_(LIVE_INSTANCE_STATUSES),
        _instances.c.version_number != not_on_version,
    ]
    if on_version:
        conditions.append(_instances.c.version_number == on_version)
    return conditions


async def live_instance_ids(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    flow_id: uuid.UUID,
    *,
    not_on_version: int,
    on_version: int = 0,
    after: uuid.UUID | None = None,
    limit: int | None = None,
) -> list[uuid.UUID]:
    """The flow's live instances not on `not_on_version` (and, unless 0, on `on_version`), in id order: those
    after `after`, at most `limit` (a keyset page)."""
    query = select(_instances.c.id).where(*_live_to_move(tenant_id, flow_id, not_on_version, on_version))
    if after is not None:
        query = query.where(_instances.c.id > after)
    query = query.order_by(_instances.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [row.id for row in await conn.execute(query)]


async def count_live_instances(
    conn: AsyncConnection, tenant_id: uuid.UUID, flow_id: uuid.UUID, *, not_on_version: int, on_version: int = 0
) -> int:
    """How many live instances `live_instance_ids` would page through."""
    query = select(func.count()).where(*_live_to_move(tenant_id, flow_id, not_on_version, on_version))
    return int((await conn.execute(query)).scalar_one())


async def count_by_status(conn: AsyncConnection, *, timeout_ms: int) -> dict[str, int]:
    """How many instances of every tenant are in each status (the instances gauge): one pass over the
    (status, lease_until) index, cut off by PostgreSQL after `timeout_ms` (the transaction's own timeout)."""
    await conn.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(timeout_ms)})
    query = select(_instances.c.status, func.count()).group_by(_instances.c.status)
    return {str(row[0]): int(row[1]) for row in await conn.execute(query)}


async def participant_live_instances(
    conn: AsyncConnection, tenant_id: uuid.UUID, participant_id: str, flow_ids: Sequence[uuid.UUID]
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(instance id, flow id) of the participant's live instances in these flows, in id order (the lock order)."""
    if not flow_ids:
        return []
    query = select(_instances.c.id, _instances.c.flow_id).where(
        _instances.c.tenant_id == tenant_id,
        _instances.c.flow_id == any_(uuid_array(flow_ids)),
        _instances.c.participant_id == participant_id,
        _instances.c.status.in_(LIVE_INSTANCE_STATUSES),
    )
    return [(row.id, row.flow_id) for row in await conn.execute(query.order_by(_instances.c.id))]


async def move_to_version(conn: AsyncConnection, instance_id: uuid.UUID, version_number: int, now: datetime) -> None:
    """Put the instance on another version of its flow (its waits were re-armed by the caller)."""
    await conn.execute(
        update(_instances)
        .where(_instances.c.id == instance_id)
        .values(version_number=version_number, run_revision=_instances.c.run_revision + 1, update_time=now)
    )


@dataclass(frozen=True)
class CohortCount:
    """How many instances of one version that entered on one UTC day a set-wise move changed."""

    version_number: int
    enter_day: date
    count: int


def _by_cohort(moved: Any) -> Any:
    """Count the rows of `moved` (a CTE with version_number and enter_time) per version and UTC enter day."""
    day = cast(func.timezone("UTC", moved.c.enter_time), Date)
    return select(moved.c.version_number, day.label("enter_day"), func.count().label("moved")).group_by(
        moved.c.version_number, day
    )


async def move_flow_instances(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    flow_id: uuid.UUID,
    now: datetime,
    *,
    from_status: InstanceStatus,
    to_status: InstanceStatus,
    flow_status: FlowStatus,
) -> list[CohortCount]:
    """The flow's instances in `from_status` go to `to_status`, only while the flow's committed status is
    `flow_status` (checked in the same statement); returns how many moved, per version and enter day."""
    moved = (
        update(_instances)
        .where(
            _instances.c.tenant_id == tenant_id,
            _instances.c.flow_id == flow_id,
            _instances.c.status == from_status,
            exists().where(_flows.c.id == flow_id, _flows.c.status == flow_status),
        )
        .values(status=to_status, update_time=now, run_revision=_instances.c.run_revision + 1)
        .returning(_instances.c.version_number, _instances.c.enter_time)
        .cte("moved")
    )
    rows = await conn.execute(_by_cohort(moved))
    return [CohortCount(row.version_number, row.enter_day, row.moved) for row in rows]


@dataclass(frozen=True)
class ExitedInstance:
    """An instance a set-wise exit ended: its status before, and its cohort."""

    id: uuid.UUID
    status: str
    version_number: int
    enter_time: datetime


async def exit_live_instances(
    conn: AsyncConnection, tenant_id: uuid.UUID, flow_id: uuid.UUID, reason: str, now: datetime, *, limit: int
) -> list[ExitedInstance]:
    """End up to `limit` live instances of the flow as EXITED with `reason` (rows another transaction holds are
    skipped, for the next batch); returns them as they were (their waits are the caller's to cancel)."""
    batch = (
        select(_instances.c.id, _instances.c.status)
        .where(
            _instances.c.tenant_id == tenant_id,
            _instances.c.flow_id == flow_id,
            _instances.c.status.in_(LIVE_INSTANCE_STATUSES),
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("batch")
    )
    exited = await conn.execute(
        update(_instances)
        .where(_instances.c.id == batch.c.id)
        .values(
            status=InstanceStatus.EXITED,
            lease_until=None,
            exit_reason=reason,
            current_nodes=[],
            end_time=now,
            update_time=now,
            run_revision=_instances.c.run_revision + 1,
        )
        .returning(_instances.c.id, batch.c.status, _instances.c.version_number, _instances.c.enter_time)
    )
    return [ExitedInstance(row.id, row.status, row.version_number, row.enter_time) for row in exited]


async def has_live_instances(conn: AsyncConnection, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> bool:
    """Whether the flow still has a live instance."""
    query = select(_instances.c.id).where(
        _instances.c.tenant_id == tenant_id,
        _instances.c.flow_id == flow_id,
        _instances.c.status.in_(LIVE_INSTANCE_STATUSES),
    )
    return (await conn.execute(query.limit(1))).first() is not None


async def stuck_running_instances(conn: AsyncConnection, untouched_since: datetime, limit: int) -> list[uuid.UUID]:
    """Instances committed as RUNNING and not updated since `untouched_since` (at most `limit`)."""
    query = (
        select(_instances.c.id)
        .where(_instances.c.status == InstanceStatus.RUNNING, _instances.c.update_time <= untouched_since)
        .limit(limit)
    )
    return [row.id for row in await conn.execute(query)]


_PRUNE_FINISHED = text(
    f"""
    DELETE FROM flow_instances WHERE id IN (
        SELECT id FROM flow_instances
        WHERE status IN ({", ".join(f"'{s}'" for s in FINAL_INSTANCE_STATUSES)}) AND end_time < :cutoff
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    """  # noqa: S608 - the f-string splices a constant tuple
)


async def prune_finished_instances(conn: AsyncConnection, ended_before: datetime, limit: int) -> int:
    """Delete up to `limit` finished instances that ended before `ended_before` (their steps and waits go by
    cascade), skipping rows another transaction holds; returns how many."""
    deleted: int = (await conn.execute(_PRUNE_FINISHED, {"cutoff": ended_before, "batch": limit})).rowcount
    return deleted
