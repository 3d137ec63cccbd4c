"""Stored events (`events`) as routing sees them: claimed once (`routed_time`), answered once (`route_result`).

The API stores events; the engine only claims, answers and looks back over them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.connection import driver, json_text

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
