"""Scheduled journeys: at its entry schedule's cron minute, a journey's audience enters its flow.

Each active journey with an entry schedule and an audience whose cron fired this minute or the previous one
(`kalcifer_common.cron`, on the schedule's timezone's wall clock, daylight saving time included): the audience's
members who are not in the journey's flow start it. Membership is `kalcifer_common.segments`. "Not in" is: no
live instance (unless the re-entry policy is `always`), and, when the policy is `never`, no row in the entry
ledger `flow_entries` (which outlives pruned instances). Each StartInstance carries the request id
`journey:<journey>:<slot>:<participant>`, so two replicas, a retried run or a slot seen twice start one instance.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kalcifer.engine.v1 import engine_pb2_grpc
from kalcifer_common import segments
from kalcifer_common.cron import CronSchedule
from kalcifer_common.logging import get_logger
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kalcifer_scheduler.entries.engine_starts import StartOutcome, start_instance

_log = get_logger(__name__)

_PAGE = 500

_SCHEDULED_JOURNEYS = text(
    """
    SELECT j.id, j.tenant_id, j.flow_id, j.re_entry, j.audience_segment_id, j.entry_schedule
    FROM journeys j JOIN flows f ON f.id = j.flow_id
    WHERE j.status = 'active' AND f.status = 'active'
      AND j.entry_schedule IS NOT NULL AND j.audience_segment_id IS NOT NULL
    """
)

_SEGMENT = text("SELECT match, rules FROM segments WHERE id = :id AND tenant_id = :tenant")

# Customers after `after` (keyset on id), with whether they have a live instance of the flow and ever entered it.
_AUDIENCE = text(
    """
    SELECT c.id, c.external_id, c.attributes, c.tags, c.preferences, c.timezone, c.email, c.phone,
        EXISTS (SELECT 1 FROM flow_instances i
         WHERE i.tenant_id = c.tenant_id AND i.flow_id = :flow AND i.participant_id = c.external_id
           AND i.status IN ('running', 'waiting', 'paused')) AS live,
        EXISTS (SELECT 1 FROM flow_entries e WHERE e.flow_id = :flow AND e.participant_id = c.external_id)
            AS ever_entered
    FROM customers c
    WHERE c.tenant_id = :tenant AND c.id > :after
    ORDER BY c.id
    LIMIT :page
    """
)


@dataclass(frozen=True, slots=True)
class _Slot:
    """One journey's schedule firing at one minute: its audience enters its flow (at every trigger node)."""

    tenant_id: uuid.UUID
    flow_id: uuid.UUID
    re_entry: str
    segment_id: uuid.UUID
    key: str  # `journey:<journey>:<slot minute>`; a participant's request id is `<key>:<participant>`


class ScheduledJourneys:
    """Enters the audiences of journeys whose entry schedule fired."""

    def __init__(self, db: AsyncEngine, engine: engine_pb2_grpc.EngineServiceAsyncStub) -> None:
        self._db = db
        self._engine = engine

    async def run_once(self, now: datetime, *, budget: int) -> int:
        """Enter the audience of every journey whose schedule fired at `now`'s minute or the one before, starting
        at most `budget` instances; returns how many started."""
        started = 0
        for slot in await self._slots(now):
            if started >= budget:
                break
            started += await self._enter(slot, budget - started)
        return started

    async def _slots(self, now: datetime) -> list[_Slot]:
        """Journeys whose schedule fired this minute or the one before (a run that came late still counts)."""
        async with self._db.connect() as connection:
            rows = (await connection.execute(_SCHEDULED_JOURNEYS)).all()
        this_minute = now.astimezone(UTC).replace(second=0, microsecond=0)
        slots = []
        for row in rows:
            schedule = row.entry_schedule or {}
            try:
                cron = CronSchedule.parse(str(schedule.get("cron", "")))
                zone = ZoneInfo(str(schedule.get("timezone") or "UTC"))
            except (ValueError, ZoneInfoNotFoundError) as error:
                _log.warning("journey entry schedule unusable", journey_id=str(row.id), error=str(error))
                continue
            for minute in (this_minute - timedelta(minutes=1), this_minute):
                if cron.fires_at(minute, zone):
                    slots.append(
                        _Slot(
                            row.tenant_id,
                            row.flow_id,
                            row.re_entry,
                            row.audience_segment_id,
                            key=f"journey:{row.id}:{minute.strftime('%Y-%m-%dT%H:%MZ')}",
                        )
                    )
        return slots

    async def _enter(self, slot: _Slot, budget: int) -> int:
        async with self._db.connect() as connection:
            segment = (await connection.execute(_SEGMENT, {"id": slot.segment_id, "tenant": slot.tenant_id})).first()
        if segment is None:
            return 0
        started = 0
        after = uuid.UUID(int=0)
        while started < budget:
            async with self._db.connect() as connection:
                rows = (
                    await connection.execute(
                        _AUDIENCE, {"tenant": slot.tenant_id, "flow": slot.flow_id, "after": after, "page": _PAGE}
                    )
                ).all()
            for row in rows:
                # Re-entry "always" enters members again while they are still in.
                if (row.live and slot.re_entry != "always") or (slot.re_entry == "never" and row.ever_entered):
                    continue
                profile = segments.customer_profile(
                    external_id=row.external_id,
                    attributes=row.attributes,
                    tags=row.tags or (),
                    preferences=row.preferences,
                    timezone=row.timezone,
                    email=row.email,
                    phone=row.phone,
                )
                if not segments.matches(segment.rules or [], segment.match, profile):
                    continue
                outcome = await start_instance(
                    self._engine,
                    tenant_id=slot.tenant_id,
                    flow_id=slot.flow_id,
                    participant_id=row.external_id,
                    entry_node_id="",
                    request_id=f"{slot.key}:{row.external_id}",
                )
                if outcome == StartOutcome.FAILED:
                    return started
                started += outcome == StartOutcome.STARTED
            if len(rows) < _PAGE:
                break
            after = rows[-1].id
        return started
