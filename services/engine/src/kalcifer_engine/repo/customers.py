"""Customers and the marketing rows nodes write or read (`customers`, `conversions`, `ab_assignments`, `segments`).

Profile changes, tags, conversions and sticky A/B variants are statements on the run's connection, so they
commit together with the step that asked for them or not at all. Segments are read only (the API owns them).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any
from typing import cast as typed

from kalcifer_common import segments
from kalcifer_common.db.models import AbAssignment, Conversion, Customer, Segment
from kalcifer_common.profiles import AttributePatch
from sqlalchemy import Table, Text, any_, case, cast, func, literal, literal_column, or_, select
from sqlalchemy.dialects.postgresql import ARRAY, array, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.domain.tallies import Assignment, ConversionRecorded
from kalcifer_engine.repo.connection import driver

_customers = typed(Table, Customer.__table__)
_conversions = typed(Table, Conversion.__table__)
_ab_assignments = typed(Table, AbAssignment.__table__)
_segments = typed(Table, Segment.__table__)


async def merge_profile(
    conn: AsyncConnection, tenant_id: uuid.UUID, participant_id: str, fields: Mapping[str, Any], now: datetime
) -> None:
    """Merge `fields` into the customer's attributes, creating the customer if needed; a null value removes the
    attribute, as UpsertCustomer does (`kalcifer_common.profiles`)."""
    patch = AttributePatch.of(fields)
    statement = insert(_customers).values(
        tenant_id=tenant_id, external_id=participant_id, attributes=patch.set, create_time=now, update_time=now
    )
    merged = _customers.c.attributes.op("||")(statement.excluded.attributes)
    if patch.removed:
        merged = merged.op("-")(cast(array(patch.removed, type_=Text), ARRAY(Text)))
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "external_id"], set_={"attributes": merged, "update_time": now}
    )
    await conn.execute(statement)


async def add_tag(conn: AsyncConnection, tenant_id: uuid.UUID, participant_id: str, tag: str, now: datetime) -> None:
    """Add a tag to the customer's tags (once), creating the customer if needed."""
    statement = insert(_customers).values(
        tenant_id=tenant_id, external_id=participant_id, tags=[tag], create_time=now, update_time=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "external_id"],
        set_={
            "tags": case(
                (literal(tag) == any_(_customers.c.tags), _customers.c.tags),
                else_=func.array_append(_customers.c.tags, tag),
            ),
            "update_time": now,
        },
    )
    await conn.execute(statement)


async def customer_profile(conn: AsyncConnection, tenant_id: uuid.UUID, participant_id: str) -> dict[str, Any] | None:
    """The customer profile as flows see it at `customer`, or None."""
    query = select(
        _customers.c.external_id,
        _customers.c.attributes,
        _customers.c.tags,
        _customers.c.preferences,
        _customers.c.timezone,
        _customers.c.email,
        _customers.c.phone,
    ).where(_customers.c.tenant_id == tenant_id, _customers.c.external_id == participant_id)
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    return segments.customer_profile(
        external_id=row.external_id,
        attributes=row.attributes,
        tags=row.tags or (),
        preferences=row.preferences,
        timezone=row.timezone,
        email=row.email,
        phone=row.phone,
    )


# One round trip: whether the instance converted before, the conversion (a goal once per instance), and the
# participant's A/B assignments in the flow, marking their first conversion since the assignment. The UPDATE
# re-checks `convert_time IS NULL` under the row lock, so of two concurrent conversions one alone is the first.
_INSERT_CONVERSION = """
    WITH before AS (
        SELECT EXISTS (SELECT 1 FROM conversions WHERE instance_id = $2) AS converted
    ), ins AS (
        INSERT INTO conversions (tenant_id, instance_id, flow_id, participant_id, name, revenue, kind, create_time)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (instance_id, name) WHERE kind = 'goal' DO NOTHING
        RETURNING 1
    ), assigned AS (
        SELECT node_id, variant_key, version_number, create_time FROM ab_assignments
        WHERE tenant_id = $1 AND flow_id = $3 AND participant_id = $4 AND EXISTS (SELECT 1 FROM ins)
    ), marked AS (
        UPDATE ab_assignments SET convert_time = $8
        WHERE tenant_id = $1 AND flow_id = $3 AND participant_id = $4 AND convert_time IS NULL
            AND EXISTS (SELECT 1 FROM ins)
        RETURNING node_id
    )
    SELECT (SELECT converted FROM before) AS converted_before, EXISTS (SELECT 1 FROM ins) AS inserted,
           a.node_id, a.variant_key, a.version_number, a.create_time, f.node_id IS NOT NULL AS first
    FROM (SELECT 1) AS one
    LEFT JOIN assigned a ON true
    LEFT JOIN marked f ON f.node_id = a.node_id
"""


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
) -> ConversionRecorded:
    """Record a conversion, or a reached goal: a goal counts once per instance (`uq_conversions_goal_once`), however
    many `goal_reached` nodes and goal events reach it. Returns what the analytics counters need to know."""
    rows = await (await driver(conn)).fetch(
        _INSERT_CONVERSION, tenant_id, instance_id, flow_id, participant_id, name, revenue, kind, now
    )
    assignments = tuple(
        (Assignment(row["node_id"], row["variant_key"], row["version_number"], row["create_time"]), row["first"])
        for row in rows
        if row["node_id"] is not None and row["version_number"] is not None
    )
    return ConversionRecorded(
        inserted=rows[0]["inserted"], converted_before=rows[0]["converted_before"], assignments=assignments
    )


async def has_converted(conn: AsyncConnection, instance_id: uuid.UUID) -> bool:
    """Whether the instance recorded a conversion."""
    query = select(_conversions.c.id).where(_conversions.c.instance_id == instance_id).limit(1)
    return (await conn.execute(query)).first() is not None


async def sticky_variant(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    flow_id: uuid.UUID,
    node_id: str,
    participant_id: str,
    candidate: str,
    *,
    version_number: int,
    now: datetime,
) -> tuple[str, bool]:
    """The participant's recorded variant at this node, recording `candidate` (made on `version_number` at `now`)
    when there is none yet; and whether it was recorded now."""
    statement = insert(_ab_assignments).values(
        tenant_id=tenant_id,
        flow_id=flow_id,
        node_id=node_id,
        participant_id=participant_id,
        variant_key=candidate,
        version_number=version_number,
        create_time=now,
    )
    # DO UPDATE (to itself) rather than DO NOTHING so RETURNING gives the existing row's variant too; xmax is 0
    # only on a row this statement inserted.
    upsert = statement.on_conflict_do_update(
        index_elements=["tenant_id", "flow_id", "node_id", "participant_id"],
        set_={"variant_key": _ab_assignments.c.variant_key},
    ).returning(_ab_assignments.c.variant_key, literal_column("xmax = 0").label("inserted"))
    row = (await conn.execute(upsert)).one()
    return str(row.variant_key), bool(row.inserted)


async def segment_rules(conn: AsyncConnection, tenant_id: uuid.UUID, segment_id: str) -> tuple[str, list[Any]] | None:
    """(match, rules) of the tenant's segment named by id or by name."""
    condition = _segments.c.name == segment_id
    with contextlib.suppress(ValueError):
        condition = or_(_segments.c.id == uuid.UUID(segment_id), condition)
    row = (
        await conn.execute(
            select(_segments.c.match, _segments.c.rules).where(_segments.c.tenant_id == tenant_id, condition)
        )
    ).first()
    return None if row is None else (row.match, list(row.rules or []))
