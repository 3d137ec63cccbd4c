"""Timers survive the scheduler: SIGKILL mid-firing and a restart, and two replicas firing side by side."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from kalcifer.scheduler.v1 import scheduler_pb2
from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

from tests.integration.scheduler.support import (
    RecordingEngine,
    SchedulerProcess,
    Seeder,
    eventually,
    scheduler_stub,
    utc_now,
)
from tests.support.rpc import bearer


async def _schedule(address: str, token: str, pairs: list[tuple[str, str]], fire_times: list[datetime]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = scheduler_stub(channel)
        for start in range(0, len(pairs), 1000):
            resumes = []
            for (instance, wait), moment in zip(
                pairs[start : start + 1000], fire_times[start : start + 1000], strict=True
            ):
                stamp = Timestamp()
                stamp.FromDatetime(moment)
                resumes.append(scheduler_pb2.ScheduleResumeRequest(instance_id=instance, wait_id=wait, fire_time=stamp))
            await stub.ScheduleResumes(scheduler_pb2.ScheduleResumesRequest(resumes=resumes), metadata=bearer(token))


async def _diagnose(engine: RecordingEngine, waits: list[str]) -> str:
    """What the waits that never fired look like in PostgreSQL (for the failure message)."""
    missing = [wait for wait, arrivals in engine.applied_for(waits).items() if not arrivals]
    async with engine.db.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT w.status, c.claim_until, w.fire_time, now() AS now FROM waits w"
                    " LEFT JOIN wait_claims c ON c.wait_id = w.id WHERE w.id = ANY(:ids)"
                ).bindparams(bindparam("ids", type_=ARRAY(Uuid()))),
                {"ids": [uuid.UUID(wait) for wait in missing[:5]]},
            )
        ).all()
        locks = (
            await connection.execute(text("SELECT count(*) FROM pg_locks WHERE relation = 'waits'::regclass"))
        ).scalar()
    return f"{len(missing)} never fired; e.g. {rows}; locks on waits: {locks}"


async def test_a_scheduler_killed_mid_firing_fires_every_due_timer_after_restart(
    env: dict[str, str], logs: Path, token: str, engine: RecordingEngine, seeder: Seeder
) -> None:
    scheduler = SchedulerProcess(env, logs / "killed.log").start()
    start = utc_now() + timedelta(seconds=1.0)
    fire_times = [start + timedelta(microseconds=500 * i) for i in range(2000)]  # 2,000 due within one second
    pairs = await seeder.waits(fire_times)
    waits = [wait for _, wait in pairs]
    try:
        await _schedule(scheduler.address, token, pairs, fire_times)
        await asyncio.sleep(max(0.0, (start - utc_now()).total_seconds()) + 0.4)
        scheduler.stop(signal.SIGKILL)
        fired_before_kill = sum(1 for arrivals in engine.applied_for(waits).values() if arrivals)
        await asyncio.sleep(1.0)
        scheduler.start()
        # Claims of the killed process expire after the lease (4 s here), then a sweep takes them.
        fired_all = await eventually(lambda: all(engine.applied_for(waits).values()), within=4 + 2 + 3)
        assert fired_all, await _diagnose(engine, waits)
    finally:
        scheduler.stop()
    applied = engine.applied_for(waits)
    assert all(len(arrivals) == 1 for arrivals in applied.values())
    assert all(
        arrivals[0].at >= moment.timestamp()
        for (_, wait), moment in zip(pairs, fire_times, strict=True)
        for arrivals in [applied[wait]]
    )
    print(f"\nkilled after {fired_before_kill} of 2000 fired; the rest fired after the restart")


async def test_two_schedulers_never_fire_a_timer_twice(
    env: dict[str, str], logs: Path, token: str, engine: RecordingEngine, seeder: Seeder
) -> None:
    first = SchedulerProcess(env, logs / "first.log").start()
    second = SchedulerProcess(env, logs / "second.log").start()
    start = utc_now() + timedelta(seconds=1.0)
    fire_times = [start + timedelta(milliseconds=i) for i in range(1000)]
    pairs = await seeder.waits(fire_times)
    waits = [wait for _, wait in pairs]
    try:
        # Both replicas arm every timer (as engine replicas behind a load balancer might), and both sweep.
        await _schedule(first.address, token, pairs, fire_times)
        await _schedule(second.address, token, pairs, fire_times)
        assert await eventually(lambda: all(engine.applied_for(waits).values()), within=8)
        await asyncio.sleep(2.5)  # two more sweep periods of both replicas
    finally:
        first.stop()
        second.stop()
    received = engine.received(waits)
    assert all(len(arrivals) == 1 for arrivals in received.values()), "a timer reached the engine twice"
