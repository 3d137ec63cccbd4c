"""Engines and sessions: one async engine per process, one session per unit of work."""

from __future__ import annotations

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from kalcifer_common.db.urls import to_async_url


def dump_json(value: object) -> str:
    """`value` as JSON text (for JSONB columns and `$n::jsonb` driver parameters)."""
    # orjson is several times faster than the stdlib encoder, and JSONB columns are on every hot path.
    return orjson.dumps(value).decode()


def create_engine(
    url: str,
    *,
    role: str = "",
    pool_size: int = 10,
    max_overflow: int = 10,
    echo: bool = False,
    pre_ping: bool = True,
) -> AsyncEngine:
    """An asyncpg-backed engine for `url` (plain `postgresql://` URLs are accepted), JSON encoded by orjson.

    With `role`, every connection runs as that role (`SET ROLE` at connect, sent as a startup parameter): a
    service's SQL then has exactly the privileges the migrations granted its role (SPEC 10), whoever the URL's
    user is, as long as that user is a member of the role.

    `pre_ping` checks each pooled connection before use (extra round trips on every transaction); hot paths that
    answer a dropped connection with a retryable UNAVAILABLE turn it off. Create the engine inside the event loop
    that will use it and `await engine.dispose()` on shutdown.
    """
    return create_async_engine(
        to_async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping,
        echo=echo,
        json_serializer=dump_json,
        json_deserializer=orjson.loads,
        connect_args={"server_settings": {"role": role}} if role else {},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (`expire_on_commit=False`), as async code needs."""
    return async_sessionmaker(engine, expire_on_commit=False)
