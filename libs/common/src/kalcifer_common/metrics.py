"""Each process's Prometheus `/metrics` (`prometheus-client`, the default registry) and the periodic refresh of the
gauges that are read from PostgreSQL or Redis.

The endpoint is plain HTTP on its own port (`API_METRICS_PORT`, `ENGINE_METRICS_PORT`, `SCHEDULER_METRICS_PORT`;
0 = none), served from a daemon thread so a scrape never waits on the event loop, nor the loop on a scrape. What
it shows: the process's own (CPU, memory, file descriptors, GC), every RPC (`rpc.metrics`) and what the service
registers (the engine's runs and instances, the scheduler's timers, queues and deliveries). Gauges that cost a
query are refreshed every `METRICS_REFRESH_SECONDS` by a `PeriodicRefresh`, not on scrape: the cost is bounded
whoever scrapes and however often.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import cast
from wsgiref.simple_server import WSGIServer

import prometheus_client

from kalcifer_common.logging import get_logger

_log = get_logger(__name__)


class MetricsEndpoint:
    """`/metrics` on `port` of every interface (0: no endpoint), started and stopped with the process."""

    def __init__(self, port: int, *, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from other hosts
        self._port = port
        self._host = host
        self._server: WSGIServer | None = None

    @property
    def enabled(self) -> bool:
        """Whether a port is configured."""
        return self._port != 0

    def start(self) -> None:
        """Listen (OSError when the port is taken: a clash is a misconfiguration, like the gRPC port's)."""
        if not self.enabled:
            return
        # `_created` series double every counter's and histogram's lines and say little a restart does not.
        cast(Callable[[], None], prometheus_client.disable_created_metrics)()
        self._server, _ = prometheus_client.start_http_server(self._port, addr=self._host)
        _log.info("metrics serving", port=self._port, path="/metrics")

    async def stop(self) -> None:
        """Stop listening, in the background: the server notices within its poll interval (half a second), which
        a shutdown need not wait for (the thread is a daemon; an in-flight scrape finishes in its own)."""
        server, self._server = self._server, None
        if server is not None:

            def close() -> None:
                server.shutdown()
                server.server_close()

            threading.Thread(target=close, name="metrics-stop", daemon=True).start()


class PeriodicRefresh:
    """Runs `refresh` now and then every `interval_seconds` in the background, until stopped. A failed refresh
    (PostgreSQL or Redis away) leaves the gauges at their last values and is tried again next period."""

    def __init__(self, name: str, refresh: Callable[[], Awaitable[None]], *, interval_seconds: float) -> None:
        self._name = name
        self._refresh = refresh
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start refreshing in the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"refresh-{self._name}")

    async def stop(self) -> None:
        """Stop refreshing."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        failing = False
        while True:
            try:
                await self._refresh()
                if failing:
                    _log.info("metrics refresh recovered", gauges=self._name)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - a gauge must never take the process down
                if not failing:  # once per outage, not once per period
                    _log.warning("metrics refresh failed; will retry", gauges=self._name, error=repr(error))
                failing = True
            await asyncio.sleep(self._interval)
