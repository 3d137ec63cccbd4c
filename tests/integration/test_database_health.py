"""Every service's health follows PostgreSQL: NOT_SERVING while it does not answer, SERVING once it does again,
without a restart. (`make chaos` found a PostgreSQL restart went unreported: every service stayed SERVING.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kalcifer_common.db.health import DatabaseProbe
from kalcifer_common.rpc.server import GrpcServer
from kalcifer_common.service import report_health

from tests.support.databases import cut_every_connection, scratch_database
from tests.support.eventually import eventually
from tests.support.processes import free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def own_database_url(servers: tuple[str, str]) -> Iterator[str]:
    """A database of this module's own, so that cutting every connection of it disturbs no other test."""
    with scratch_database(servers[0], prefix="kalcifer_probe") as url:
        yield url


async def test_the_probe_reconnects_at_once_after_the_server_cut_its_connection(own_database_url: str) -> None:
    probe = DatabaseProbe(own_database_url, role="kalcifer_engine")
    try:
        assert await probe.answers()
        assert await cut_every_connection(own_database_url) >= 1

        assert await probe.answers()
    finally:
        await probe.close()


async def test_the_probe_says_down_within_its_timeout_when_nothing_answers() -> None:
    probe = DatabaseProbe(f"postgresql://postgres@127.0.0.1:{free_port()}/kalcifer", timeout_seconds=1.0)
    try:
        began = time.monotonic()
        assert not await probe.answers()
        assert time.monotonic() - began < 2.0
    finally:
        await probe.close()


async def test_a_server_is_not_serving_while_a_dependency_is_down_and_serving_again_after() -> None:
    database_up = True

    async def database() -> bool:
        return database_up

    server = GrpcServer(name="health-test", bindings=[], port=0, host="127.0.0.1")
    await server.start()
    reporting = asyncio.create_task(report_health(server, {"database": database}, interval_seconds=0.05))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status() -> int:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                return int(answer.status)

            assert await status() == SERVING
            database_up = False
            await eventually(status, until=lambda seen: seen == NOT_SERVING, within=5, what="NOT_SERVING")
            database_up = True
            await eventually(status, until=lambda seen: seen == SERVING, within=5, what="SERVING again")
    finally:
        reporting.cancel()
        await asyncio.gather(reporting, return_exceptions=True)
        await server.stop()
