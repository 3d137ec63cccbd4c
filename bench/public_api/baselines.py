"""The raw baselines, measured by the load process in the same run as our figures.

- Raw PostgreSQL: what a start must write at the least, done by hand with asyncpg: one transaction that inserts
  one row into a copy of `flow_instances` and four into a copy of `execution_steps` (same columns, defaults,
  constraints and indexes: `LIKE ... INCLUDING ALL`, in scratch tables of the same database) and commits. Closed
  loop at the trigger benchmark's concurrency (transactions/s), and open loop at the event benchmark's rates (the
  latency of one such durable transaction at that rate).
- Raw arq: one deferred job per timer, at the same fire times as our timers, on a worker like our scheduler's
  (its default concurrency and poll period) whose job does nothing but note when it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from arq import func
from arq.connections import RedisSettings, create_pool
from arq.worker import Worker
from kalcifer_common.settings import SchedulerSettings
from kalcifer_scheduler.job_codec import JSON_JOBS

from bench.loadgen import ClosedLoopResult, OpenLoopResult, closed_loop, open_loop

RAW_INSTANCES = "bench_raw_instances"
RAW_STEPS = "bench_raw_steps"
STEPS_PER_INSTANCE = 4
ARQ_QUEUE = "bench-raw-arq"

_INSERT_INSTANCE = f"""
    INSERT INTO {RAW_INSTANCES} (tenant_id, flow_id, version_number, participant_id, status, current_nodes, context)
    VALUES ($1, $2, 1, $3, 'waiting', '["hold"]'::jsonb, $4::jsonb) RETURNING id
"""
_INSERT_STEPS = f"""
    INSERT INTO {RAW_STEPS} (tenant_id, instance_id, node_id, node_type, version_number, status, input)
    SELECT $1, $2, n, 'event_entry', 1, 'completed', '{{}}'::jsonb FROM unnest($3::text[]) AS n
"""


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def create_raw_tables(database_url: str) -> None:
    """The scratch copies of `flow_instances` and `execution_steps` (empty; foreign keys are not copied)."""
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        await connection.execute(f"CREATE TABLE IF NOT EXISTS {RAW_INSTANCES} (LIKE flow_instances INCLUDING ALL)")
        await connection.execute(f"CREATE TABLE IF NOT EXISTS {RAW_STEPS} (LIKE execution_steps INCLUDING ALL)")
    finally:
        await connection.close()


async def _pool(database_url: str, size: int) -> asyncpg.Pool:
    """A pool of `size` connections. A shared server may be at max_connections for a while (other test runs):
    that is waited out for up to a minute rather than failing the whole benchmark."""
    for _ in range(30):
        try:
            return await asyncpg.create_pool(_dsn(database_url), min_size=size, max_size=size)
        except asyncpg.TooManyConnectionsError:
            await asyncio.sleep(2)
    return await asyncpg.create_pool(_dsn(database_url), min_size=size, max_size=size)


class _RawStart:
    """One transaction of the raw baseline per call, on a pool as large as the concurrency."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._tenant, self._flow = uuid.uuid4(), uuid.uuid4()
        self._steps = [f"n{index}" for index in range(STEPS_PER_INSTANCE)]

    async def __call__(self, index: int) -> None:
        participant = f"raw-{uuid.uuid4().hex}"
        context = json.dumps({"_participant_id": participant, "_flow_id": str(self._flow), "event": {}})
        async with self._pool.acquire() as connection, connection.transaction():
            instance = await connection.fetchval(_INSERT_INSTANCE, self._tenant, self._flow, participant, context)
            await connection.execute(_INSERT_STEPS, self._tenant, instance, self._steps)


def raw_start_transactions(database_url: str, count: int, concurrency: int) -> ClosedLoopResult:
    """`count` raw transactions with `concurrency` in flight."""
    return asyncio.run(_raw_closed(database_url, count, concurrency))


async def _raw_closed(database_url: str, count: int, concurrency: int) -> ClosedLoopResult:
    pool = await _pool(database_url, concurrency)
    try:
        return await closed_loop(count, concurrency, _RawStart(pool))
    finally:
        await pool.close()


def raw_start_transactions_open(database_url: str, count: int, rate: float, pool_size: int) -> OpenLoopResult:
    """`count` raw transactions, open loop at `rate` a second, on `pool_size` connections."""
    return asyncio.run(_raw_open(database_url, count, rate, pool_size))


async def _raw_open(database_url: str, count: int, rate: float, pool_size: int) -> OpenLoopResult:
    pool = await _pool(database_url, pool_size)
    try:
        start = _RawStart(pool)

        async def call(index: int) -> str | None:
            await start(index)
            return None

        return await open_loop(count, rate, call)
    finally:
        await pool.close()


async def _note_lateness(ctx: dict[str, Any], due: float) -> None:
    ctx["lateness"].append(time.time() - due)


def raw_arq_lateness(redis_url: str, fire_times: list[float]) -> tuple[list[float], float]:
    """Lateness (ms) of one empty arq job per fire time (epoch seconds), and by how many seconds enqueueing ran
    past the first fire time (0.0 when every job was queued before any was due)."""
    return asyncio.run(_raw_arq(redis_url, fire_times))


async def _raw_arq(redis_url: str, fire_times: list[float]) -> tuple[list[float], float]:
    defaults = SchedulerSettings.model_fields
    redis = await create_pool(RedisSettings.from_dsn(redis_url), **JSON_JOBS)
    lateness: list[float] = []
    worker = Worker(
        functions=[func(_note_lateness, keep_result=0)],
        queue_name=ARQ_QUEUE,
        redis_settings=RedisSettings.from_dsn(redis_url),
        max_jobs=defaults["delayed_resume_concurrency"].default,
        poll_delay=defaults["arq_poll_seconds"].default,
        keep_result=0,
        handle_signals=False,
        ctx={"lateness": lateness},
        burst=True,  # returns once the queue is empty and its last job has finished
        log_results=False,
        **JSON_JOBS,
    )
    try:
        semaphore = asyncio.Semaphore(50)

        async def enqueue(due: float) -> None:
            async with semaphore:
                await redis.enqueue_job(
                    "_note_lateness",
                    due,
                    _queue_name=ARQ_QUEUE,
                    _defer_until=datetime.fromtimestamp(due, UTC),
                    _job_id=uuid.uuid4().hex,
                )

        await asyncio.gather(*(enqueue(due) for due in fire_times))
        overrun = max(0.0, time.time() - min(fire_times))
        with contextlib.suppress(TimeoutError):  # jobs that never ran are missing from the result
            await asyncio.wait_for(worker.async_run(), max(fire_times) + 120 - time.time())
        return [value * 1000 for value in lateness], overrun
    finally:
        await worker.close()
        await redis.aclose()
