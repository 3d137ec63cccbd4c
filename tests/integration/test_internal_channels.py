"""Internal channels spread calls over every replica an address names, and keep calling those left when one goes
(SPEC 2: every service runs as N replicas behind ordinary gRPC load balancing)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kalcifer_common.rpc.clients import internal_channel
from kalcifer_common.rpc.server import GrpcServer

from tests.support.eventually import eventually

CALLS = 40


class _CountCalls(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts the calls a server received under its replica's name."""

    def __init__(self, name: str, counts: Counter[str]) -> None:
        self._name = name
        self._counts = counts

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],  # type: ignore[type-arg]
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        self._counts[self._name] += 1
        return await continuation(handler_call_details)


@pytest.fixture
async def two_replicas() -> AsyncIterator[tuple[dict[str, GrpcServer], Counter[str]]]:
    """Two servers of one service on their own ports, each counting the calls it got."""
    counts: Counter[str] = Counter()
    servers = {
        name: GrpcServer(name=name, bindings=[], port=0, host="127.0.0.1", interceptors=[_CountCalls(name, counts)])
        for name in ("first", "second")
    }
    for server in servers.values():
        await server.start()
    try:
        yield servers, counts
    finally:
        for server in servers.values():
            await server.stop()


def _address(servers: dict[str, GrpcServer]) -> str:
    """The gRPC target naming both replicas, as an ENGINE_ADDR or SCHEDULER_ADDR may."""
    return "ipv4:" + ",".join(f"127.0.0.1:{server.bound_port}" for server in servers.values())


async def _check(channel: grpc.aio.Channel) -> None:
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


async def test_calls_are_spread_over_every_replica_the_address_names(
    two_replicas: tuple[dict[str, GrpcServer], Counter[str]],
) -> None:
    servers, counts = two_replicas
    channel = internal_channel(_address(servers), token="t", timeout_seconds=5)
    try:
        await _check(channel)  # connected: round_robin connects to every address at once

        async def both_served() -> Counter[str]:
            before = counts.copy()
            for _ in range(CALLS):
                await _check(channel)
            return counts - before

        spread = await eventually(
            both_served, until=lambda got: got["first"] > 0 and got["second"] > 0, within=20, what="calls to both"
        )
    finally:
        await channel.close(None)
    # round_robin over two ready replicas: each gets half, give or take the moment the second became ready
    assert abs(spread["first"] - spread["second"]) <= CALLS // 4, spread


async def test_calls_go_on_to_the_replica_left_when_one_stops(
    two_replicas: tuple[dict[str, GrpcServer], Counter[str]],
) -> None:
    servers, counts = two_replicas
    channel = internal_channel(_address(servers), token="t", timeout_seconds=5)
    try:
        await _check(channel)
        await servers["second"].stop()

        async def all_answered_by_the_first() -> Counter[str] | None:
            before = counts.copy()
            try:
                for _ in range(CALLS):
                    await _check(channel)
            except grpc.aio.AioRpcError as error:  # the moment the channel still picked the stopped replica
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                return None
            return counts - before

        after = await eventually(
            all_answered_by_the_first,
            until=lambda got: got is not None and got["first"] == CALLS,
            within=20,
            what="every call answered by the replica left",
        )
    finally:
        await channel.close(None)
    assert after is not None
    assert after["second"] == 0
