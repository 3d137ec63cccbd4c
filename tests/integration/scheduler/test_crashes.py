"""Timers survive the scheduler: SIGKILL mid-firing and a restart, and two replicas firing side by side."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

from tests.integration.scheduler.support import (
    RecordingEngine,
    SchedulerProcess,
    Seeder,
    schedule_at,
    swept_by,
    utc_now,
)
from tests.support.eventually import eventually


def _unfired(engine: RecordingEngine, waits: Sequence[str]) -> int:
    """How many of the waits the engine has not applied yet."""
    return sum(1 for arrivals in engine.applied_for(waits).values() if not arrivals)


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
        await schedule_at(scheduler.address, token, pairs, fire_times)
        await eventually(
            lambda: _unfired(engine, waits),
            until=lambda unfired: unfired <= len(waits) * 9 // 10,
            within=1.0 + 5,
            what="a tenth of the timers firing",
        )
        scheduler.stop(signal.SIGKILL)
        fired_before_kill = len(waits) - _unfired(engine, waits)
        # Nobody runs while the rest falls due.
        await eventually(utc_now, until=lambda now: now > fire_times[-1], within=2, what="the last fire time passing")
        scheduler.start()
        # Claims of the killed process expire after the lease (4 s here), then a sweep takes them.
        try:
            await eventually(
                lambda: _unfired(engine, waits),
                until=lambda unfired: unfired == 0,
                within=4 + 2 + 3,
                what="every timer firing after the restart",
            )
        except AssertionError as failure:
            raise AssertionError(f"{failure}; {await _diagnose(engine, waits)}") from failure
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
        await schedule_at(first.address, token, pairs, fire_times)
        await schedule_at(second.address, token, pairs, fire_times)
        await eventually(
            lambda: _unfired(engine, waits), until=lambda unfired: unfired == 0, within=8, what="every timer firing"
        )
        await swept_by([first, second], seeder, engine)  # two more sweeps of each replica
    finally:
        first.stop()
        second.stop()
    received = engine.received(waits)
    assert all(len(arrivals) == 1 for arrivals in received.values()), "a timer reached the engine twice"
