"""Scheduled entries on the `flow_triggers` queue: segment members enter flows and journeys.

Every run (an arq cron job each minute, unique across replicas):
- each active flow whose active version has a `segment_entry` trigger: the segment's members who are not in the
  flow start at that trigger;
- each active journey with an entry schedule and an audience whose cron fired this minute or the previous one
  (`kalcifer_common.cron`, on the schedule's timezone's wall clock, daylight saving time included): the audience's
  members who are not in the journey's flow start it.

Membership is `kalcifer_common.segments` (the one implementation the API and engine use too). "Not in" is: no
live instance, or, when the re-entry policy is `never`, no row in the entry ledger `flow_entries` (which outlives
pruned instances). Each StartInstance carries a request id
naming the entry (flow and node and how many instances the participant had, or journey and schedule slot) and the
participant, so two replicas, a retried run or a slot seen twice start one instance. The engine's unique
live-instance index stays the final guard (ALREADY_EXISTS is taken as "already in").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer_common import segments
from kalcifer_common.cron import CronSchedule
from kalcifer_common.logging import get_logger
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_log = get_logger(__name__)

_PAGE = 500
_MAX_STARTS_PER_RUN = 10_000

_ENTRY_FLOWS = text(
    """
    SELECT f.id AS flow_id, f.tenant_id, f.re_entry, v.graph
    FROM flows f JOIN flow_versions v ON v.flow_id = f.id AND v.version_number = f.active_version_number
    WHERE f.status = 'active' AND v.graph::text LIKE '%segment_entry%'
    """
)

_SEGMENT = text("SELECT match, rules FROM segments WHERE id = :id AND tenant_id = :tenant")

# Customers after `after` (keyset on id) with how many instances of this flow they ever had and whether one is live.
_CANDIDATES = text(
    """
    SELECT c.id, c.external_id, c.attributes, c.tags, c.preferences, c.timezone, c.email, c.phone,
        (SELECT count(*) FROM flow_instances i
         WHERE i.tenant_id = c.tenant_id AND i.flow_id = :flow AND i.participant_id = c.external_id) AS entered,
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


_SCHEDULED_JOURNEYS = text(
    """
    SELECT j.id, j.tenant_id, j.flow_id, j.re_entry, j.audience_segment_id, j.entry_schedule
    FROM journeys j JOIN flows f ON f.id = j.flow_id
    WHERE j.status = 'active' AND f.status = 'active'
      AND j.entry_schedule IS NOT NULL AND j.audience_segment_id IS NOT NULL
    """
)


@dataclass(frozen=True, slots=True)
class _EntryPoint:
    """Where members of a segment enter: a flow (at one trigger node, or all when empty) under a re-entry policy."""

    tenant_id: uuid.UUID
    flow_id: uuid.UUID
    re_entry: str
    node_id: str
    segment_id: str
    # Request ids are `<key>:<participant>`, plus `:<instances they had>` when the key has no slot in it.
    key: str
    per_generation: bool

    def request_id(self, participant_id: str, entered: int) -> str:
        """The StartInstance request id of this participant's entry here."""
        base = f"{self.key}:{participant_id}"
        return f"{base}:{entered}" if self.per_generation else base


class ScheduledEntries:
    """Starts segment_entry flows for their segment's members who are not in yet."""

    def __init__(self, db: AsyncEngine, engine: engine_pb2_grpc.EngineServiceAsyncStub) -> None:
        self._db = db
        self._engine = engine

    async def run_once(self, now: datetime | None = None) -> int:
        """One pass over every segment_entry flow and scheduled journey; returns how many instances started."""
        started = 0
        points = await self._entry_points() + await self._journey_points(now or datetime.now(UTC))
        for entry in points:
            if started >= _MAX_STARTS_PER_RUN:
                break
            started += await self._enter(entry, _MAX_STARTS_PER_RUN - started)
        if started:
            _log.info("segment entries started", started=started)
        return started

    async def _entry_points(self) -> list[_EntryPoint]:
        async with self._db.connect() as connection:
            rows = (await connection.execute(_ENTRY_FLOWS)).all()
        points = []
        for row in rows:
            for node in (row.graph or {}).get("nodes", []):
                config = node.get("config") or {}
                if node.get("type") == "segment_entry" and isinstance(config.get("segment_id"), str):
                    node_id = str(node.get("id"))
                    points.append(
                        _EntryPoint(
                            row.tenant_id,
                            row.flow_id,
                            row.re_entry,
                            node_id,
                            config["segment_id"],
                            key=f"segment_entry:{row.flow_id}:{node_id}",
                            per_generation=True,
                        )
                    )
        return points

    async def _journey_points(self, now: datetime) -> list[_EntryPoint]:
        """Journeys whose schedule fired this minute or the one before (a run that came late still counts)."""
        async with self._db.connect() as connection:
            rows = (await connection.execute(_SCHEDULED_JOURNEYS)).all()
        this_minute = now.astimezone(UTC).replace(second=0, microsecond=0)
        points = []
        for row in rows:
            schedule = row.entry_schedule or {}
            try:
                cron = CronSchedule.parse(str(schedule.get("cron", "")))
                zone = ZoneInfo(str(schedule.get("timezone") or "UTC"))
            except (ValueError, ZoneInfoNotFoundError) as error:
                _log.warning("journey entry schedule unusable", journey_id=str(row.id), error=str(error))
                continue
            for slot in (this_minute - timedelta(minutes=1), this_minute):
                if cron.fires_at(slot, zone):
                    points.append(
                        _EntryPoint(
                            row.tenant_id,
                            row.flow_id,
                            row.re_entry,
                            "",
                            str(row.audience_segment_id),
                            key=f"journey:{row.id}:{slot.strftime('%Y-%m-%dT%H:%MZ')}",
                            per_generation=False,
                        )
                    )
        return points

    async def _enter(self, entry: _EntryPoint, budget: int) -> int:
        try:
            segment_id = uuid.UUID(entry.segment_id)
        except ValueError:
            return 0
        async with self._db.connect() as connection:
            segment = (await connection.execute(_SEGMENT, {"id": segment_id, "tenant": entry.tenant_id})).first()
        if segment is None:
            return 0
        started = 0
        after = uuid.UUID(int=0)
        while started < budget:
            async with self._db.connect() as connection:
                rows = (
                    await connection.execute(
                        _CANDIDATES,
                        {"tenant": entry.tenant_id, "flow": entry.flow_id, "after": after, "page": _PAGE},
                    )
                ).all()
            for row in rows:
                # A scheduled journey that allows re-entry "always" enters members again while they are still in.
                concurrent = entry.re_entry == "always" and not entry.per_generation
                # The entry ledger, not the instances (pruned after the retention), says who ever entered.
                if (row.live and not concurrent) or (entry.re_entry == "never" and row.ever_entered):
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
                outcome = await self._start(entry, row.external_id, int(row.entered))
                if outcome == "stop":
                    return started
                started += outcome == "started"
            if len(rows) < _PAGE:
                break
            after = rows[-1].id
        return started

    async def _start(self, entry: _EntryPoint, participant_id: str, entered: int) -> str:
        request = engine_pb2.StartInstanceRequest(
            tenant_id=str(entry.tenant_id),
            flow_id=str(entry.flow_id),
            participant_id=participant_id,
            entry_node_id=entry.node_id,
            request_id=entry.request_id(participant_id, entered),
        )
        try:
            await self._engine.StartInstance(request)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                return "already_in"
            _log.warning(
                "segment entry not started", flow_id=str(entry.flow_id), code=error.code().name, details=error.details()
            )
            return "stop"
        return "started"
