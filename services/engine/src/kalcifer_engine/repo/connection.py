"""What the repo modules share: the asyncpg driver under a SQLAlchemy connection, JSON text for JSONB parameters,
and the errors a failing statement raises (which of them a retry can get past: `kalcifer_common.db.errors`).

The statements every run executes are constant SQL sent to the asyncpg driver inside the caller's transaction
(`driver`); the rarer ones are SQLAlchemy Core.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
from sqlalchemy import BindParameter, Uuid, bindparam, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

# What a failing statement raises: through SQLAlchemy, or straight from the driver (the hot-path statements).
DATABASE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under `conn`, inside the same transaction.

    The statements every run executes (lock, fire, write) go straight to the driver with constant SQL: asyncpg
    caches their prepared forms per connection, and SQLAlchemy's per-statement compile and cache-key work
    (about 0.15 ms each, measured) stays off the hot path (SPEC 9). JSONB goes in as JSON text and comes out
    decoded by the codec SQLAlchemy installed on the connection.
    """
    raw = await conn.get_raw_connection()
    adapter = raw.dbapi_connection
    # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement; a statement sent to the driver
    # before that would run outside the transaction (autocommit). Start it now: the BEGIN it would send anyway.
    if getattr(adapter, "_transaction", None) is None and conn.in_transaction():
        start = getattr(adapter, "_start_transaction", None)
        if start is not None:
            try:
                await start()
            except Exception:
                # SQLAlchemy did not see this fail: a connection the server cut must leave the pool here, or every
                # transaction that draws it fails the same way (without pre-ping nothing else would notice).
                await conn.invalidate()
                raise
        else:  # a future SQLAlchemy without the hook: any statement through it starts the transaction
            await conn.execute(select(literal(1)))
    return raw.driver_connection


def json_text(value: Any) -> str:
    """`value` as JSON text, for a `$n::jsonb` parameter of a driver statement."""
    # asyncpg hands back its own UUID type, which orjson does not know; str() is its canonical form.
    return orjson.dumps(value, default=str).decode()


def uuid_array(ids: Sequence[uuid.UUID]) -> BindParameter[Any]:
    """`ids` as one `uuid[]` parameter (for `= ANY(...)`): a batch may hold thousands of ids, and asyncpg takes at
    most 32,767 parameters per statement."""
    return bindparam("ids", list(ids), type_=ARRAY(Uuid()))
