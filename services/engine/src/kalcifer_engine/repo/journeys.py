"""Journeys (`journeys`), read-only for the engine: the governance a journey puts on its flow's sends, and the
exit criteria and goals that ingested events are matched against (SPEC 7).

A flow is governed by the newest journey wrapping it that is not a draft and not archived.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.repo.connection import driver

_RULES_OF_FLOW = """
    SELECT id, frequency_cap, quiet_hours FROM journeys
    WHERE tenant_id = $1 AND flow_id = $2 AND status IN ('active', 'paused')
    ORDER BY update_time DESC, id
    LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class GovernanceRow:
    """A journey's frequency cap and quiet hours, as stored."""

    journey_id: uuid.UUID
    frequency_cap: dict[str, Any] | None
    quiet_hours: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ListeningJourney:
    """A journey with exit criteria or goals on one event type: `exits` and `goals` are those of that type."""

    journey_id: uuid.UUID
    flow_id: uuid.UUID
    exits: tuple[dict[str, Any], ...]
    goals: tuple[dict[str, Any], ...]


async def governance_of_flow(conn: AsyncConnection, tenant_id: uuid.UUID, flow_id: uuid.UUID) -> GovernanceRow | None:
    """The governance of the journey wrapping the flow, or None when no live journey wraps it."""
    row = await (await driver(conn)).fetchrow(_RULES_OF_FLOW, tenant_id, flow_id)
    if row is None:
        return None
    return GovernanceRow(row["id"], row["frequency_cap"], row["quiet_hours"])


def listening_journey(row: Any, event_type: str) -> ListeningJourney:
    """A journey row (id, flow_id, exit_criteria, goals) with its exit criteria and goals on `event_type`."""
    return ListeningJourney(
        row["id"], row["flow_id"], _of_type(row["exit_criteria"], event_type), _of_type(row["goals"], event_type)
    )


def _of_type(items: Sequence[Any] | None, event_type: str) -> tuple[dict[str, Any], ...]:
    return tuple(item for item in items or () if isinstance(item, dict) and item.get("event_type") == event_type)
