"""Timers end to end on real Redis and PostgreSQL: on time, never early, never twice, never lost."""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import datetime, timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2
from kalcifer.scheduler.v1 import scheduler_pb2
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.scheduler.support import (
    SWEEP_SECONDS,
    RecordingEngine,
    SchedulerProcess,
    Seeder,
    schedule,
    scheduler_stub,
    swept_by,
    timestamp,
    utc_now,
    violations_of,
)
from tests.support.eventually import eventually
from tests.support.processes import health_status
from tests.support.rpc import bearer


async def _had_every_chance_to_fire(
    moment: datetime,
    channel: grpc.aio.Channel,
    token: str,
    engine: RecordingEngine,
    seeder: Seeder,
    scheduler: SchedulerProcess,
) -> None:
    """Wait for proof that the scheduler had every chance to fire a wait due at `moment`: a timer armed for half
    a sweep period later fired (bucket jobs pop timers in fire-time order), then it swept twice with the wait
    overdue by more than its grace (0.2 s here)."""
    later = moment + timedelta(seconds=SWEEP_SECONDS / 2)
    pairs = await seeder.waits([later])
    await schedule(channel, token, pairs, [later])
    wait = pairs[0][1]
    await eventually(
        lambda: engine.applied_for([wait])[wait], within=SWEEP_SECONDS + 5, what="a timer armed for later firing"
    )
    await swept_by([scheduler], seeder, engine)


async def test_a_two_second_wait_fires_after_two_seconds_and_within_the_sweep_period(
    channel: grpc.aio.Channel, token: str, engine: RecordingEngine, seeder: Seeder
) -> None:
    fire = utc_now() + timedelta(seconds=2)
    pairs = await seeder.waits([fire])
    stub = scheduler_stub(channel)
    instance, wait = pairs[0]
    first = await stub.ScheduleResume(
        scheduler_pb2.ScheduleResumeRequest(instance_id=instance, wait_id=wait, fire_time=timestamp(fire)),
        metadata=bearer(token),
    )
    again = await stub.ScheduleResume(
        scheduler_pb2.ScheduleResumeRequest(instance_id=instance, wait_id=wait, fire_time=timestamp(fire)),
        metadata=bearer(token),
    )
    assert (first.scheduled, again.scheduled) == (True, False)

    [arrival] = await eventually(lambda: engine.applied_for([wait])[wait], within=6, what="the timer firing")
    lateness = arrival.at - fire.timestamp()
    assert 0 <= lateness <= SWEEP_SECONDS, lateness
    assert arrival.trigger == "timer"
    assert arrival.instance_id == instance


async def test_wait_until_in_the_past_fires_at_once(
    channel: grpc.aio.Channel, token: str, engine: RecordingEngine, seeder: Seeder
) -> None:
    fire = utc_now() - timedelta(hours=3)
    pairs = await seeder.waits([fire])
    await schedule(channel, token, pairs, [fire])
    scheduled_at = utc_now().timestamp()
    wait = pairs[0][1]

    [arrival] = await eventually(lambda: engine.applied_for([wait])[wait], within=3, what="the timer firing")
    assert arrival.at - scheduled_at < 0.5


async def test_a_cancelled_timer_never_resumes(
    channel: grpc.aio.Channel,
    token: str,
    engine: RecordingEngine,
    seeder: Seeder,
    sched_db: AsyncEngine,
    scheduler: SchedulerProcess,
) -> None:
    fire = utc_now() + timedelta(seconds=0.5)
    pairs = await seeder.waits([fire], kind="event")
    await schedule(channel, token, pairs, [fire])
    wait = pairs[0][1]
    # What the engine does when the awaited event arrives first: resolve the wait row, then cancel the timer.
    async with sched_db.begin() as connection:
        await connection.execute(
            text("UPDATE waits SET status = 'cancelled', resolved_time = now() WHERE id = :id"), {"id": wait}
        )
    response = await scheduler_stub(channel).CancelResume(
        scheduler_pb2.CancelResumeRequest(wait_id=wait), metadata=bearer(token)
    )
    assert response.cancelled is True

    # Past its fire time, and two sweeps: nothing reached the engine.
    await _had_every_chance_to_fire(fire, channel, token, engine, seeder, scheduler)
    assert not engine.received([wait])[wait]


async def test_an_event_wait_that_times_out_resumes_with_the_timeout_trigger(
    channel: grpc.aio.Channel, token: str, engine: RecordingEngine, seeder: Seeder
) -> None:
    fire = utc_now() + timedelta(seconds=0.3)
    pairs = await seeder.waits([fire], kind="event")
    await schedule(channel, token, pairs, [fire])
    wait = pairs[0][1]

    [arrival] = await eventually(lambda: engine.applied_for([wait])[wait], within=3, what="the timeout firing")
    assert arrival.trigger == "timeout"


async def test_a_wait_nobody_armed_fires_from_its_row(
    engine: RecordingEngine, seeder: Seeder, scheduler: object
) -> None:
    # The engine committed the wait but its ScheduleResume never arrived: the horizon arming or the sweep fires it.
    fire = utc_now() + timedelta(seconds=1.5)
    wait = (await seeder.waits([fire]))[0][1]

    [arrival] = await eventually(lambda: engine.applied_for([wait])[wait], within=6, what="the unarmed wait firing")
    lateness = arrival.at - fire.timestamp()
    assert 0 <= lateness <= 2 * SWEEP_SECONDS, lateness


async def test_waits_of_paused_instances_are_held(
    channel: grpc.aio.Channel, token: str, engine: RecordingEngine, seeder: Seeder, scheduler: SchedulerProcess
) -> None:
    fire = utc_now() + timedelta(seconds=0.2)
    pairs = await seeder.waits([fire], instance_status="paused")
    await schedule(channel, token, pairs, [fire])
    wait = pairs[0][1]

    await _had_every_chance_to_fire(fire, channel, token, engine, seeder, scheduler)
    assert not engine.received([wait])[wait]


async def test_a_thousand_timers_due_within_one_second_all_fire_none_early(
    channel: grpc.aio.Channel, token: str, engine: RecordingEngine, seeder: Seeder
) -> None:
    start = utc_now() + timedelta(seconds=1.5)
    fire_times = [start + timedelta(milliseconds=i) for i in range(1000)]
    pairs = await seeder.waits(fire_times)
    assert await schedule(channel, token, pairs, fire_times) == 1000
    waits = [wait for _, wait in pairs]

    await eventually(lambda: all(engine.applied_for(waits).values()), within=10, what="all 1,000 timers firing")
    applied = engine.applied_for(waits)
    assert all(len(arrivals) == 1 for arrivals in applied.values())
    lateness = sorted(
        arrivals[0].at - moment.timestamp()
        for (_, wait), moment in zip(pairs, fire_times, strict=True)
        for arrivals in [applied[wait]]
    )
    assert lateness[0] >= 0, f"fired {-lateness[0]:.3f}s early"
    p50, p99 = statistics.median(lateness), lateness[int(0.99 * len(lateness))]
    print(
        f"\n1,000 timers in 1 s: lateness min {lateness[0]:.3f}s p50 {p50:.3f}s p99 {p99:.3f}s max {lateness[-1]:.3f}s"
    )
    assert p99 < SWEEP_SECONDS


async def test_after_a_redis_flushall_all_100_waits_resume_exactly_once(
    channel: grpc.aio.Channel, token: str, engine: RecordingEngine, seeder: Seeder, sched_redis_url: str
) -> None:
    fire_times = [utc_now() + timedelta(seconds=1.5) for _ in range(100)]
    pairs = await seeder.waits(fire_times)
    await schedule(channel, token, pairs, fire_times)
    redis = Redis.from_url(sched_redis_url)
    try:
        await redis.flushdb()  # the test's own db: FLUSHALL would also empty other test runs' dbs
        assert await redis.zcard("kalcifer:timers") == 0
    finally:
        await redis.aclose()
    waits = [wait for _, wait in pairs]

    await eventually(
        lambda: all(engine.applied_for(waits).values()),
        within=1.5 + 2 * SWEEP_SECONDS + 1,
        what="all 100 waits firing after the flush",
    )
    assert all(len(arrivals) == 1 for arrivals in engine.applied_for(waits).values())
    assert all(len(arrivals) == 1 for arrivals in engine.received(waits).values())


async def test_bad_requests_are_invalid_argument_and_strangers_unauthenticated(
    channel: grpc.aio.Channel, token: str
) -> None:
    stub = scheduler_stub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await stub.ScheduleResume(
            scheduler_pb2.ScheduleResumeRequest(instance_id="nope", wait_id=""), metadata=bearer(token)
        )
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations_of(malformed.value)) == {"instance_id", "wait_id", "fire_time"}

    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await stub.CancelResumes(scheduler_pb2.CancelResumesRequest(), metadata=bearer(token))
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations_of(empty.value)) == {"wait_ids"}

    with pytest.raises(grpc.aio.AioRpcError) as stranger:
        await stub.CancelResume(scheduler_pb2.CancelResumeRequest(wait_id="x"), metadata=bearer("wrong"))
    assert stranger.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_is_not_serving_while_the_engine_is_down(
    engine: RecordingEngine, scheduler: SchedulerProcess
) -> None:
    await engine.stop()
    try:
        await eventually(
            lambda: health_status(scheduler.address),
            until=lambda status: status == health_pb2.HealthCheckResponse.NOT_SERVING,
            within=6,
            what="the scheduler NOT_SERVING",
        )
    finally:
        await engine.start()
    await eventually(
        lambda: health_status(scheduler.address),
        until=lambda status: status == health_pb2.HealthCheckResponse.SERVING,
        within=6,
        what="the scheduler SERVING again",
    )


async def test_a_batch_spread_over_many_buckets_arms_quickly_and_cancels_whole(
    channel: grpc.aio.Channel, token: str
) -> None:
    start = utc_now() + timedelta(seconds=5)
    pairs = [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(1000)]
    fire_times = [start + timedelta(milliseconds=50 * i) for i in range(1000)]  # 1,000 buckets over 50 s
    began = time.monotonic()
    scheduled = await schedule(channel, token, pairs, fire_times)
    took = time.monotonic() - began
    cancelled = await scheduler_stub(channel).CancelResumes(
        scheduler_pb2.CancelResumesRequest(wait_ids=[wait for _, wait in pairs]), metadata=bearer(token)
    )

    assert scheduled == 1000
    assert cancelled.cancelled == 1000
    assert took < 3.0, took


async def test_a_timer_due_while_the_engine_is_down_fires_once_it_is_back(
    channel: grpc.aio.Channel, token: str, engine: RecordingEngine, seeder: Seeder, scheduler: SchedulerProcess
) -> None:
    fire = utc_now() + timedelta(seconds=0.3)
    pairs = await seeder.waits([fire])
    await schedule(channel, token, pairs, [fire])
    wait = pairs[0][1]
    given_up = scheduler.log().count("resume batch failed")
    await engine.stop()
    try:
        # Due, then retried past the retry budget (2 s here), given up on and released for a later sweep.
        await eventually(
            lambda: scheduler.log().count("resume batch failed"),
            until=lambda count: count > given_up,
            within=0.3 + 2 + 3 + 2,
            what="the scheduler giving up on the resume",
        )
    finally:
        await engine.start()

    await eventually(
        lambda: engine.applied_for([wait])[wait], within=2 * SWEEP_SECONDS + 2, what="the timer firing once it is back"
    )
    assert len(engine.received([wait])[wait]) == 1
