"""Schema migrations, run from code: `upgrade_to_head` on start or from `kalcifer migrate`, no alembic.ini needed."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from kalcifer_common.db.urls import to_async_url

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")

# Alembic's `context` is a module-global proxy, so two migrations in one process (say, two threads of
# `upgrade_to_head_async`) would drive each other's environment. Processes are kept apart by env.py's advisory lock.
_IN_PROCESS_LOCK = threading.Lock()


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic configuration built in code: the package's migrations, and `database_url` as an attribute."""
    config = Config()
    # configparser interpolation treats '%' specially; the URL bypasses it entirely as an attribute.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if database_url is not None:
        config.attributes["database_url"] = database_url
    return config


def head_revision() -> str:
    """The newest revision this code ships (what `upgrade_to_head` brings a database to)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def upgrade_to_head(database_url: str) -> None:
    """Migrate the database at `database_url` to the newest revision; safe to run concurrently and repeatedly.

    Synchronous and runs its own event loop, so call it where no loop is running (use `upgrade_to_head_async`
    from async code).
    """
    _require_no_running_loop("upgrade_to_head", "await upgrade_to_head_async()")
    with _IN_PROCESS_LOCK:
        command.upgrade(alembic_config(database_url), "head")


def downgrade_to(database_url: str, revision: str) -> None:
    """Migrate the database at `database_url` down to `revision` (`"base"` drops everything); for tests and rescue."""
    _require_no_running_loop("downgrade_to", "call it through asyncio.to_thread()")
    with _IN_PROCESS_LOCK:
        command.downgrade(alembic_config(database_url), revision)


async def upgrade_to_head_async(database_url: str) -> None:
    """`upgrade_to_head` from async code: runs in a worker thread, which has no event loop of its own."""
    await asyncio.to_thread(upgrade_to_head, database_url)


def current_revision(database_url: str) -> str | None:
    """The revision the database at `database_url` is at; None if it was never migrated."""
    _require_no_running_loop("current_revision", "await current_revision_async()")
    return asyncio.run(current_revision_async(database_url))


async def current_revision_async(database_url: str) -> str | None:
    """`current_revision` from async code."""
    engine = create_async_engine(to_async_url(database_url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_revision_of)
    finally:
        await engine.dispose()


def _revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _require_no_running_loop(name: str, alternative: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{name}() runs its own event loop; from async code {alternative} instead")
