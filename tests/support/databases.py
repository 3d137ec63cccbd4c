"""A PostgreSQL database and a Redis db of the test run's own, on shared or embedded servers."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis

REPO_ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_DIR = REPO_ROOT / ".kalcifer" / "test"
REDIS_LOCK_KEY = "kalcifer:test-run-owner"
REDIS_LOCK_SECONDS = 6 * 3600


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database `name`."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _admin_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(_admin_dsn(url), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def cut_every_connection(url: str) -> int:
    """What a PostgreSQL restart does to the connections of a database: the server ends them (all but the one
    asking); how many it ended."""
    connection = await asyncpg.connect(_admin_dsn(url), timeout=10)
    try:
        cut: int = await connection.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
    return cut


@contextmanager
def server_urls() -> Iterator[tuple[str, str]]:
    """The PostgreSQL and Redis servers of this run: TEST_* variables, or embedded ones under .kalcifer/test."""
    database_url = os.environ.get("TEST_DATABASE_URL", "")
    redis_url = os.environ.get("TEST_REDIS_URL", "")
    if database_url and redis_url:
        yield database_url, redis_url
        return
    from kalcifer_cli.embedded import EmbeddedPostgres, EmbeddedRedis

    EMBEDDED_DIR.mkdir(parents=True, exist_ok=True)
    postgres = EmbeddedPostgres(EMBEDDED_DIR / "postgres") if not database_url else None
    redis_server = EmbeddedRedis(EMBEDDED_DIR / "redis") if not redis_url else None
    try:
        if postgres is not None:
            postgres.start()
            database_url = postgres.url
        if redis_server is not None:
            redis_server.start()
            redis_url = redis_server.url
        yield database_url, redis_url
    finally:
        if redis_server is not None:
            redis_server.stop()
        if postgres is not None:
            postgres.stop()


@contextmanager
def empty_database(server_url: str, *, prefix: str = "kalcifer_test") -> Iterator[str]:
    """A new, uniquely named, empty (never migrated) database on `server_url`; dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_execute(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(server_url, name)
    finally:
        asyncio.run(_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def scratch_database(server_url: str, *, prefix: str = "kalcifer_test") -> Iterator[str]:
    """A new, uniquely named, migrated database on `server_url`; dropped afterwards."""
    from kalcifer_common.db.migrate import upgrade_to_head

    with empty_database(server_url, prefix=prefix) as url:
        upgrade_to_head(url)
        yield url


@contextmanager
def scratch_redis_db(server_url: str) -> Iterator[str]:
    """A Redis logical db that no other test run holds: claimed with a lock key, flushed before and after."""
    parts = urlsplit(server_url)
    owner = f"{os.getpid()}-{uuid.uuid4().hex}"
    for db in range(1, 16):
        url = urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            if client.set(REDIS_LOCK_KEY, owner, nx=True, ex=REDIS_LOCK_SECONDS):
                try:
                    _flush_except_lock(client)
                    yield url
                finally:
                    _flush_except_lock(client)
                    client.delete(REDIS_LOCK_KEY)
                return
        finally:
            client.close()
    raise RuntimeError("every Redis db 1-15 is held by another test run")


def _flush_except_lock(client: redis.Redis) -> None:
    keys = [k for k in client.scan_iter(count=1000) if k != REDIS_LOCK_KEY.encode()]
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
