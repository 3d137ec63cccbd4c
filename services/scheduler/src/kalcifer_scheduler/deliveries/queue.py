"""Getting deliveries onto the `deliveries` queue in turns across tenants (SPEC 10): on request
(EnqueueDeliveries), whenever a send finishes, and by a periodic sweep.

The arq queue is a FIFO shared by every tenant, so it is never handed a tenant's whole backlog. Each pass takes,
for every tenant with due deliveries, only its oldest `per_tenant` ones, in turns (every tenant's oldest, then
every tenant's second, ...). A delivery stays `pending` until a worker takes it, so a tenant's queued ones keep
filling its turns and its next ones are queued only as those are sent: however much one tenant has waiting, another
tenant's new delivery waits behind at most `per_tenant` of each busy tenant's sends, never behind their backlogs.

A send job's id is `delivery:<id>:<attempts so far>`, so queueing the same delivery again is a no-op, and a retry
(one attempt more) never collides with the job that is still finishing the previous attempt. A retry is not queued
by its job: its row waits in `pending` for its `send_after`, and takes its turn like any other once due.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from arq.connections import ArqRedis
from kalcifer_common.logging import get_logger
from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from kalcifer_scheduler.keys import DELIVERIES_QUEUE, delivery_job_id

_log = get_logger(__name__)

SEND_JOB = "send_delivery"
_PASS_LIMIT = 1000
_SWEEP_TIMEOUT_SECONDS = 60.0

# The tenants with unsent deliveries (a loose index scan of ix_deliveries_unsent_tenant_id_create_time: one index
# descent per tenant), or only those named; per tenant its oldest due deliveries (pending and due, or `sending`
# with the worker's lease passed), numbered; then every tenant's first turn, every tenant's second, ...
_DUE_IN_TURNS = text(
    """
    WITH RECURSIVE tenants AS (
        (SELECT tenant_id FROM deliveries WHERE status IN ('pending', 'sending') ORDER BY tenant_id LIMIT 1)
        UNION ALL
        SELECT (
            SELECT d.tenant_id FROM deliveries d
            WHERE d.status IN ('pending', 'sending') AND d.tenant_id > t.tenant_id
            ORDER BY d.tenant_id LIMIT 1
        )
        FROM tenants t WHERE t.tenant_id IS NOT NULL
    )
    SELECT due.id, due.attempts
    FROM tenants t
    CROSS JOIN LATERAL (
        SELECT d.id, d.attempts, d.create_time, row_number() OVER (ORDER BY d.create_time) AS turn
        FROM deliveries d
        WHERE d.tenant_id = t.tenant_id
          AND d.status IN ('pending', 'sending')
          AND ((d.status = 'pending' AND (d.send_after IS NULL OR d.send_after <= now()))
               OR (d.status = 'sending' AND d.update_time < now() - make_interval(secs => :lease)))
        ORDER BY d.create_time
        LIMIT :per_tenant
    ) due
    WHERE t.tenant_id IS NOT NULL AND (CAST(:tenants AS uuid[]) IS NULL OR t.tenant_id = ANY(:tenants))
    ORDER BY due.turn, due.create_time
    LIMIT :limit
    """
).bindparams(bindparam("tenants", type_=ARRAY(Uuid())))

_TENANTS_OF = text("SELECT DISTINCT tenant_id FROM deliveries WHERE id = ANY(:ids) AND status = 'pending'").bindparams(
    bindparam("ids", type_=ARRAY(Uuid()))
)


class DeliveryQueue:
    """Queues send jobs, tenant by tenant in turns."""

    def __init__(
        self,
        redis: ArqRedis,
        db: AsyncEngine,
        *,
        lease_seconds: float,
        interval_seconds: float,
        per_tenant: int,
    ) -> None:
        self._redis = redis
        self._db = db
        self._lease = lease_seconds
        self._interval = interval_seconds
        self._per_tenant = per_tenant
        self._wake = asyncio.Event()

    async def enqueue_pending(self, delivery_ids: Sequence[uuid.UUID]) -> int:
        """Take a turn for the tenants of the named pending deliveries (theirs are queued now unless the tenant has
        `per_tenant` queued already; those follow as the queued ones are sent); returns how many jobs were queued."""
        async with self._db.connect() as connection:
            tenants = list((await connection.execute(_TENANTS_OF, {"ids": list(delivery_ids)})).scalars())
        return await self._take_turns(tenants) if tenants else 0

    def wake(self) -> None:
        """Have the next pass run now (a send finished: its tenant's next turn is free)."""
        self._wake.set()

    def wake_at(self, moment: datetime) -> None:
        """Have a pass run when `moment` comes (a retry's `send_after`)."""
        delay = max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.01
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def sweep(self) -> int:
        """One pass over every tenant with due deliveries; returns how many jobs were queued now."""
        return await self._take_turns(None)

    async def _take_turns(self, tenants: list[uuid.UUID] | None) -> int:
        params = {"lease": self._lease, "per_tenant": self._per_tenant, "limit": _PASS_LIMIT, "tenants": tenants}
        async with self._db.connect() as connection:
            rows = (await connection.execute(_DUE_IN_TURNS, params)).all()
        enqueued = 0
        for row in rows:
            job = await self._redis.enqueue_job(
                SEND_JOB,
                str(row.id),
                _job_id=delivery_job_id(str(row.id), row.attempts),
                _queue_name=DELIVERIES_QUEUE,
            )
            enqueued += job is not None
        return enqueued

    async def run(self) -> None:
        """Pass on the configured period, and at once whenever woken."""
        woken = False
        while True:
            try:
                async with asyncio.timeout(_SWEEP_TIMEOUT_SECONDS):
                    enqueued = await self.sweep()
                if enqueued and not woken:  # what a periodic pass finds was left behind (a lost wake, a crash)
                    _log.info("swept pending deliveries", enqueued=enqueued)
            except TimeoutError:
                _log.error("delivery sweep timed out", timeout_seconds=_SWEEP_TIMEOUT_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep sweeping whatever one pass hit
                _log.exception("delivery sweep failed")
            try:
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
                woken = True
            except TimeoutError:
                woken = False
            self._wake.clear()
