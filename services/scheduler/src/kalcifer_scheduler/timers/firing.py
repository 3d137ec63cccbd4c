"""Firing: due timers popped from Redis (or found by the sweep) are claimed in PostgreSQL and resumed in batches
(call waits are claimed the same way, then handed to `outbound.calls`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from kalcifer_common.logging import get_logger
from kalcifer_common.statuses import WaitKind

from kalcifer_scheduler.engine_resumes import ResumeFailed, ResumeSender
from kalcifer_scheduler.outbound.calls import CallMaker
from kalcifer_scheduler.stats import SchedulerStats
from kalcifer_scheduler.timers.claims import DueWait, WaitClaims
from kalcifer_scheduler.timers.store import Timer, TimerStore, now_ms, to_ms

_log = get_logger(__name__)

# Batches one bucket job handles before it hands the rest to the next bucket job (every loop has a bound).
_MAX_BATCHES_PER_JOB = 50


class TimerFirer:
    """Turns due waits into EngineService.ResumeInstances calls, in order of fire time, never early."""

    def __init__(
        self,
        *,
        claims: WaitClaims,
        store: TimerStore,
        sender: ResumeSender,
        stats: SchedulerStats,
        batch_size: int,
        calls: CallMaker,
    ) -> None:
        self._calls = calls
        self._claims = claims
        self._store = store
        self._sender = sender
        self._stats = stats
        self._batch_size = batch_size

    async def fire_due(self) -> int:
        """Pop the timers due now from Redis, earliest first, and fire them batch by batch; returns how many."""
        fired = 0
        for _ in range(_MAX_BATCHES_PER_JOB):
            timers = await self._store.pop_due(now_ms(), self._batch_size)
            if not timers:
                return fired
            fired += await self._fire_popped(timers)
            if len(timers) < self._batch_size:
                return fired
        # More is due than one job may take: make sure the next bucket job comes right after this one.
        await self._store.ensure_buckets([self._store.bucket_of(now_ms(), now_ms())])
        return fired

    async def _fire_popped(self, timers: Sequence[Timer]) -> int:
        due, not_due = await self._claims.claim([timer.wait_id for timer in timers])
        if not_due:
            # Redis said due but the row says later (clock skew, or a re-armed wait): arm it for its real time.
            await self._store.arm([Timer(wait.wait_id, to_ms(wait.fire_time)) for wait in not_due])
        await self.fire(due, swept=False)
        return len(due)

    async def fire(self, waits: Sequence[DueWait], *, swept: bool) -> None:
        """Resume claimed waits in batches; a batch the engine does not take is released for the next sweep.
        Call waits go to the `CallMaker` instead: their resume comes with the call's answer."""
        calls = [wait for wait in waits if wait.kind == WaitKind.CALL]
        if calls:
            self._calls.start(calls)
            waits = [wait for wait in waits if wait.kind != WaitKind.CALL]
        for start in range(0, len(waits), self._batch_size):
            batch = waits[start : start + self._batch_size]
            try:
                results = await self._sender.send(batch)
            except ResumeFailed as error:
                self._stats.failed += len(batch)
                _log.error("resume batch failed", error=str(error), batch=len(batch), swept=swept)
                await self._claims.release([wait.wait_id for wait in batch])
                continue
            at = time.time()
            lateness = [at - wait.due_time.timestamp() for wait in batch]
            not_applied = sum(1 for result in results if not result.applied)
            self._stats.record_fired(lateness, swept=swept, not_applied=not_applied)
