"""Redis is not the truth: the scheduler's own Redis server stops and comes back empty, and nothing is lost.

The scheduler gets a private real Redis (the embedded `redis-server`) so the test can stop and restart it without
touching the Redis other test runs share.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from kalcifer_cli.embedded import EmbeddedRedis

from tests.integration.scheduler.support import (
    SWEEP_SECONDS,
    RecordingEngine,
    SchedulerProcess,
    Seeder,
    schedule_at,
    scheduler_env,
    utc_now,
)
from tests.support.eventually import eventually
from tests.support.processes import free_port, health_status


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A Redis server of this module's own, on a fixed port so it can come back at the same address."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("private-redis"), port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def outage_scheduler(
    private_redis: EmbeddedRedis, sched_database_url: str, engine: RecordingEngine, token: str, logs: Path
) -> Iterator[SchedulerProcess]:
    """A scheduler on the private Redis."""
    env = scheduler_env(sched_database_url, private_redis.url, engine.address, token)
    process = SchedulerProcess(env, logs / "outage.log").start()
    yield process
    process.stop()


def _all_fired(engine: RecordingEngine, waits: Sequence[str]) -> bool:
    return all(engine.applied_for(waits).values())


async def test_timers_fire_through_a_redis_outage_and_a_restart_that_comes_back_empty(
    outage_scheduler: SchedulerProcess,
    private_redis: EmbeddedRedis,
    token: str,
    engine: RecordingEngine,
    seeder: Seeder,
) -> None:
    address = outage_scheduler.address
    before = [utc_now() + timedelta(seconds=1.5) for _ in range(50)]
    armed = await seeder.waits(before)
    await schedule_at(address, token, armed, before)

    private_redis.stop()
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    await eventually(
        lambda: health_status(address), until=lambda status: status == not_serving, within=5, what="NOT_SERVING"
    )
    # While Redis is gone the table is the only record: the sweep fires the armed timers...
    waits = [wait for _, wait in armed]
    await eventually(
        lambda: _all_fired(engine, waits), within=1.5 + 2 * SWEEP_SECONDS + 2, what="the armed timers firing"
    )
    # ...and the ones the engine could not even arm (ScheduleResume is UNAVAILABLE meanwhile).
    unarmed_times = [utc_now() + timedelta(seconds=0.5) for _ in range(20)]
    unarmed_pairs = await seeder.waits(unarmed_times)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await schedule_at(address, token, unarmed_pairs, unarmed_times)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    unarmed = [wait for _, wait in unarmed_pairs]
    await eventually(
        lambda: _all_fired(engine, unarmed), within=0.5 + 2 * SWEEP_SECONDS + 2, what="the unarmed waits firing"
    )
    for wait, moment in zip(unarmed, unarmed_times, strict=True):
        assert engine.applied_for([wait])[wait][0].at >= moment.timestamp()

    private_redis.start()  # the same address, nothing in it
    serving = health_pb2.HealthCheckResponse.SERVING
    await eventually(
        lambda: health_status(address), until=lambda status: status == serving, within=5, what="SERVING again"
    )
    after = [datetime.now(UTC) + timedelta(seconds=1) for _ in range(30)]
    rearmed = await seeder.waits(after)
    await schedule_at(address, token, rearmed, after)
    later = [wait for _, wait in rearmed]
    await eventually(
        lambda: _all_fired(engine, later), within=1 + 2 * SWEEP_SECONDS + 2, what="the re-armed timers firing"
    )

    everything = waits + unarmed + later
    assert all(len(arrivals) == 1 for arrivals in engine.received(everything).values())
