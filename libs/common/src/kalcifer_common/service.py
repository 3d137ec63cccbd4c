"""What every service process does around its own composition root: logging, the database, the signal loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kalcifer_common.logging import get_logger
from kalcifer_common.rpc.server import GrpcServer, wait_for_shutdown_signal

_log = get_logger(__name__)


async def wait_for_database(engine: AsyncEngine, *, timeout_seconds: float = 30.0) -> None:
    """Block until PostgreSQL answers, with backoff; raise after the timeout so a supervisor can restart us."""
    delay = 0.2
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while True:
        try:
            async with asyncio.timeout(5):
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
            return
        except Exception as error:  # any failure to connect means "not ready yet"
            if loop.time() + delay > deadline:
                raise RuntimeError(f"database unreachable after {timeout_seconds:.0f}s: {error}") from error
            _log.warning("database not ready", error=str(error), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


async def serve_until_signal(server: GrpcServer, *, cleanup: list[Callable[[], Awaitable[None]]]) -> None:
    """Start `server`, wait for SIGTERM/SIGINT, drain, then run `cleanup` in reverse order."""
    try:
        await server.start()
        await wait_for_shutdown_signal()
    finally:
        await server.stop()
        for step in reversed(cleanup):
            try:
                await step()
            except Exception:  # noqa: BLE001 - one failing cleanup must not skip the others
                _log.exception("cleanup failed")
