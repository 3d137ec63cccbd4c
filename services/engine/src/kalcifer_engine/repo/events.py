"""Stored events (`events`) as routing sees them: claimed once (`routed_time`), answered once (`route_result`).

The API stores events; the engine claims, answers and looks back over them, and recovery finds those whose
routing never committed (`unrouted_events`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from typing import cast as typed

from kalcifer_common.db.models import Event
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.connection import driver, json_text

_events = typed(Table, Event.__table__)

_ROUTE_RESULT = "SELECT route_result FROM events WHERE id = $1 AND tenant_id = $2"
_SAVE_ROUTE_RESULT = "UPDATE events SET route_result = $2::jsonb WHERE id = $1"


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
    await (await driver(conn)).execute(_SAVE_ROUTE_RESULT, event_id, json_text(dict(result)))


# One round trip for every wait a transaction armed: each wait's candidates in order, `ord` its position.
_RECENT_EVENTS = """
    SELECT w.ord, e.id, e.data
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::uuid[]) WITH ORDINALITY
         AS w(tenant_id, participant_id, event_type, since, instance_id, ord)
    CROSS JOIN LATERAL (
        SELECT e.id, e.data, e.received_time FROM events e
        WHERE e.tenant_id = w.tenant_id AND e.participant_id = w.participant_id AND e.event_type = w.event_type
          AND e.received_time >= w.since
          -- not an event that already resumed a wait of this instance
          AND NOT EXISTS (
              SELECT 1 FROM waits x WHERE x.instance_id = w.instance_id AND x.branch_path->>'event_id' = e.id::text
          )
          -- nor the event that started (or was routed to) this instance
          AND NOT coalesce(e.route_result->'instance_ids', '[]'::jsonb) ? w.instance_id::text
        ORDER BY e.received_time, e.id
        LIMIT $6
    ) e
    ORDER BY w.ord, e.received_time, e.id
"""


@dataclass(frozen=True)
class Lookback:
    """A new event wait's lookback: `participant_id`'s events of `event_type` in `tenant_id` since `since`, for
    the wait of `instance_id`."""

    tenant_id: uuid.UUID
    participant_id: str
    event_type: str
    since: datetime
    instance_id: uuid.UUID


async def recent_events(
    conn: AsyncConnection, lookbacks: Sequence[Lookback], *, limit: int
) -> list[list[tuple[uuid.UUID, dict[str, Any]]]]:
    """For each lookback, in order: (id, data) of the events it finds, oldest first, at most `limit`, leaving out
    those that already resumed a wait of its instance or started or were routed to it. One statement for all."""
    found: list[list[tuple[uuid.UUID, dict[str, Any]]]] = [[] for _ in lookbacks]
    if not lookbacks:
        return found
    rows = await (await driver(conn)).fetch(
        _RECENT_EVENTS,
        [each.tenant_id for each in lookbacks],
        [each.participant_id for each in lookbacks],
        [each.event_type for each in lookbacks],
        [each.since for each in lookbacks],
        [each.instance_id for each in lookbacks],
        limit,
    )
    for row in rows:
        found[row["ord"] - 1].append((row["id"], dict(row["data"] or {})))
    return found


@dataclass(frozen=True)
class StoredEvent:
    """An event row as routing needs it."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    participant_id: str
    event_type: str
    data: dict[str, Any]


async def unrouted_events(conn: AsyncConnection, received_before: datetime, limit: int) -> list[StoredEvent]:
    """Events received before `received_before` and never routed, oldest first, at most `limit`."""
    query = (
        select(_events.c.id, _events.c.tenant_id, _events.c.participant_id, _events.c.event_type, _events.c.data)
        .where(_events.c.routed_time.is_(None), _events.c.received_time <= received_before)
        .order_by(_events.c.received_time)
        .limit(limit)
    )
    return [
        StoredEvent(row.id, row.tenant_id, row.participant_id, row.event_type, row.data or {})
        for row in await conn.execute(query)
    ]
