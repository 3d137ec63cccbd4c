"""Getting deliveries onto the `deliveries` queue: on request (EnqueueDeliveries) and by a periodic sweep.

A send job's id is `delivery:<id>:<attempts so far>`, so enqueueing the same delivery twice is a no-op, and a
retry (one attempt more) never collides with the job that is still finishing the previous attempt.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime

from arq.connections import ArqRedis
from kalcifer_common.logging import get_logger
from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from kalcifer_scheduler.keys import DELIVERIES_QUEUE, delivery_job_id

_log = get_logger(__name__)

SEND_JOB = "send_delivery"
_SWEEP_LIMIT = 1000
_SWEEP_TIMEOUT_SECONDS = 60.0

# Due pending deliveries, and `sending` ones whose worker vanished (lease passed), oldest first.
_DUE = text(
    """
    SELECT id, attempts FROM deliveries
    WHERE (status = 'pending' AND (send_after IS NULL OR send_after <= now()))
       OR (status = 'sending' AND update_time < now() - make_interval(secs => :lease))
    ORDER BY create_time
    LIMIT :limit
    """
)

_ATTEMPTS = text(
    "SELECT id, attempts, send_after FROM deliveries WHERE id = ANY(:ids) AND status = 'pending'"
).bindparams(bindparam("ids", type_=ARRAY(Uuid())))


class DeliveryQueue:
    """Enqueues send jobs."""

    def __init__(self, redis: ArqRedis, db: AsyncEngine, *, lease_seconds: float, interval_seconds: float) -> None:
        self._redis = redis
        self._db = db
        self._lease = lease_seconds
        self._interval = interval_seconds

    async def enqueue_pending(self, delivery_ids: Sequence[uuid.UUID]) -> int:
        """Enqueue the named deliveries that are pending (a deferred one for its `send_after`); returns how many
        jobs were enqueued now."""
        async with self._db.connect() as connection:
            rows = (await connection.execute(_ATTEMPTS, {"ids": list(delivery_ids)})).all()
        enqueued = 0
        for row in rows:
            enqueued += await self.enqueue(str(row.id), attempt=row.attempts, defer_until=row.send_after)
        return enqueued

    async def enqueue(self, delivery_id: str, *, attempt: int, defer_until: datetime | None = None) -> int:
        """Enqueue one send attempt; 1 when enqueued now, 0 when that attempt is already queued."""
        job = await self._redis.enqueue_job(
            SEND_JOB,
            delivery_id,
            _job_id=delivery_job_id(delivery_id, attempt),
            _queue_name=DELIVERIES_QUEUE,
            _defer_until=defer_until,
        )
        return 0 if job is None else 1

    async def sweep(self) -> int:
        """Enqueue every due delivery (deduplicated by job id); returns how many were enqueued now."""
        async with self._db.connect() as connection:
            rows = (await connection.execute(_DUE, {"lease": self._lease, "limit": _SWEEP_LIMIT})).all()
        enqueued = 0
        for row in rows:
            enqueued += await self.enqueue(str(row.id), attempt=row.attempts)
        return enqueued

    async def run(self) -> None:
        """Sweep forever on the configured period."""
        while True:
            try:
                async with asyncio.timeout(_SWEEP_TIMEOUT_SECONDS):
                    enqueued = await self.sweep()
                if enqueued:
                    _log.info("swept pending deliveries", enqueued=enqueued)
            except TimeoutError:
                _log.error("delivery sweep timed out", timeout_seconds=_SWEEP_TIMEOUT_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep sweeping whatever one pass hit
                _log.exception("delivery sweep failed")
            await asyncio.sleep(self._interval)
