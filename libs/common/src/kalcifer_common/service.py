"""What every service process does around its own composition root: logging, the database, the signal loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import uvloop
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kalcifer_common.logging import get_logger
from kalcifer_common.rpc.server import GrpcServer, wait_for_shutdown_signal

_log = get_logger(__name__)


def run_service(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's `main` to its end on uvloop (libuv's event loop: less CPU per callback and per socket
    write than asyncio's own, which every RPC and every database round trip pays).

    Everything imported by now (modules, classes, protobuf descriptors, SQLAlchemy tables: most of the heap, and
    all of it for good) is moved out of the garbage collector's sight first: a full collection no longer walks it,
    and each one had paused a service for 100 ms and more under load (the tail of every latency it served).
    """
    gc.collect()
    gc.freeze()
    uvloop.run(main)


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


# A dependency check: True when the dependency answers right now (e.g. `DatabaseProbe.answers`).
Probe = Callable[[], Awaitable[bool]]


async def report_health(server: GrpcServer, probes: Mapping[str, Probe], *, interval_seconds: float) -> None:
    """Probe the dependencies every `interval_seconds`, forever: `server` reports NOT_SERVING while any of them
    does not answer (PostgreSQL restarting), SERVING again once all do; each change is logged."""
    serving = True
    while True:
        answers = dict(zip(probes, await asyncio.gather(*(probe() for probe in probes.values())), strict=True))
        if all(answers.values()) != serving:
            serving = not serving
            await server.set_serving(serving)
            (_log.info if serving else _log.warning)("health changed", server=server.name, serving=serving, **answers)
        await asyncio.sleep(interval_seconds)


async def serve_until_signal(
    server: GrpcServer,
    *,
    cleanup: list[Callable[[], Awaitable[None]]],
    health: Mapping[str, Probe] | None = None,
    health_interval_seconds: float = 2.0,
) -> None:
    """Start `server` (reporting its `health` probes' verdict, see `report_health`), wait for SIGTERM/SIGINT,
    drain, then run `cleanup` in reverse order."""
    reporting: asyncio.Task[None] | None = None
    try:
        await server.start()
        if health:
            reporting = asyncio.create_task(report_health(server, health, interval_seconds=health_interval_seconds))
        await wait_for_shutdown_signal()
    finally:
        if reporting is not None:
            reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reporting
        await server.stop()
        for step in reversed(cleanup):
            try:
                await step()
            except Exception:  # noqa: BLE001 - one failing cleanup must not skip the others
                _log.exception("cleanup failed")
