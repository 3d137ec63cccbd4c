"""The RPC metrics interceptor records the code each client actually got, for unary and streaming calls alike:
returned, set, aborted (how every mapped error leaves a servicer), raised, past its deadline, cancelled.

A real grpc.aio server on loopback with a health servicer that misbehaves on request, behind the interceptor with
metrics of the test's own registry (so nothing else in the process moves them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kalcifer_common.rpc.metrics import RpcMetrics, RpcMetricsInterceptor
from prometheus_client import CollectorRegistry

from tests.support.eventually import eventually

SERVICE = "grpc.health.v1.Health"
Request = health_pb2.HealthCheckRequest


class Misbehaving(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # grpc_health ships no types
    """Check and Watch do what the request's `service` names."""

    async def Check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if request.service == "abort":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        if request.service == "set-code":
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            return health_pb2.HealthCheckResponse()
        if request.service == "raise":
            raise ValueError("a bug")
        if request.service == "slow":
            await asyncio.sleep(30)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        if request.service == "abort":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no more")
        if request.service == "forever":
            await asyncio.sleep(30)
        yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)


@dataclass(frozen=True)
class Served:
    """A channel to the misbehaving server and the registry of its interceptor's metrics."""

    channel: grpc.aio.Channel
    registry: CollectorRegistry

    @property
    def stub(self) -> health_pb2_grpc.HealthStub:
        return health_pb2_grpc.HealthStub(self.channel)

    def handled(self, method: str, code: str) -> float:
        labels = {"service": SERVICE, "method": method, "code": code}
        return self.registry.get_sample_value("kalcifer_rpc_server_handled_total", labels) or 0.0


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    registry = CollectorRegistry()
    server = grpc.aio.server(interceptors=[RpcMetricsInterceptor(RpcMetrics.create(registry))])
    health_pb2_grpc.add_HealthServicer_to_server(Misbehaving(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(channel, registry)
    finally:
        await server.stop(None)


async def client_code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_each_unary_call_is_counted_with_the_code_its_client_got(
    served: Served,
) -> None:
    stub = served.stub
    expected = {
        "ok": grpc.StatusCode.OK,
        "abort": grpc.StatusCode.NOT_FOUND,
        "set-code": grpc.StatusCode.FAILED_PRECONDITION,
        "raise": grpc.StatusCode.UNKNOWN,
        "slow": grpc.StatusCode.DEADLINE_EXCEEDED,
    }
    for service, code in expected.items():
        assert await client_code(stub.Check(Request(service=service), timeout=1.0)) == code, service

    # The deadline's handler is cancelled on the server a moment after the client gave up.
    await eventually(lambda: served.handled("Check", "DEADLINE_EXCEEDED"), until=lambda n: n == 1, within=10)
    for code in expected.values():
        assert served.handled("Check", code.name) == 1, code
    seconds = served.registry.get_sample_value(
        "kalcifer_rpc_server_handling_seconds_count", {"service": SERVICE, "method": "Check", "code": "OK"}
    )
    assert seconds == 1


async def test_a_call_its_client_cancels_is_counted_cancelled(
    served: Served,
) -> None:
    stub = served.stub
    call = stub.Check(Request(service="slow"))
    await asyncio.sleep(0.3)
    call.cancel()

    await eventually(lambda: served.handled("Check", "CANCELLED"), until=lambda n: n == 1, within=10)
    assert served.handled("Check", "DEADLINE_EXCEEDED") == 0


async def test_streaming_calls_are_counted_when_their_stream_ends(
    served: Served,
) -> None:
    stub = served.stub
    answers = [answer.status async for answer in stub.Watch(Request(service="ok"))]
    aborted = stub.Watch(Request(service="abort"))
    first = await aborted.read()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await aborted.read()
    endless = stub.Watch(Request(service="forever"))
    await endless.read()
    endless.cancel()

    assert answers == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await eventually(lambda: served.handled("Watch", "CANCELLED"), until=lambda n: n == 1, within=10)
    assert served.handled("Watch", "OK") == 1
    assert served.handled("Watch", "PERMISSION_DENIED") == 1


async def test_a_method_the_server_does_not_offer_is_not_recorded(
    served: Served,
) -> None:
    stub = served.stub
    unknown = served.channel.unary_unary("/no.such.Service/Nothing", None, None)
    assert await client_code(unknown(b"")) == grpc.StatusCode.UNIMPLEMENTED
    assert await client_code(stub.Check(Request(service="ok"))) == grpc.StatusCode.OK

    methods = {sample.labels.get("method") for family in served.registry.collect() for sample in family.samples}
    assert methods == {"Check"}
