"""Alembic environment for Kalcifer: async (asyncpg), configured in code by `kalcifer_common.db.migrate`.

The database URL comes from `config.attributes["database_url"]` (never from an .ini file: configparser would
mangle a `%` in an encoded password), else the `sqlalchemy.url` option, else `DATABASE_URL`. A caller may also
pass an open synchronous connection as `config.attributes["connection"]`.

Several processes may migrate at once (every replica on start, `make run` and a test run side by side), so the
migration transaction first takes a transaction-scoped advisory lock: the first one migrates, the others wait,
then find the database at head and do nothing.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from kalcifer_common.db.models import Base
from kalcifer_common.db.urls import to_async_url, to_sync_url
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

# pg_advisory_xact_lock key shared by every Kalcifer migrator ("kalcmigr" in ASCII).
MIGRATION_LOCK_KEY = 0x6B616C636D696772

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = (
        config.attributes.get("database_url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("DATABASE_URL", "")
    )
    if not url:
        raise RuntimeError("no database URL: pass one to kalcifer_common.db.migrate or set DATABASE_URL")
    return str(url)


def _run_offline() -> None:
    """`alembic upgrade --sql`: print the DDL instead of running it."""
    context.configure(
        url=to_sync_url(_database_url()),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def _run_online(url: str) -> None:
    engine = create_async_engine(to_async_url(url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_on)
    finally:
        await engine.dispose()


def _main() -> None:
    if context.is_offline_mode():
        _run_offline()
        return
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run_on(connection)
        return
    asyncio.run(_run_online(_database_url()))


_main()
