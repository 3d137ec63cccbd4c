"""segment_entry with the real engine: the instance of a member who joined runs to its end, and staying a member
does not start another (what the every-minute scan used to do); leaving and joining again does, unless the flow's
re-entry policy is `never`.

Only the engine runs as a process (`kalcifer-engine`); the entries run in-process, so nothing else follows the
segments of this module's database.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from kalcifer.engine.v1 import engine_pb2_grpc
from kalcifer_common.rpc.clients import internal_channel
from kalcifer_common.settings import SchedulerSettings
from kalcifer_scheduler.entries import ScheduledEntries
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.scheduler.support import new_token, seed_segment_flow
from tests.support.processes import BIN, free_port, wait_serving

_GOLD = [{"field": "attributes.tier", "operator": "eq", "value": "gold"}]
_OVERLAP = timedelta(seconds=SchedulerSettings.model_fields["segment_entry_overlap_seconds"].default)


@pytest.fixture(scope="module")
def real_engine(sched_database_url: str, logs: Path) -> Iterator[tuple[str, str]]:
    """`kalcifer-engine` on the module's database; (address, internal token). Its flows here set no timer, so the
    scheduler it would arm them on is not running."""
    token, port = new_token(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": sched_database_url,
        "KALCIFER_INTERNAL_TOKEN": token,
        "ENGINE_PORT": str(port),
        "SCHEDULER_ADDR": f"127.0.0.1:{free_port()}",
        "LOG_FORMAT": "json",
        "RPC_TIMEOUT_SECONDS": "3",
    }
    with (logs / "engine-segment-entry.log").open("ab") as log:
        process = subprocess.Popen([str(BIN / "kalcifer-engine")], env=env, stdout=log, stderr=log)
    try:
        wait_serving(f"127.0.0.1:{port}", process=process)
        yield f"127.0.0.1:{port}", token
    finally:
        process.terminate()
        process.wait(15)


@pytest.fixture
async def entries(real_engine: tuple[str, str], scheduler_role_db: AsyncEngine) -> AsyncIterator[ScheduledEntries]:
    """The flow_triggers run as the scheduler wires it, on the real engine."""
    address, token = real_engine
    channel = internal_channel(address, token=token, timeout_seconds=5)
    engine: engine_pb2_grpc.EngineServiceAsyncStub = engine_pb2_grpc.EngineServiceStub(channel)
    yield ScheduledEntries(scheduler_role_db, engine, overlap=_OVERLAP)
    await channel.close(grace=None)


async def test_a_member_whose_instance_ended_is_not_entered_again_until_they_leave_and_join_again(
    sched_db: AsyncEngine, entries: ScheduledEntries
) -> None:
    seeded = await seed_segment_flow(sched_db, rules=_GOLD, customers={"ann": {"tier": "gold"}, "bob": {}})

    at_activation = await entries.run_once()
    after_the_instance_ended = [await entries.run_once() for _ in range(3)]
    await seeded.set_attributes("ann", {"tier": "silver"})
    left = await entries.run_once()
    await seeded.set_attributes("ann", {"tier": "gold"})
    rejoined = await entries.run_once()

    assert (at_activation, after_the_instance_ended, left, rejoined) == (1, [0, 0, 0], 0, 1)
    assert await seeded.instances() == [("ann", "completed"), ("ann", "completed")]


async def test_joining_again_does_not_enter_a_flow_that_is_never_re_entered(
    sched_db: AsyncEngine, entries: ScheduledEntries
) -> None:
    seeded = await seed_segment_flow(sched_db, re_entry="never", rules=_GOLD, customers={"ann": {"tier": "gold"}})

    entered = await entries.run_once()
    await seeded.set_attributes("ann", {"tier": "silver"})
    await entries.run_once()
    await seeded.set_attributes("ann", {"tier": "gold"})
    rejoined = await entries.run_once()

    assert (entered, rejoined) == (1, 0)
    assert await seeded.instances() == [("ann", "completed")]


async def test_an_engine_that_is_not_there_leaves_the_join_owed(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, entries: ScheduledEntries
) -> None:
    seeded = await seed_segment_flow(sched_db, rules=_GOLD, customers={"cy": {"tier": "gold"}})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as nobody:
        unreachable = ScheduledEntries(scheduler_role_db, engine_pb2_grpc.EngineServiceStub(nobody), overlap=_OVERLAP)
        assert await unreachable.run_once() == 0

    assert await entries.run_once() == 1
    assert await seeded.instances() == [("cy", "completed")]
