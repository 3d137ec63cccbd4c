"""Every SQL statement of instance execution, on the caller's `AsyncConnection` and transaction (SPEC 9).

No ORM identity map. A run costs few round trips: it locks the instance row (one SELECT .. FOR UPDATE), fires
its wait (one conditional UPDATE), and writes its steps, new waits and instance state in one statement
(`write_run`). The statements every run executes are constant SQL sent to the asyncpg driver inside the same
transaction (`driver`); the rarer ones are SQLAlchemy Core. Statements here never commit.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from typing import cast as typed

import asyncpg
import orjson
from kalcifer_common.db.models import (
    AbAssignment,
    Conversion,
    Customer,
    Delivery,
    Event,
    ExecutionStep,
    Flow,
    FlowInstance,
    FlowVersion,
    Segment,
    Wait,
)
from kalcifer_common.statuses import LIVE_INSTANCE_STATUSES
from sqlalchemy import ColumnElement, Table, any_, case, cast, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

instances = typed(Table, FlowInstance.__table__)
steps = typed(Table, ExecutionStep.__table__)
waits = typed(Table, Wait.__table__)
flows = typed(Table, Flow.__table__)
versions = typed(Table, FlowVersion.__table__)
events = typed(Table, Event.__table__)
customers = typed(Table, Customer.__table__)
deliveries = typed(Table, Delivery.__table__)
conversions = typed(Table, Conversion.__table__)
ab_assignments = typed(Table, AbAssignment.__table__)
segments = typed(Table, Segment.__table__)

_LIVE = list(LIVE_INSTANCE_STATUSES)

# What a failing statement raises: through SQLAlchemy, or straight from the driver (the hot-path statements).
DATABASE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _with_meta(meta: dict[str, Any]) -> ColumnElement[Any]:
    """`branch_path || meta`: the wait's metadata with `meta`'s keys merged in."""
    current = func.coalesce(waits.c.branch_path, cast(literal({}, JSONB), JSONB))
    return current.op("||", return_type=JSONB)(cast(literal(meta, JSONB), JSONB))


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


_INSTANCE_COLUMNS = (
    instances.c.id,
    instances.c.tenant_id,
    instances.c.flow_id,
    instances.c.version_number,
    instances.c.participant_id,
    instances.c.status,
    instances.c.current_nodes,
    instances.c.context,
    instances.c.exit_reason,
    instances.c.enter_time,
    instances.c.end_time,
    flows.c.status.label("flow_status"),
)
_WAIT_COLUMNS = (
    waits.c.id,
    waits.c.instance_id,
    waits.c.node_id,
    waits.c.kind,
    waits.c.status,
    waits.c.fire_time,
    waits.c.event_type,
    waits.c.event_filter,
    waits.c.branch_path,
)


async def driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under `conn`, inside the same transaction.

    The statements every run executes (lock, fire, write) go straight to the driver with constant SQL: asyncpg
    caches their prepared forms per connection, and SQLAlchemy's per-statement compile and cache-key work
    (about 0.15 ms each, measured) stays off the hot path (SPEC 9). JSONB goes in as JSON text and comes out
    decoded by the codec SQLAlchemy installed on the connection.
    """
    raw = await conn.get_raw_connection()
    adapter = raw.dbapi_connection
    # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement; a statement sent to the driver
    # before that would run outside the transaction (autocommit). Start it now: the BEGIN it would send anyway.
    if getattr(adapter, "_transaction", None) is None and conn.in_transaction():
        start = getattr(adapter, "_start_transaction", None)
        if start is not None:
            await start()
        else:  # a future SQLAlchemy without the hook: any statement through it starts the transaction
            await conn.execute(select(literal(1)))
    return raw.driver_connection


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
        select(*_INSTANCE_COLUMNS).join(flows, flows.c.id == instances.c.flow_id).where(instances.c.id == instance_id)
    )
    row = (await conn.execute(query)).first()
    return None if row is None else _instance(row)


async def load_graph(conn: AsyncConnection, flow_id: uuid.UUID, version_number: int) -> dict[str, Any] | None:
    """The stored graph of one version."""
    query = select(versions.c.graph).where(versions.c.flow_id == flow_id, versions.c.version_number == version_number)
    graph: dict[str, Any] | None = (await conn.execute(query)).scalar_one_or_none()
    return graph


_ENTER_FLOW = f"""
    WITH f AS (
        SELECT f.status, f.active_version_number, f.re_entry,
               (SELECT jsonb_strip_nulls(jsonb_build_object(
                    'external_id', c.external_id, 'attributes', c.attributes, 'tags', to_jsonb(c.tags),
                    'preferences', c.preferences, 'timezone', c.timezone, 'email', c.email, 'phone', c.phone))
                FROM customers c WHERE c.tenant_id = $1 AND c.external_id = $3) AS customer,
               f.re_entry = 'never' AND EXISTS (
                    SELECT 1 FROM flow_instances p
                    WHERE p.tenant_id = $1 AND p.flow_id = $2 AND p.participant_id = $3) AS entered_before
        FROM flows f WHERE f.id = $2 AND f.tenant_id = $1
    ), ins AS (
        INSERT INTO flow_instances (id, tenant_id, flow_id, version_number, participant_id, status, exclusive,
                                    context, current_nodes, run_revision, enter_time, update_time)
        SELECT $4, $1, $2, f.active_version_number, $3, 'running', f.re_entry <> 'always',
               $5::jsonb || CASE WHEN f.customer IS NULL THEN '{{}}'::jsonb
                                 ELSE jsonb_build_object('customer', f.customer) END,
               '[]'::jsonb, 0, $6, $6
        FROM f
        WHERE f.status = 'active' AND f.active_version_number IS NOT NULL AND NOT f.entered_before
        ON CONFLICT (tenant_id, flow_id, participant_id)
            WHERE exclusive AND status IN ({", ".join(f"'{s}'" for s in LIVE_INSTANCE_STATUSES)})
        DO NOTHING
        RETURNING context
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
    the re-entry policy (`never`: no previous instance; `always`: a non-exclusive row) and inserts. `ON CONFLICT
    DO NOTHING` on the partial unique index (its predicate spelled out literally, so PostgreSQL can infer the
    index) waits for a concurrent insert to commit or roll back, so twenty racing starts give one instance and
    nineteen answers without one, and no aborted transaction to clean up.
    """
    row = await (await driver(conn)).fetchrow(
        _ENTER_FLOW, tenant_id, flow_id, participant_id, instance_id, _json_text(context), now
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
        update(instances)
        .where(instances.c.id == instance_id)
        .values(
            status=status,
            current_nodes=current_nodes,
            context=context,
            exit_reason=exit_reason,
            end_time=now if finished else None,
            run_revision=instances.c.run_revision + 1,
            lease_until=None,
            update_time=now,
        )
    )


_STEP_COLUMNS = (
    "id uuid, tenant_id uuid, instance_id uuid, node_id text, node_type text, version_number int, status text, "
    "input jsonb, output jsonb, error text, attempt int, start_time timestamptz, end_time timestamptz"
)
_WAIT_ROW_COLUMNS = (
    "id uuid, tenant_id uuid, instance_id uuid, node_id text, kind text, status text, fire_time timestamptz, "
    "event_type text, event_filter text, participant_id text, branch_path jsonb, create_time timestamptz"
)


def _names(columns: str) -> str:
    return ", ".join(column.split()[0] for column in columns.split(", "))


# One statement, one round trip: the run's steps (in the order they ran, so `seq` follows it), its new waits and
# the instance row. Data-modifying CTEs always run, whether or not the outer statement reads them.
_WRITE_RUN = f"""
    WITH new_steps AS (
        INSERT INTO execution_steps ({_names(_STEP_COLUMNS)})
        SELECT {_names(_STEP_COLUMNS)}
        FROM jsonb_to_recordset($1::jsonb) AS s({_STEP_COLUMNS}, ord int)
        ORDER BY ord
        RETURNING 1
    ), new_waits AS (
        INSERT INTO waits ({_names(_WAIT_ROW_COLUMNS)})
        SELECT {_names(_WAIT_ROW_COLUMNS)} FROM jsonb_to_recordset($2::jsonb) AS w({_WAIT_ROW_COLUMNS})
        RETURNING 1
    )
    UPDATE flow_instances
    SET status = $3, current_nodes = $4::jsonb, context = $5::jsonb, exit_reason = $6, end_time = $7,
        run_revision = run_revision + 1, lease_until = NULL, update_time = $8
    WHERE id = $9
"""  # noqa: S608 - the f-string splices the constant column lists above


def _json_text(value: Any) -> str:
    # asyncpg hands back its own UUID type, which orjson does not know; str() is its canonical form.
    return orjson.dumps(value, default=str).decode()


async def write_run(
    conn: AsyncConnection,
    instance_id: uuid.UUID,
    *,
    steps: Sequence[Mapping[str, Any]],
    new_waits: Sequence[Mapping[str, Any]],
    status: str,
    current_nodes: list[str],
    context: dict[str, Any],
    exit_reason: str | None,
    now: datetime,
    finished: bool,
) -> None:
    """Write a run's steps, new waits and the instance's new state in one statement."""
    await (await driver(conn)).execute(
        _WRITE_RUN,
        _json_text([{**step, "ord": n} for n, step in enumerate(steps)]),
        _json_text(list(new_waits)),
        status,
        _json_text(current_nodes),
        _json_text(context),
        exit_reason,
        now if finished else None,
        now,
        instance_id,
    )


_WAIT_FIELDS = "id, instance_id, node_id, kind, status, fire_time, event_type, event_filter, branch_path"
_FIRE_WAIT = f"""
    UPDATE waits SET status = 'fired', resolved_time = $3, branch_path = coalesce(branch_path, '{{}}') || $4::jsonb
    WHERE id = $1 AND instance_id = $2 AND status = 'pending'
      AND (CASE WHEN $5 THEN kind = 'event' ELSE fire_time <= $3 END)
    RETURNING {_WAIT_FIELDS}
"""  # noqa: S608 - constant column list
_GET_WAIT = f"SELECT {_WAIT_FIELDS} FROM waits WHERE id = $1"  # noqa: S608 - constant column list


def _wait_record(row: Any) -> WaitRow:
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
    by_event: bool,
    now: datetime,
    meta: dict[str, Any],
) -> WaitRow | None:
    """Mark a pending wait fired when this resume may fire it (an event for an event wait; a due timer).

    None when the wait is not pending, belongs to another instance, is of the other kind, or is not yet due.
    """
    row = await (await driver(conn)).fetchrow(_FIRE_WAIT, wait_id, instance_id, now, _json_text(meta), by_event)
    return None if row is None else _wait_record(row)


async def get_wait(conn: AsyncConnection, wait_id: uuid.UUID) -> WaitRow | None:
    """One wait row, whatever its status."""
    row = await (await driver(conn)).fetchrow(_GET_WAIT, wait_id)
    return None if row is None else _wait_record(row)


_PENDING_EVENT_WAITS = f"""
    SELECT {_WAIT_FIELDS} FROM waits
    WHERE tenant_id = $1 AND participant_id = $2 AND event_type = $3 AND status = 'pending' AND kind = 'event'
    ORDER BY instance_id, create_time, id
"""  # noqa: S608 - constant column list


async def pending_event_waits(
    conn: AsyncConnection, tenant_id: uuid.UUID, participant_id: str, event_type: str
) -> list[WaitRow]:
    """The participant's pending waits for `event_type`, in instance order (the lock order of every batch)."""
    rows = await (await driver(conn)).fetch(_PENDING_EVENT_WAITS, tenant_id, participant_id, event_type)
    return [_wait_record(row) for row in rows]


_CLAIM_EVENT = (
    "UPDATE events SET routed_time = $3 WHERE id = $1 AND tenant_id = $2 AND routed_time IS NULL RETURNING id"
)
_ROUTE_RESULT = "SELECT route_result FROM events WHERE id = $1 AND tenant_id = $2"
_SAVE_ROUTE_RESULT = "UPDATE events SET route_result = $2::jsonb WHERE id = $1"
_ENTRY_FLOWS = """
    SELECT f.id, f.active_version_number FROM flows f
    JOIN flow_versions v ON v.flow_id = f.id AND v.version_number = f.active_version_number
    WHERE f.tenant_id = $1 AND f.status = 'active' AND v.graph @> $2::jsonb
    ORDER BY f.id
"""


async def claim_event(conn: AsyncConnection, tenant_id: uuid.UUID, event_id: uuid.UUID, now: datetime) -> bool:
    """Mark a stored event routed (in this transaction); False when it is routed already or not stored."""
    return await (await driver(conn)).fetchval(_CLAIM_EVENT, event_id, tenant_id, now) is not None


async def stored_route_result(
    conn: AsyncConnection, tenant_id: uuid.UUID, event_id: uuid.UUID
) -> tuple[bool, dict[str, Any]]:
    """(whether the event is stored, the answer its routing recorded)."""
    row = await (await driver(conn)).fetchrow(_ROUTE_RESULT, event_id, tenant_id)
    if row is None:
        return False, {}
    return True, dict(row["route_result"] or {})


async def save_route_result(conn: AsyncConnection, event_id: uuid.UUID, result: Mapping[str, Any]) -> None:
    """Record what routing the event did."""
    await (await driver(conn)).execute(_SAVE_ROUTE_RESULT, event_id, _json_text(dict(result)))


async def flows_with_entry(
    conn: AsyncConnection, tenant_id: uuid.UUID, shape: Mapping[str, Any]
) -> list[tuple[uuid.UUID, int]]:
    """Active flows of the tenant whose active graph contains `shape` (JSONB containment), in id order."""
    rows = await (await driver(conn)).fetch(_ENTRY_FLOWS, tenant_id, _json_text(dict(shape)))
    return [(row["id"], row["active_version_number"]) for row in rows]


async def merge_wait_meta(conn: AsyncConnection, wait_id: uuid.UUID, meta: dict[str, Any]) -> None:
    """Merge keys into a wait's metadata (e.g. an event held while the flow is paused)."""
    await conn.execute(update(waits).where(waits.c.id == wait_id).values(branch_path=_with_meta(meta)))


async def cancel_pending_waits(conn: AsyncConnection, instance_id: uuid.UUID, now: datetime) -> list[uuid.UUID]:
    """Cancel every pending wait of an instance; returns the ids of those that had a timer."""
    statement = (
        update(waits)
        .where(waits.c.instance_id == instance_id, waits.c.status == "pending")
        .values(status="cancelled", resolved_time=now)
        .returning(waits.c.id, waits.c.fire_time)
    )
    return [row.id for row in await conn.execute(statement) if row.fire_time is not None]


async def pending_waits(conn: AsyncConnection, instance_id: uuid.UUID) -> list[WaitRow]:
    """The pending waits of an instance."""
    query = select(*_WAIT_COLUMNS).where(waits.c.instance_id == instance_id, waits.c.status == "pending")
    return [_wait(row) for row in await conn.execute(query.order_by(waits.c.create_time, waits.c.id))]


_INSERT_DELIVERY = """
    WITH k AS (
        SELECT $9 || ':v' || (count(*) + 1)::text AS key FROM deliveries WHERE instance_id = $3 AND node_id = $4
    ), ins AS (
        INSERT INTO deliveries (id, tenant_id, instance_id, node_id, participant_id, channel, template_id, payload,
                                idempotency_key, create_time, update_time)
        SELECT $1, $2, $3, $4, $5, $6, $7, $8::jsonb, k.key, $10, $10 FROM k
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id
    )
    SELECT (SELECT id FROM ins) AS id, (SELECT key FROM k) AS key
"""


async def insert_delivery(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    instance_id: uuid.UUID,
    node_id: str,
    participant_id: str,
    channel: str,
    template_id: str | None,
    payload: Mapping[str, Any],
    key_prefix: str,
    now: datetime,
) -> tuple[uuid.UUID | None, str]:
    """A pending delivery keyed `key_prefix:v<visit>`; returns (its id, or None if the key existed; the key).

    The visit number (how many deliveries this node already made for this instance, plus one) tells apart two
    arrivals at the same node (a join), while a re-run of the same step after a crash sees the same committed
    count and so the same key: `ON CONFLICT DO NOTHING` then makes no second delivery.
    """
    row = await (await driver(conn)).fetchrow(
        _INSERT_DELIVERY,
        uuid.uuid4(),
        tenant_id,
        instance_id,
        node_id,
        participant_id,
        channel,
        template_id,
        _json_text(dict(payload)),
        key_prefix,
        now,
    )
    return row["id"], str(row["key"])


async def count_deliveries(
    conn: AsyncConnection, tenant_id: uuid.UUID, participant_id: str, channel: str, since: datetime
) -> int:
    """Deliveries to a participant on a channel ("any" = all channels) created at or after `since`."""
    query = (
        select(func.count())
        .select_from(deliveries)
        .where(
            deliveries.c.tenant_id == tenant_id,
            deliveries.c.participant_id == participant_id,
            deliveries.c.create_time >= since,
        )
    )
    if channel != "any":
        query = query.where(deliveries.c.channel == channel)
    return int((await conn.execute(query)).scalar_one())


async def merge_profile(
    conn: AsyncConnection, tenant_id: uuid.UUID, participant_id: str, fields: Mapping[str, Any], now: datetime
) -> None:
    """Merge `fields` into the customer's attributes, creating the customer if needed."""
    values = dict(fields)
    statement = insert(customers).values(
        tenant_id=tenant_id, external_id=participant_id, attributes=values, create_time=now, update_time=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "external_id"],
        set_={"attributes": customers.c.attributes.op("||")(statement.excluded.attributes), "update_time": now},
    )
    await conn.execute(statement)


async def add_tag(conn: AsyncConnection, tenant_id: uuid.UUID, participant_id: str, tag: str, now: datetime) -> None:
    """Add a tag to the customer's tags (once), creating the customer if needed."""
    statement = insert(customers).values(
        tenant_id=tenant_id, external_id=participant_id, tags=[tag], create_time=now, update_time=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "external_id"],
        set_={
            "tags": case(
                (literal(tag) == any_(customers.c.tags), customers.c.tags),
                else_=func.array_append(customers.c.tags, tag),
            ),
            "update_time": now,
        },
    )
    await conn.execute(statement)


async def customer_preferences(conn: AsyncConnection, tenant_id: uuid.UUID, participant_id: str) -> dict[str, Any]:
    """The customer's preferences ({} without a profile)."""
    query = select(customers.c.preferences).where(
        customers.c.tenant_id == tenant_id, customers.c.external_id == participant_id
    )
    found: dict[str, Any] | None = (await conn.execute(query)).scalar_one_or_none()
    return dict(found or {})


async def insert_conversion(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    instance_id: uuid.UUID,
    flow_id: uuid.UUID,
    participant_id: str,
    name: str,
    revenue: Decimal | None,
    kind: str,
    now: datetime,
) -> None:
    """Record a conversion or a reached goal."""
    await conn.execute(
        insert(conversions).values(
            tenant_id=tenant_id,
            instance_id=instance_id,
            flow_id=flow_id,
            participant_id=participant_id,
            name=name,
            revenue=revenue,
            kind=kind,
            create_time=now,
        )
    )


async def sticky_variant(
    conn: AsyncConnection, tenant_id: uuid.UUID, flow_id: uuid.UUID, node_id: str, participant_id: str, candidate: str
) -> str:
    """The participant's recorded variant at this node, recording `candidate` when there is none yet."""
    statement = insert(ab_assignments).values(
        tenant_id=tenant_id, flow_id=flow_id, node_id=node_id, participant_id=participant_id, variant_key=candidate
    )
    # DO UPDATE (to itself) rather than DO NOTHING so RETURNING gives the existing row's variant too.
    upsert = statement.on_conflict_do_update(
        index_elements=["tenant_id", "flow_id", "node_id", "participant_id"],
        set_={"variant_key": ab_assignments.c.variant_key},
    ).returning(ab_assignments.c.variant_key)
    return str((await conn.execute(upsert)).scalar_one())


async def segment_rules(conn: AsyncConnection, tenant_id: uuid.UUID, segment_id: str) -> tuple[str, list[Any]] | None:
    """(match, rules) of the tenant's segment named by id or by name."""
    condition = segments.c.name == segment_id
    with contextlib.suppress(ValueError):
        condition = or_(segments.c.id == uuid.UUID(segment_id), condition)
    row = (
        await conn.execute(
            select(segments.c.match, segments.c.rules).where(segments.c.tenant_id == tenant_id, condition)
        )
    ).first()
    return None if row is None else (row.match, list(row.rules or []))


async def customer_profile(conn: AsyncConnection, tenant_id: uuid.UUID, participant_id: str) -> dict[str, Any] | None:
    """The customer profile as flows see it at `customer`, or None."""
    query = select(
        customers.c.external_id,
        customers.c.attributes,
        customers.c.tags,
        customers.c.preferences,
        customers.c.timezone,
        customers.c.email,
        customers.c.phone,
    ).where(customers.c.tenant_id == tenant_id, customers.c.external_id == participant_id)
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    profile = {
        "external_id": row.external_id,
        "attributes": dict(row.attributes or {}),
        "tags": list(row.tags or []),
        "preferences": dict(row.preferences or {}),
    }
    for key in ("timezone", "email", "phone"):
        if getattr(row, key):
            profile[key] = getattr(row, key)
    return profile
