"""Maintenance, run by an arq cron job on the `maintenance` queue (unique across replicas).

- Expired idempotency records are deleted.
- Claims (`wait_claims`) of waits that are no longer pending are deleted: the lease did its job.
- Finished instances are not the scheduler's to delete: the engine, their only writer, prunes them after
  `INSTANCE_RETENTION_SECONDS` in its recovery loop.
- Instances stuck `running` past their lease are only counted and logged: the engine exposes no recovery RPC, and
  its own start-up and periodic recovery (SPEC 6.9) reruns them from their last committed state. Resuming them
  through ResumeInstances would be wrong: they wait for no wait row.
"""

from __future__ import annotations

from dataclasses import dataclass

from kalcifer_common.logging import get_logger
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_log = get_logger(__name__)

_BATCH = 1000
_MAX_BATCHES = 50

_EXPIRE_IDEMPOTENCY = text(
    """
    DELETE FROM idempotency_records WHERE ctid IN (
        SELECT ctid FROM idempotency_records WHERE expire_time < now() LIMIT :batch
    )
    """
)

_DROP_RESOLVED_CLAIMS = text(
    """
    DELETE FROM wait_claims WHERE wait_id IN (
        SELECT c.wait_id FROM wait_claims c JOIN waits w ON w.id = c.wait_id
        WHERE w.status <> 'pending'
        LIMIT :batch
    )
    """
)

_STUCK = text(
    """
    SELECT count(*) FROM flow_instances
    WHERE status = 'running' AND lease_until < now() - make_interval(secs => :stuck)
    """
)


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    """What one maintenance pass did."""

    expired_idempotency_records: int
    dropped_claims: int
    stuck_running: int


class Maintenance:
    """One maintenance pass over the database."""

    def __init__(self, db: AsyncEngine, *, stuck_seconds: float) -> None:
        self._db = db
        self._stuck = stuck_seconds

    async def run_once(self) -> MaintenanceReport:
        """Expire, drop, count; each batch is its own short transaction."""
        expired = await self._delete_in_batches(_EXPIRE_IDEMPOTENCY, {})
        dropped = await self._delete_in_batches(_DROP_RESOLVED_CLAIMS, {})
        async with self._db.connect() as connection:
            stuck = int((await connection.execute(_STUCK, {"stuck": self._stuck})).scalar_one())
        report = MaintenanceReport(expired, dropped, stuck)
        if stuck:
            _log.warning("instances stuck running; left to the engine's recovery", stuck_running=stuck)
        _log.info(
            "maintenance done",
            expired_idempotency_records=expired,
            dropped_claims=dropped,
            stuck_running=stuck,
        )
        return report

    async def _delete_in_batches(self, statement: object, params: dict[str, float]) -> int:
        total = 0
        for _ in range(_MAX_BATCHES):
            async with self._db.begin() as connection:
                deleted = (await connection.execute(statement, params | {"batch": _BATCH})).rowcount  # type: ignore[call-overload]
            total += deleted
            if deleted < _BATCH:
                break
        return total
