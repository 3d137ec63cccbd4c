"""Timer lateness at 1,000 and 2,000 timers/s offered: the scheduler next to raw arq, measured in the same run.

Ours: a `kalcifer-scheduler` process with its defaults, wait rows in PostgreSQL armed through ScheduleResumes
ahead of time (as the engine does when a wait is created), fired into an EngineService at the service edge that
marks each wait fired in PostgreSQL (the least a real engine does) and records when each resume arrived.
Lateness = arrival - fire time.

Baseline: raw arq, one worker (concurrency 20 and poll 0.05 s, like our delayed_resume worker), one deferred job
per timer with an empty body that records when it ran. Lateness = run time - defer time.

Both see the same schedule: `rate` timers a second, evenly spread over `DURATION_SECONDS`. The two alternate
`REPEATS` times per rate (the machine is shared and noisy); each figure is the median over the repeats of that
run's percentile.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from arq import func
from arq.connections import RedisSettings, create_pool
from arq.worker import Worker
from google.protobuf.timestamp_pb2 import Timestamp
from kalcifer.scheduler.v1 import scheduler_pb2
from kalcifer_scheduler.job_codec import JSON_JOBS

from bench.harness import BenchEnv, Comparison, median, percentile
from tests.integration.scheduler.support import (
    RecordingEngine,
    SchedulerProcess,
    Seeder,
    new_token,
    scheduler_env,
    scheduler_stub,
)
from tests.support.eventually import eventually
from tests.support.rpc import bearer

RATES = (1000, 2000)
REPEATS = 3
DURATION_SECONDS = 5.0
LEAD_SECONDS = 4.0  # arming finishes before the first timer is due...
LEAD_SECONDS_PER_1000 = 1.0  # ...plus a second per 1,000 timers: a loaded machine arms 10,000 in more than 6 s


def _lead(rate: int) -> float:
    return LEAD_SECONDS + rate * DURATION_SECONDS / 1000 * LEAD_SECONDS_PER_1000


def _schedule(rate: int, start: datetime) -> list[datetime]:
    count = int(rate * DURATION_SECONDS)
    return [start + timedelta(seconds=i / rate) for i in range(count)]


async def _ours(env: BenchEnv, engine: RecordingEngine, seeder: Seeder, rate: int) -> list[float]:
    token = new_token()
    process = SchedulerProcess(
        scheduler_env(env.database_url, env.redis_url, engine.address, token, LOG_LEVEL="WARNING"),
        env.work_dir / f"scheduler-{rate}.log",
    ).start()
    try:
        start = datetime.now(UTC) + timedelta(seconds=_lead(rate))
        fire_times = _schedule(rate, start)
        pairs = await seeder.waits(fire_times)
        async with grpc.aio.insecure_channel(process.address) as channel:
            stub = scheduler_stub(channel)
            for offset in range(0, len(pairs), 1000):
                resumes = []
                for (instance, wait), moment in zip(
                    pairs[offset : offset + 1000], fire_times[offset : offset + 1000], strict=True
                ):
                    stamp = Timestamp()
                    stamp.FromDatetime(moment)
                    resumes.append(
                        scheduler_pb2.ScheduleResumeRequest(instance_id=instance, wait_id=wait, fire_time=stamp)
                    )
                await stub.ScheduleResumes(
                    scheduler_pb2.ScheduleResumesRequest(resumes=resumes), metadata=bearer(token)
                )
        if datetime.now(UTC) > start:
            raise RuntimeError("arming took longer than the lead time; raise LEAD_SECONDS_PER_1000")
        waits = [wait for _, wait in pairs]
        await eventually(
            lambda: all(engine.applied_for(waits).values()), within=DURATION_SECONDS + _lead(rate) + 30, interval=0.2
        )
        applied = engine.applied_for(waits)
        return [
            arrivals[0].at - moment.timestamp()
            for (_, wait), moment in zip(pairs, fire_times, strict=True)
            for arrivals in [applied[wait]]
            if arrivals
        ]
    finally:
        process.stop()


async def _empty_job(ctx: dict[str, Any], due: float) -> None:
    ctx["lateness"].append(time.time() - due)


async def _raw_arq(env: BenchEnv, rate: int) -> list[float]:
    queue = f"bench-raw-arq-{rate}"
    redis = await create_pool(RedisSettings.from_dsn(env.redis_url), **JSON_JOBS)
    lateness: list[float] = []
    worker = Worker(
        functions=[func(_empty_job, keep_result=0)],
        queue_name=queue,
        redis_settings=RedisSettings.from_dsn(env.redis_url),
        max_jobs=20,
        poll_delay=0.05,
        keep_result=0,
        handle_signals=False,
        ctx={"lateness": lateness},
        log_results=False,
        **JSON_JOBS,
    )
    try:
        start = datetime.now(UTC) + timedelta(seconds=_lead(rate))
        fire_times = _schedule(rate, start)
        semaphore = asyncio.Semaphore(50)

        async def enqueue(moment: datetime) -> None:
            async with semaphore:
                await redis.enqueue_job("_empty_job", moment.timestamp(), _queue_name=queue, _defer_until=moment)

        await asyncio.gather(*(enqueue(moment) for moment in fire_times))
        if datetime.now(UTC) > start:
            raise RuntimeError("enqueueing took longer than the lead time; raise LEAD_SECONDS_PER_1000")
        task = asyncio.create_task(worker.async_run())
        await eventually(
            lambda: len(lateness) >= len(fire_times), within=DURATION_SECONDS + _lead(rate) + 60, interval=0.2
        )
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return list(lateness)
    finally:
        await worker.close()
        await redis.aclose()


async def run(env: BenchEnv) -> list[Comparison]:
    """Lateness p50/p99 of ours and of raw arq at each offered rate."""
    from kalcifer_common.db.session import create_engine

    db = create_engine(env.database_url, pool_size=5)
    engine = RecordingEngine(db)
    await engine.start()
    seeder = Seeder(db)
    await seeder.setup()
    rows: list[Comparison] = []
    try:
        for rate in RATES:
            ours_runs: list[list[float]] = []
            raw_runs: list[list[float]] = []
            for _ in range(REPEATS):
                ours_runs.append(await _ours(env, engine, seeder, rate))
                raw_runs.append(await _raw_arq(env, rate))
            offered = int(rate * DURATION_SECONDS)
            extra: dict[str, float | int | str] = {
                "offered_per_run": offered,
                "runs": REPEATS,
                "ours_fired_min": min(len(run) for run in ours_runs),
                "raw_arq_ran_min": min(len(run) for run in raw_runs),
                "ours_early": sum(1 for run in ours_runs for value in run if value < 0),
                "ours_max_ms": round(max(max(run, default=0.0) for run in ours_runs) * 1000, 1),
                "raw_arq_max_ms": round(max(max(run, default=0.0) for run in raw_runs) * 1000, 1),
            }
            for q in (50, 99):
                rows.append(
                    Comparison(
                        name=f"timer lateness p{q} @ {rate}/s",
                        unit="ms",
                        ours=median([percentile(run, q) for run in ours_runs]) * 1000,
                        baseline=median([percentile(run, q) for run in raw_runs]) * 1000,
                        baseline_name="raw arq, 1 worker, empty job",
                        higher_is_better=False,
                        extra=extra,
                    )
                )
    finally:
        await engine.stop()
        await db.dispose()
    return rows
