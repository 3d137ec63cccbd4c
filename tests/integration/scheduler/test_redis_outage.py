"""Redis is not the truth: the scheduler's own Redis server stops and comes back empty, and nothing is lost.

The scheduler gets a private real Redis (the embedded `redis-server`) so the test can stop and restart it without
touching the Redis other test runs share.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2
from kalcifer.scheduler.v1 import scheduler_pb2
from kalcifer_cli.embedded import EmbeddedRedis

from tests.integration.scheduler.support import (
    RecordingEngine,
    SchedulerProcess,
    Seeder,
    eventually,
    scheduler_env,
    scheduler_stub,
    utc_now,
)
from tests.support.processes import free_port, health_status
from tests.support.rpc import bearer

SWEEP_SECONDS = 1.0


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


async def _schedule(address: str, token: str, pairs: list[tuple[str, str]], fire_times: list[datetime]) -> None:
    resumes = []
    for (instance, wait), moment in zip(pairs, fire_times, strict=True):
        stamp = Timestamp()
        stamp.FromDatetime(moment)
        resumes.append(scheduler_pb2.ScheduleResumeRequest(instance_id=instance, wait_id=wait, fire_time=stamp))
    async with grpc.aio.insecure_channel(address) as channel:
        await scheduler_stub(channel).ScheduleResumes(
            scheduler_pb2.ScheduleResumesRequest(resumes=resumes), metadata=bearer(token)
        )


def _health(address: str) -> int | None:
    return health_status(address)


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
    await _schedule(address, token, armed, before)

    private_redis.stop()
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert await eventually(lambda: _health(address) == not_serving, within=5)
    # While Redis is gone the table is the only record: the sweep fires the armed timers...
    waits = [wait for _, wait in armed]
    assert await eventually(lambda: all(engine.applied_for(waits).values()), within=1.5 + 2 * SWEEP_SECONDS + 2)
    # ...and the ones the engine could not even arm (ScheduleResume is UNAVAILABLE meanwhile).
    unarmed_times = [utc_now() + timedelta(seconds=0.5) for _ in range(20)]
    unarmed_pairs = await seeder.waits(unarmed_times)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _schedule(address, token, unarmed_pairs, unarmed_times)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    unarmed = [wait for _, wait in unarmed_pairs]
    assert await eventually(lambda: all(engine.applied_for(unarmed).values()), within=0.5 + 2 * SWEEP_SECONDS + 2)
    for wait, moment in zip(unarmed, unarmed_times, strict=True):
        assert engine.applied_for([wait])[wait][0].at >= moment.timestamp()

    private_redis.start()  # the same address, nothing in it
    serving = health_pb2.HealthCheckResponse.SERVING
    assert await eventually(lambda: _health(address) == serving, within=5)
    after = [datetime.now(UTC) + timedelta(seconds=1) for _ in range(30)]
    rearmed = await seeder.waits(after)
    await _schedule(address, token, rearmed, after)
    later = [wait for _, wait in rearmed]
    assert await eventually(lambda: all(engine.applied_for(later).values()), within=1 + 2 * SWEEP_SECONDS + 2)

    everything = waits + unarmed + later
    assert all(len(arrivals) == 1 for arrivals in engine.received(everything).values())
