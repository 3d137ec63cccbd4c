"""The scheduler's own health: NOT_SERVING while PostgreSQL, Redis or the engine is unreachable, SERVING again
after."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kalcifer_common.db.health import DatabaseProbe
from kalcifer_common.logging import get_logger
from kalcifer_common.rpc.server import GrpcServer
from redis.asyncio import Redis

from kalcifer_scheduler.stats import SchedulerStats

_log = get_logger(__name__)

_PROBE_TIMEOUT_SECONDS = 1.5


class HealthMonitor:
    """Probes PostgreSQL (`SELECT 1`), Redis (PING) and the engine (gRPC health) on a period and reports through
    the server's health."""

    def __init__(
        self,
        *,
        server: GrpcServer,
        database: DatabaseProbe,
        redis: Redis,
        engine_channel: grpc.aio.Channel,
        stats: SchedulerStats,
        interval_seconds: float,
        stats_interval_seconds: float,
    ) -> None:
        self._server = server
        self._database = database
        self._redis = redis
        self._engine_health = health_pb2_grpc.HealthStub(engine_channel)
        self._stats = stats
        self._interval = interval_seconds
        self._stats_interval = stats_interval_seconds
        self._serving = True

    async def probe(self) -> dict[str, bool]:
        """Whether each dependency answers right now."""
        database_ok, redis_ok, engine_ok = await asyncio.gather(
            self._database.answers(), self._redis_answers(), self._engine_answers()
        )
        return {"database": database_ok, "redis": redis_ok, "engine": engine_ok}

    async def run(self) -> None:
        """Probe forever; flip the health status on every change and log the counters periodically."""
        loop = asyncio.get_running_loop()
        next_stats = loop.time() + self._stats_interval
        while True:
            probes = await self.probe()
            serving = all(probes.values())
            if serving != self._serving:
                self._serving = serving
                await self._server.set_serving(serving)
                log = _log.info if serving else _log.warning
                log("health changed", serving=serving, **probes)
            if loop.time() >= next_stats:
                self._stats.log()
                next_stats = loop.time() + self._stats_interval
            await asyncio.sleep(self._interval)

    async def _redis_answers(self) -> bool:
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_SECONDS):
                return bool(await self._redis.ping())
        except (TimeoutError, OSError, ConnectionError) as error:
            _log.debug("redis probe failed", error=str(error))
            return False
        except Exception as error:  # noqa: BLE001 - any redis failure means "unreachable"
            _log.debug("redis probe failed", error=str(error))
            return False

    async def _engine_answers(self) -> bool:
        try:
            response = await self._engine_health.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=_PROBE_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
