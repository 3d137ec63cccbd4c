"""Fixtures shared by the whole suite: the run's own database and Redis db, and the services as processes.

The suite runs under pytest-xdist (`make test` passes `-n`): each worker is a process with its own session, so
its own database, Redis db and services. The servers themselves are started once, by the controller, when no
TEST_DATABASE_URL / TEST_REDIS_URL names them: it exports their URLs before the workers start. A serial run
(`make test-unit`, a single file) starts them only when a test needs them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.support.databases import scratch_database, scratch_redis_db, server_urls
from tests.support.processes import Suite, running_suite

_EMBEDDED = contextlib.ExitStack()

# A service a test starts serves no /metrics unless the test gives it a port (`Suite` does, from free ports):
# the defaults (9500, 9510, 9520) would clash between parallel workers, replicas, and a `make run` on the machine.
for _variable in ("API_METRICS_PORT", "ENGINE_METRICS_PORT", "SCHEDULER_METRICS_PORT"):
    os.environ[_variable] = "0"

# Property tests check values, not time: on a shared, loaded machine a slow example is no failure.
hypothesis_settings.register_profile("kalcifer", deadline=None)
hypothesis_settings.load_profile("kalcifer")


def _start_servers() -> None:
    """Start the embedded servers if TEST_DATABASE_URL / TEST_REDIS_URL name none, and export their URLs."""
    if os.environ.get("TEST_DATABASE_URL") and os.environ.get("TEST_REDIS_URL"):
        return
    database_url, redis_url = _EMBEDDED.enter_context(server_urls())
    os.environ["TEST_DATABASE_URL"], os.environ["TEST_REDIS_URL"] = database_url, redis_url


def pytest_configure(config: pytest.Config) -> None:
    """The controller of a parallel run starts the servers before its workers start, so they inherit the URLs
    (a serial run starts them on first use, in `servers`; a worker never does)."""
    if not hasattr(config, "workerinput") and config.getoption("numprocesses", None):
        _start_servers()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the embedded servers this process started (none when TEST_* named the servers)."""
    _EMBEDDED.close()


@pytest.fixture(scope="session")
def servers() -> tuple[str, str]:
    """PostgreSQL and Redis server URLs of this run (TEST_DATABASE_URL / TEST_REDIS_URL, else embedded)."""
    _start_servers()
    return os.environ["TEST_DATABASE_URL"], os.environ["TEST_REDIS_URL"]


@pytest.fixture(scope="session")
def database_url(servers: tuple[str, str]) -> Iterator[str]:
    """This run's own migrated database; dropped at the end of the run."""
    with scratch_database(servers[0]) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(servers: tuple[str, str]) -> Iterator[str]:
    """This run's own Redis db; emptied at the end of the run."""
    with scratch_redis_db(servers[1]) as url:
        yield url


@pytest.fixture(scope="session")
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An async engine on the run's database, created inside the session's event loop."""
    from kalcifer_common.db.session import create_engine

    engine = create_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessions(db_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on the run's database."""
    from kalcifer_common.db.session import create_sessionmaker

    return create_sessionmaker(db_engine)


@pytest.fixture(scope="session")
def suite(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """api, engine and scheduler as real processes on free ports, sharing the run's database and Redis db."""
    log_dir: Path = tmp_path_factory.mktemp("suite-logs")
    with running_suite(database_url, redis_url, log_dir) as running:
        yield running
