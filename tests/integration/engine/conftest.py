"""The engine's integration tests run on a database of their own (one per module).

They seed waits and deliveries of test-only node types; the session-wide `suite` runs a real scheduler that fires
every overdue wait and sends every pending delivery in its database, so sharing one would race them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.databases import scratch_database


@pytest.fixture(scope="module")
def database_url(servers: tuple[str, str]) -> Iterator[str]:
    """A migrated database of this module's own (overrides the run-wide one)."""
    with scratch_database(servers[0], prefix="kalcifer_engine") as url:
        yield url


@pytest.fixture(scope="module")
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An async engine on the module's database."""
    from kalcifer_common.db.session import create_engine

    engine = create_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def engine_role_db(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The module's database as the engine connects to it: as the `kalcifer_engine` role, with only its grants."""
    from kalcifer_common.db.session import create_engine
    from kalcifer_common.settings import EngineSettings

    engine = create_engine(database_url, role=EngineSettings().database_role, pool_size=5)
    yield engine
    await engine.dispose()
