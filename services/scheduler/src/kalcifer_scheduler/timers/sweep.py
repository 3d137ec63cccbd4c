"""The safety net that makes Redis optional: overdue waits are fired from PostgreSQL, near ones re-armed.

Every `interval` each replica (1) claims waits overdue by more than `grace` straight from the table and fires
them, so a Redis flush, restart or lost job delays a resume by at most about one period; (2) fires timers still
armed in Redis whose bucket job is gone; (3) advances the horizon cursor: waits due within `horizon` are armed in
Redis from the table (only the newly entered window is read, so the cost does not grow with waiting instances).
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

from arq.connections import ArqRedis
from kalcifer_common.logging import get_logger

from kalcifer_scheduler.keys import RedisKeys
from kalcifer_scheduler.timers.claims import WaitClaims
from kalcifer_scheduler.timers.firing import TimerFirer
from kalcifer_scheduler.timers.store import Timer, TimerStore, now_ms, to_ms

_log = get_logger(__name__)

# Claim queries one sweep runs at most before sleeping again.
_MAX_SWEEP_BATCHES = 20
# A tick that hangs on a dependency is abandoned (and logged) rather than silently stalling the net.
_TICK_TIMEOUT_SECONDS = 120.0
# Wait rows read per horizon step.
_HORIZON_READ_LIMIT = 10_000


class WaitSweeper:
    """Runs the sweep, the orphan rescue and the horizon arming on a fixed period."""

    def __init__(
        self,
        *,
        redis: ArqRedis,
        keys: RedisKeys,
        claims: WaitClaims,
        store: TimerStore,
        firer: TimerFirer,
        interval_seconds: float,
        grace_seconds: float,
        batch_size: int,
        horizon_seconds: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._claims = claims
        self._store = store
        self._firer = firer
        self._interval = interval_seconds
        self._grace = grace_seconds
        self._batch_size = batch_size
        self._horizon_ms = round(horizon_seconds * 1000)

    async def run(self) -> None:
        """Tick forever; a failing tick is logged and the next one tries again."""
        while True:
            try:
                async with asyncio.timeout(_TICK_TIMEOUT_SECONDS):
                    await self.tick()
            except TimeoutError:
                _log.error("sweep tick timed out", timeout_seconds=_TICK_TIMEOUT_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the net must keep running whatever one tick hit
                _log.exception("sweep tick failed")
            await asyncio.sleep(self._interval)

    async def tick(self) -> None:
        """One period's work."""
        await self.sweep_overdue()
        await self.rescue_orphans()
        await self.arm_horizon()

    async def sweep_overdue(self) -> int:
        """Claim and fire overdue waits from PostgreSQL in bounded batches; returns how many were fired."""
        total = 0
        for _ in range(_MAX_SWEEP_BATCHES):
            waits = await self._claims.claim_overdue(limit=self._batch_size, grace_seconds=self._grace)
            if not waits:
                break
            await self._firer.fire(waits, swept=True)
            total += len(waits)
            if len(waits) < self._batch_size:
                break
        if total:
            _log.info("swept overdue waits", fired=total)
        return total

    async def rescue_orphans(self) -> int:
        """Fire timers armed in Redis that are overdue by more than the grace (their bucket job was lost)."""
        if await self._store.has_overdue(now_ms() - round(self._grace * 1000)):
            return await self._firer.fire_due()
        return 0

    async def arm_horizon(self) -> int:
        """Arm in Redis the pending waits that entered the horizon since the last step; returns how many."""
        if self._horizon_ms <= 0:
            return 0
        token = secrets.token_hex(8)
        lock_ms = max(1000, round(self._interval * 3000))
        if not await self._redis.set(self._keys.arming_lock, token, nx=True, px=lock_ms):
            return 0  # another replica is arming this window
        try:
            at = now_ms()
            stored = await self._redis.get(self._keys.armed_until)
            # No cursor (first start, or Redis lost it): start at now; what is already overdue is the sweep's.
            after = int(stored) if stored is not None else at
            until = at + self._horizon_ms
            if until <= after:
                return 0
            waits = await self._claims.pending_between(_utc(after), _utc(until), limit=_HORIZON_READ_LIMIT)
            if len(waits) == _HORIZON_READ_LIMIT:
                # Stop just before the last fire time read, so waits sharing it are read whole next time.
                until = to_ms(waits[-1].fire_time) - 1
                waits = [wait for wait in waits if to_ms(wait.fire_time) <= until]
            await self._store.arm([Timer(wait.wait_id, to_ms(wait.fire_time)) for wait in waits])
            await self._redis.set(self._keys.armed_until, until)
            return len(waits)
        finally:
            if await self._redis.get(self._keys.arming_lock) == token.encode():
                await self._redis.delete(self._keys.arming_lock)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
