"""Fixtures of the scheduler tests: their own database and Redis db (no other scheduler sweeps them), a
recording EngineService, and one scheduler process shared by the tests that need no crash of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.scheduler.support import (
    RecordingEngine,
    SchedulerProcess,
    Seeder,
    new_token,
    scheduler_env,
)
from tests.support.databases import scratch_database, scratch_redis_db


@pytest.fixture(scope="module")
def sched_database_url(servers: tuple[str, str]) -> Iterator[str]:
    """A migrated database of this module's own."""
    with scratch_database(servers[0], prefix="kalcifer_sched") as url:
        yield url


@pytest.fixture(scope="module")
def sched_redis_url(servers: tuple[str, str]) -> Iterator[str]:
    """A Redis db of this module's own."""
    with scratch_redis_db(servers[1]) as url:
        yield url


@pytest.fixture(scope="module")
async def sched_db(sched_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the module's database."""
    from kalcifer_common.db.session import create_engine

    engine = create_engine(sched_database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def scheduler_role_db(sched_database_url: str) -> AsyncIterator[AsyncEngine]:
    """The module's database as the scheduler connects to it: as `kalcifer_scheduler`, with only its grants."""
    from kalcifer_common.db.session import create_engine
    from kalcifer_common.settings import SchedulerSettings

    engine = create_engine(sched_database_url, role=SchedulerSettings().database_role, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def engine(sched_db: AsyncEngine) -> AsyncIterator[RecordingEngine]:
    """The recording EngineService."""
    recording = RecordingEngine(sched_db)
    await recording.start()
    yield recording
    await recording.stop()


@pytest.fixture(scope="module")
async def seeder(sched_db: AsyncEngine) -> Seeder:
    """A tenant and flow to hang waits on."""
    seeding = Seeder(sched_db)
    await seeding.setup()
    return seeding


@pytest.fixture(scope="module")
def token() -> str:
    """The internal token of this module's schedulers."""
    return new_token()


@pytest.fixture(scope="module")
def env(sched_database_url: str, sched_redis_url: str, engine: RecordingEngine, token: str) -> dict[str, str]:
    """Environment for scheduler processes of this module."""
    return scheduler_env(sched_database_url, sched_redis_url, engine.address, token)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where scheduler processes log."""
    return tmp_path_factory.mktemp("scheduler-logs")


@pytest.fixture(scope="module")
def scheduler(env: dict[str, str], logs: Path) -> Iterator[SchedulerProcess]:
    """One scheduler process for the module."""
    process = SchedulerProcess(env, logs / "shared.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
async def channel(scheduler: SchedulerProcess) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the shared scheduler."""
    async with grpc.aio.insecure_channel(scheduler.address) as opened:
        yield opened
