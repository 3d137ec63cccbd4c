"""Entries on the `flow_triggers` queue: participants who join a segment, and scheduled journeys' audiences.

Every run (an arq cron job each minute, unique across replicas) does, within one budget of starts:
- `segment_entry.py`: each `segment_entry` node of an active flow enters the customers who *became* members of its
  segment since the last run, read incrementally from the customers that changed (staying a member enters nobody);
- `journeys.py`: each active journey whose entry schedule fired this minute or the previous one enters its
  audience's members who are not in its flow.

Both ask the engine through `engine_starts.py` with a request id naming the entry, so a retried run starts one
instance; the engine's unique live-instance index and entry ledger stay the final guard.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from kalcifer.engine.v1 import engine_pb2_grpc
from kalcifer_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncEngine

from kalcifer_scheduler.entries.journeys import ScheduledJourneys
from kalcifer_scheduler.entries.segment_entry import FollowedSegments, SegmentEntries

__all__ = ["MAX_CUSTOMERS_READ_PER_RUN", "MAX_STARTS_PER_RUN", "ScheduledEntries"]

_log = get_logger(__name__)

MAX_STARTS_PER_RUN = 10_000
MAX_CUSTOMERS_READ_PER_RUN = 100_000


class ScheduledEntries:
    """One run of the `flow_triggers` cron: segment_entry joins first, then the scheduled journeys."""

    def __init__(
        self,
        db: AsyncEngine,
        engine: engine_pb2_grpc.EngineServiceAsyncStub,
        *,
        overlap: timedelta,
        max_starts: int = MAX_STARTS_PER_RUN,
        max_customers_read: int = MAX_CUSTOMERS_READ_PER_RUN,
        lock_db: AsyncEngine | None = None,
    ) -> None:
        self._segments = SegmentEntries(
            db, engine, overlap=overlap, max_customers_read=max_customers_read, lock_db=lock_db
        )
        self._journeys = ScheduledJourneys(db, engine)
        self._max_starts = max_starts

    async def run_once(self, now: datetime | None = None) -> int:
        """One pass; returns how many instances started. `now` places the journeys' schedules (default: now).

        A failure following segments is logged and leaves the journeys their turn: a journey's slot is this minute
        (or the last), while segment joins wait in the database for the next run.
        """
        try:
            followed = await self._segments.run_once(max_starts=self._max_starts)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the next run goes on from the cursors
            _log.exception("segment entries failed")
            followed = FollowedSegments(0, 0)
        journeys = await self._journeys.run_once(now or datetime.now(UTC), budget=self._max_starts - followed.started)
        if followed.started or followed.customers_read or journeys:
            _log.info(
                "entries run",
                segment_entry_started=followed.started,
                customers_read=followed.customers_read,
                journey_started=journeys,
            )
        return followed.started + journeys
