"""The API's batched engine calls (`kalcifer_api.engine_batches`) against engines that answer in every way one
can: starts (routes) arriving together share StartInstances (RouteEachEvent) calls and each caller gets its own
answer or error; an engine without the batch RPC (a rolling upgrade), or one that refuses a batch call whole, gets
one single call per request; an engine that is down, or that answers a batch with the wrong number of results or
unreadable ones, fails every caller of that batch, never another batch's.

The engines are real gRPC servers in this process whose answers the tests choose: what is tested is the API's
side of the call, with the wire in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer_api.engine_batches import StartBatches, batched_routes, batched_starts
from kalcifer_common import errors
from kalcifer_common.rpc.errors import status_proto_for

from tests.support.eventually import eventually

REFUSED = "refused"  # the participant every engine here refuses: NOT_FOUND, with its google.rpc details


def _refusal() -> status_pb2.Status:
    return status_proto_for(errors.NotFound("flow", "flows/gone"))


def _started(request: engine_pb2.StartInstanceRequest) -> engine_pb2.StartInstanceResponse:
    return engine_pb2.StartInstanceResponse(instance_id=f"instance-of-{request.participant_id}")


def _routed(request: engine_pb2.RouteEventRequest) -> engine_pb2.RouteEventResponse:
    return engine_pb2.RouteEventResponse(resumed=1, instance_ids=[f"waiting-{request.participant_id}"])


class _Engine(engine_pb2_grpc.EngineServiceServicer):
    """StartInstance and StartInstances as the engine answers them; records the size of every batch."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.singles = 0
        self.address = ""
        self.release = asyncio.Event()
        self.release.set()

    async def StartInstance(
        self, request: engine_pb2.StartInstanceRequest, context: Any
    ) -> engine_pb2.StartInstanceResponse:
        self.singles += 1
        if request.participant_id == REFUSED:
            await context.abort_with_status(rpc_status.to_status(_refusal()))
        return _started(request)

    async def StartInstances(
        self, request: engine_pb2.StartInstancesRequest, context: Any
    ) -> engine_pb2.StartInstancesResponse:
        self.batches.append(len(request.starts))
        await self.release.wait()
        return engine_pb2.StartInstancesResponse(results=[self._result(start) for start in request.starts])

    def _result(self, start: engine_pb2.StartInstanceRequest) -> engine_pb2.StartInstanceResult:
        if start.participant_id == REFUSED:
            return engine_pb2.StartInstanceResult(error=_refusal().SerializeToString())
        return engine_pb2.StartInstanceResult(started=_started(start))

    async def RouteEvent(self, request: engine_pb2.RouteEventRequest, context: Any) -> engine_pb2.RouteEventResponse:
        self.singles += 1
        if request.participant_id == REFUSED:
            await context.abort_with_status(rpc_status.to_status(_refusal()))
        return _routed(request)

    async def RouteEachEvent(
        self, request: engine_pb2.RouteEventsRequest, context: Any
    ) -> engine_pb2.RouteEachEventResponse:
        self.batches.append(len(request.events))
        await self.release.wait()
        return engine_pb2.RouteEachEventResponse(
            results=[
                engine_pb2.RouteEventResult(error=_refusal().SerializeToString())
                if event.participant_id == REFUSED
                else engine_pb2.RouteEventResult(routed=_routed(event))
                for event in request.events
            ]
        )


class _OldEngine(_Engine):
    """An engine from before StartInstances and RouteEachEvent: the generated base answers them UNIMPLEMENTED."""

    StartInstances = engine_pb2_grpc.EngineServiceServicer.StartInstances  # type: ignore[assignment]
    RouteEachEvent = engine_pb2_grpc.EngineServiceServicer.RouteEachEvent  # type: ignore[assignment]


class _UnreadableBatchEngine(_Engine):
    """Refuses every batch call whole, as an engine does a batch message it cannot decode (nested past protobuf's
    limit by what one request carried): a defect of the batch, not of its callers' requests."""

    async def StartInstances(
        self, request: engine_pb2.StartInstancesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.StartInstancesResponse:
        self.batches.append(len(request.starts))
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request: is not a valid protobuf message of this method")


class _DownEngine(_Engine):
    async def StartInstances(
        self, request: engine_pb2.StartInstancesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.StartInstancesResponse:
        self.batches.append(len(request.starts))
        await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")


class _MiscountingEngine(_Engine):
    async def StartInstances(
        self, request: engine_pb2.StartInstancesRequest, context: Any
    ) -> engine_pb2.StartInstancesResponse:
        answer = await super().StartInstances(request, context)
        del answer.results[-1]
        return answer


@asynccontextmanager
async def _serving(kind: Callable[[], _Engine], in_flight: int) -> AsyncIterator[tuple[_Engine, StartBatches]]:
    """An engine of `kind` serving on a free port, and the API's batched starts calling it."""
    engine = kind()
    server = grpc.aio.server()
    engine_pb2_grpc.add_EngineServiceServicer_to_server(engine, server)
    port = server.add_insecure_port("127.0.0.1:0")
    engine.address = f"127.0.0.1:{port}"
    await server.start()
    try:
        async with grpc.aio.insecure_channel(engine.address) as channel:
            yield engine, batched_starts(engine_pb2_grpc.EngineServiceStub(channel), in_flight=in_flight)
    finally:
        await server.stop(None)


def _request(participant: str) -> engine_pb2.StartInstanceRequest:
    return engine_pb2.StartInstanceRequest(tenant_id="t", flow_id="f", participant_id=participant)


async def _start_all(starts: StartBatches, participants: list[str]) -> list[Any]:
    return await asyncio.gather(*(starts(_request(p)) for p in participants), return_exceptions=True)


def _answered_own(outcomes: list[Any], participants: list[str]) -> None:
    for participant, outcome in zip(participants, outcomes, strict=True):
        if participant == REFUSED:
            assert isinstance(outcome, errors.Relayed), outcome
            assert outcome.code == code_pb2.NOT_FOUND
            # The engine's details reach the caller unchanged (ResourceInfo naming the flow).
            assert status_pb2.Status.FromString(outcome.details) == _refusal()
        else:
            assert outcome == _started(_request(participant)), (participant, outcome)


async def test_starts_arriving_together_share_calls_and_each_gets_its_own_answer() -> None:
    later = [f"p{n}" for n in range(20)] + [REFUSED] + [f"q{n}" for n in range(10)]
    async with _serving(_Engine, in_flight=1) as (engine, starts):
        engine.release.clear()  # the first call waits at the engine while the others queue behind it
        first = asyncio.ensure_future(_start_all(starts, ["first"]))
        await eventually(lambda: engine.batches, what="the first StartInstances call reaching the engine")
        queued = asyncio.ensure_future(_start_all(starts, later))
        # One turn of the loop: the gather's tasks are scheduled before the engine's handler is woken below, so
        # all of them queue behind the first call before its answer can come back.
        await asyncio.sleep(0)
        engine.release.set()
        outcomes = await first + await queued
    _answered_own(outcomes, ["first", *later])
    assert engine.batches == [1, len(later)]  # the 31 starts queued behind the first went in one call
    assert engine.singles == 0


async def test_an_engine_without_start_instances_gets_one_start_instance_per_start() -> None:
    participants = [f"p{n}" for n in range(8)] + [REFUSED]
    async with _serving(_OldEngine, in_flight=1) as (engine, starts):
        outcomes = await _start_all(starts, participants)
    _answered_own(outcomes, participants)
    assert engine.singles == len(participants)


async def test_a_batch_call_refused_whole_goes_again_one_start_each_so_each_caller_gets_its_own_answer() -> None:
    participants = [f"p{n}" for n in range(8)] + [REFUSED]
    async with _serving(_UnreadableBatchEngine, in_flight=1) as (engine, starts):
        outcomes = await _start_all(starts, participants)
    assert sum(engine.batches) == len(participants)
    _answered_own(outcomes, participants)
    assert engine.singles == len(participants)


async def test_an_engine_that_is_down_is_unavailable_to_every_caller_of_the_batch() -> None:
    async with _serving(_DownEngine, in_flight=2) as (engine, starts):
        outcomes = await _start_all(starts, ["a", "b", "c"])
    assert sum(engine.batches) == 3
    for outcome in outcomes:
        assert isinstance(outcome, errors.Unavailable), outcome
        assert status_proto_for(outcome).code == code_pb2.UNAVAILABLE


async def test_a_batch_answered_with_the_wrong_number_of_results_fails_its_callers_as_a_bug() -> None:
    async with _serving(_MiscountingEngine, in_flight=1) as (engine, starts):
        outcomes = await _start_all(starts, ["a", "b", "c"])
    assert sum(engine.batches) == 3
    # No caller is given another's answer: a bug of ours, INTERNAL to every caller of the batch.
    for outcome in outcomes:
        assert isinstance(outcome, RuntimeError), outcome
        assert status_proto_for(outcome).code == code_pb2.INTERNAL


class _UnreadableEngine(_Engine):
    """Answers a batch with results that are neither an answer nor an error: the API's handler cannot settle them."""

    async def StartInstances(
        self, request: engine_pb2.StartInstancesRequest, context: Any
    ) -> engine_pb2.StartInstancesResponse:
        self.batches.append(len(request.starts))
        return engine_pb2.StartInstancesResponse(results=[engine_pb2.StartInstanceResult(error=b"\xff")] * 3)


async def test_a_batch_whose_answer_cannot_be_read_fails_its_callers_instead_of_leaving_them_waiting() -> None:
    async with _serving(_UnreadableEngine, in_flight=1) as (engine, starts):
        outcomes = await asyncio.wait_for(_start_all(starts, ["a", "b", "c"]), 30)
        # The queue still serves the next starts.
        again = await asyncio.wait_for(_start_all(starts, ["d"]), 30)
    assert sum(engine.batches) == 4
    for outcome in [*outcomes, *again]:
        assert isinstance(outcome, Exception), outcome
        assert status_proto_for(outcome).code == code_pb2.INTERNAL


async def _route_all(engine: _Engine, address: str, participants: list[str], in_flight: int) -> list[Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        routes = batched_routes(engine_pb2_grpc.EngineServiceStub(channel), in_flight=in_flight)
        requests = [
            engine_pb2.RouteEventRequest(tenant_id="t", event_id=f"e-{p}", participant_id=p, event_type="ping")
            for p in participants
        ]
        return await asyncio.gather(*(routes(request) for request in requests), return_exceptions=True)


def _routed_own(outcomes: list[Any], participants: list[str]) -> None:
    for participant, outcome in zip(participants, outcomes, strict=True):
        if participant == REFUSED:
            assert isinstance(outcome, errors.Relayed), outcome
            assert status_pb2.Status.FromString(outcome.details) == _refusal()
        else:
            assert outcome == engine_pb2.RouteEventResponse(resumed=1, instance_ids=[f"waiting-{participant}"])


@pytest.mark.parametrize("kind", [_Engine, _OldEngine], ids=["RouteEachEvent", "RouteEvent each (older engine)"])
async def test_routes_arriving_together_are_each_answered_on_their_own(kind: Callable[[], _Engine]) -> None:
    participants = [f"p{n}" for n in range(12)] + [REFUSED] + [f"q{n}" for n in range(4)]
    async with _serving(kind, in_flight=1) as (engine, _):
        outcomes = await _route_all(engine, engine.address, participants, in_flight=1)
    _routed_own(outcomes, participants)
    if kind is _Engine:
        assert sum(engine.batches) == len(participants)
        assert engine.singles == 0
    else:
        assert engine.singles == len(participants)
