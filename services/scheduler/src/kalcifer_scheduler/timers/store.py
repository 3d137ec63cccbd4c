"""The Redis side of timers: a sorted set of armed waits and one arq job per time bucket that fires them.

Why not one arq job per wait: arq spends several Redis round trips per job and falls behind near 1,000 jobs/s on
the reference machine. Here a wait is one sorted-set member (its wait id, so arming twice is a no-op) and
everything due in the same `bucket_seconds` is fired by one job, `timers:<bucket end ms>`, in batches.

arq pitfalls this avoids: the bucket jobs keep no result (`keep_result=0`) and always succeed, so a job id is
never blocked by a kept result; a bucket is always strictly in the future when armed, so its job can never be
running already (an enqueue of a running job's id would be dropped); nothing is ever aborted (an abort of an
unknown id poisons a later job with that id): cancelling is a plain ZREM. Every time is Unix milliseconds or a
tz-aware UTC datetime.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from arq.connections import ArqRedis

from kalcifer_scheduler.keys import DELAYED_RESUME_QUEUE, RedisKeys, bucket_job_id

FIRE_JOB = "fire_due_timers"
# Bucket jobs enqueued at once (each takes one pooled connection for its WATCH/MULTI).
_ENQUEUE_CONCURRENCY = 32

# Pops up to ARGV[2] members scored <= ARGV[1], earliest first, atomically: two replicas never pop the same wait.
_POP_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due, 2 do redis.call('ZREM', KEYS[1], due[i]) end
return due
"""


def now_ms() -> int:
    """The current Unix time in milliseconds."""
    return int(time.time() * 1000)


def to_ms(moment: datetime) -> int:
    """Unix milliseconds of a tz-aware datetime (a naive one would silently mean local time)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: every scheduler time is tz-aware UTC")
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Timer:
    """One wait to resume at `fire_ms` (Unix milliseconds)."""

    wait_id: str
    fire_ms: int


class TimerStore:
    """Arms, cancels and pops timers in Redis; owns the bucket jobs of the `delayed_resume` queue."""

    def __init__(self, redis: ArqRedis, keys: RedisKeys, *, bucket_seconds: float, horizon_seconds: float) -> None:
        self._redis = redis
        self._keys = keys
        self._bucket_ms = max(1, round(bucket_seconds * 1000))
        self._horizon_ms = round(horizon_seconds * 1000)
        self._pop_due = redis.register_script(_POP_DUE)
        # Buckets this process enqueued and that have not come yet: saves a Redis transaction per arm.
        self._enqueued_buckets: set[int] = set()

    def bucket_of(self, fire_ms: int, at_ms: int) -> int:
        """The end of the bucket that fires `fire_ms`: never before it, and always strictly after `at_ms`."""
        due_bucket = math.ceil(fire_ms / self._bucket_ms) * self._bucket_ms
        next_bucket = (at_ms // self._bucket_ms + 1) * self._bucket_ms
        return max(due_bucket, next_bucket)

    async def arm(self, timers: Sequence[Timer]) -> int:
        """Arm timers; returns how many were accepted now (already armed ones are not counted).

        A timer beyond the horizon is accepted without touching Redis: the horizon arming reads it from its wait
        row when it comes within reach, so Redis holds only the near future however many instances wait.
        """
        if not timers:
            return 0
        at = now_ms()
        near = [timer for timer in timers if timer.fire_ms <= at + self._horizon_ms]
        accepted = len(timers) - len(near)
        if near:
            async with self._redis.pipeline(transaction=False) as pipe:
                for timer in near:
                    pipe.zadd(self._keys.timers, {timer.wait_id: timer.fire_ms}, nx=True)
                added = await pipe.execute()
            accepted += sum(int(result) for result in added)
            await self.ensure_buckets(self.bucket_of(timer.fire_ms, at) for timer in near)
        return accepted

    async def ensure_buckets(self, buckets: Iterable[int]) -> None:
        """Make sure a bucket job exists for each bucket end (enqueueing an existing id is a harmless no-op)."""
        at = now_ms()
        self._enqueued_buckets = {bucket for bucket in self._enqueued_buckets if bucket > at}
        missing = sorted(set(buckets) - self._enqueued_buckets)
        # Each enqueue is its own WATCH/MULTI round trip; a batch spread over many buckets sends them together.
        for start in range(0, len(missing), _ENQUEUE_CONCURRENCY):
            chunk = missing[start : start + _ENQUEUE_CONCURRENCY]
            await asyncio.gather(*(self._enqueue_bucket(bucket) for bucket in chunk))
            self._enqueued_buckets.update(chunk)

    async def _enqueue_bucket(self, bucket: int) -> None:
        await self._redis.enqueue_job(
            FIRE_JOB,
            bucket,
            _job_id=bucket_job_id(bucket),
            _queue_name=DELAYED_RESUME_QUEUE,
            _defer_until=datetime.fromtimestamp(bucket / 1000, UTC),
        )

    async def cancel(self, wait_ids: Sequence[str]) -> int:
        """Disarm timers; returns how many were armed."""
        if not wait_ids:
            return 0
        removed: int = await self._redis.zrem(self._keys.timers, *wait_ids)
        return removed

    async def pop_due(self, until_ms: int, limit: int) -> list[Timer]:
        """Remove and return up to `limit` timers due by `until_ms`, earliest first."""
        flat = await self._pop_due(keys=[self._keys.timers], args=[until_ms, limit])
        return [Timer(_text(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]

    async def has_overdue(self, before_ms: int) -> bool:
        """Whether a timer due before `before_ms` is still armed (its bucket job was lost, e.g. in a flush)."""
        found = await self._redis.zrangebyscore(self._keys.timers, "-inf", before_ms, start=0, num=1)
        return bool(found)

    async def armed_count(self) -> int:
        """How many timers are armed in Redis."""
        count: int = await self._redis.zcard(self._keys.timers)
        return count


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
