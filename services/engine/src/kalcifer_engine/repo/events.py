"""Stored events (`events`) as routing sees them: claimed once (`routed_time`), answered once (`route_result`).

The API stores events; the engine claims, answers and looks back over them, and recovery finds those whose
routing never committed (`unrouted_events`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from typing import cast as typed

from kalcifer_common.db.models import Event
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.connection import driver, json_text

_events = typed(Table, Event.__table__)

_CLAIM_EVENT = (
    "UPDATE events SET routed_time = $3 WHERE id = $1 AND tenant_id = $2 AND routed_time IS NULL RETURNING id"
)
_ROUTE_RESULT = "SELECT route_result FROM events WHERE id = $1 AND tenant_id = $2"
_SAVE_ROUTE_RESULT = "UPDATE events SET route_result = $2::jsonb WHERE id = $1"


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
    await (await driver(conn)).execute(_SAVE_ROUTE_RESULT, event_id, json_text(dict(result)))


_RECENT_EVENTS = """
    SELECT e.id, e.data FROM events e
    WHERE e.tenant_id = $1 AND e.participant_id = $2 AND e.event_type = $3 AND e.received_time >= $4
      -- not an event that already resumed a wait of this instance
      AND NOT EXISTS (SELECT 1 FROM waits w WHERE w.instance_id = $5 AND w.branch_path->>'event_id' = e.id::text)
      -- nor the event that started (or was routed to) this instance
      AND NOT coalesce(e.route_result->'instance_ids', '[]'::jsonb) ? $5::text
    ORDER BY e.received_time, e.id
    LIMIT $6
"""


async def recent_events(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    participant_id: str,
    event_type: str,
    since: datetime,
    instance_id: uuid.UUID,
    limit: int,
) -> list[tuple[uuid.UUID, dict[str, Any]]]:
    """(id, data) of the participant's events of `event_type` received since `since`, oldest first, that neither
    resumed a wait of `instance_id` already nor started or were routed to it (the lookback of a new event wait)."""
    rows = await (await driver(conn)).fetch(
        _RECENT_EVENTS, tenant_id, participant_id, event_type, since, instance_id, limit
    )
    return [(row["id"], dict(row["data"] or {})) for row in rows]


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
