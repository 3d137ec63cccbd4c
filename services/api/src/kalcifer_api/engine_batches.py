"""The engine calls the API makes for its callers one at a time, sent to the engine together: TriggerFlow's starts
go out as `EngineService.StartInstances` calls and IngestEvent's routes as `RouteEachEvent` calls (a gRPC call
costs both processes about as much CPU as a start's own work in the engine, measured), each caller answered with
its own answer or error, exactly as from its own call.

While fewer than `in_flight` (ENGINE_STARTS_IN_FLIGHT, ENGINE_ROUTES_IN_FLIGHT) batch calls are out, a request goes
out at once (on the event loop's next turn: a request alone waits for nothing); while they all are, requests
queue, and the next call free takes up to `MAX_BATCH` of them (`kalcifer_common.coalescing`). Requests rarely
arrive in the same turn of the loop, so batches form only under load, while earlier calls are answered, as the
engine's group commit forms its groups. An engine older than the batch RPC (UNIMPLEMENTED, during a rolling
upgrade), or one that refuses a batch call as INVALID_ARGUMENT, gets the batch's requests one single call each
(StartInstance, RouteEvent), so each caller is answered on its own request. A batch's call is traced
under a `<RPC> batch` span, child of its first request's span and linked to the others'.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Generic, TypeVar

import grpc
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer_common.coalescing import Coalescer, Pending
from kalcifer_common.logging import get_logger
from kalcifer_common.rpc.errors import relayed, relayed_status

MAX_BATCH: Final = 64
# A batch call refused whole goes again as one single call per request: UNIMPLEMENTED, an engine older than the
# batch RPC; INVALID_ARGUMENT, a batch the engine could not read (a bug of ours: what one request carried, nested
# too deep for the batch message, say), which must not become every caller's answer.
_EACH_ALONE: Final = frozenset({grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT})

_log = get_logger(__name__)

_Q = TypeVar("_Q")
_A = TypeVar("_A")


class Batched(Generic[_Q, _A]):
    """`await batched(request)`: the engine's answer to this one request (or its error, as a domain error:
    `relayed`), through batch calls shared with concurrent requests.

    `many` makes one batch call and returns its results, one per request in order, each a message whose `outcome`
    is `answer_field` (the answer) or `error` (a serialized `google.rpc.Status`); `one` is the single call.
    """

    def __init__(
        self,
        rpc: str,
        many: Callable[[list[_Q]], Awaitable[Sequence[Any]]],
        one: Callable[[_Q], Awaitable[_A]],
        answer_field: str,
        *,
        in_flight: int,
    ) -> None:
        self._rpc = rpc
        self._many = many
        self._one = one
        self._answer_field = answer_field
        self._calls: Coalescer[_Q, _A] = Coalescer(self._send, max_open=in_flight, max_batch=MAX_BATCH, name=rpc)

    async def __call__(self, request: _Q) -> _A:
        return await self._calls(request)

    async def _send(self, batch: list[Pending[_Q, _A]]) -> None:
        try:
            results = await self._many([call.request for call in batch])
        except grpc.aio.AioRpcError as error:
            if error.code() in _EACH_ALONE:
                if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    _log.error(
                        "engine refused a batch call; its requests go one by one",
                        rpc=self._rpc,
                        size=len(batch),
                        details=error.details(),
                    )
                await asyncio.gather(*(self._alone(call) for call in batch))
                return
            for call in batch:
                call.settle(relayed(error))
            return
        except Exception as error:  # noqa: BLE001 - each caller gets it, as from its own call
            for call in batch:
                call.settle(error)
            return
        if len(results) != len(batch):
            mismatch = RuntimeError(f"{self._rpc} answered {len(results)} results for {len(batch)}")
            for call in batch:
                call.settle(mismatch)
            return
        for call, result in zip(batch, results, strict=True):
            if result.HasField(self._answer_field):
                call.settle(getattr(result, self._answer_field))
            else:
                call.settle(relayed_status(result.error))

    async def _alone(self, call: Pending[_Q, _A]) -> None:
        try:
            call.settle(await self._one(call.request))
        except grpc.aio.AioRpcError as error:
            call.settle(relayed(error))
        except Exception as error:  # noqa: BLE001 - the caller's answer
            call.settle(error)


StartBatches = Batched[engine_pb2.StartInstanceRequest, engine_pb2.StartInstanceResponse]
RouteBatches = Batched[engine_pb2.RouteEventRequest, engine_pb2.RouteEventResponse]


def batched_starts(engine: engine_pb2_grpc.EngineServiceAsyncStub, *, in_flight: int) -> StartBatches:
    """StartInstance's answer for each start, through StartInstances calls."""

    async def many(starts: list[engine_pb2.StartInstanceRequest]) -> Sequence[engine_pb2.StartInstanceResult]:
        return (await engine.StartInstances(engine_pb2.StartInstancesRequest(starts=starts))).results

    return Batched("StartInstances", many, engine.StartInstance, "started", in_flight=in_flight)


def batched_routes(engine: engine_pb2_grpc.EngineServiceAsyncStub, *, in_flight: int) -> RouteBatches:
    """RouteEvent's answer for each event, through RouteEachEvent calls."""

    async def many(events: list[engine_pb2.RouteEventRequest]) -> Sequence[engine_pb2.RouteEventResult]:
        return (await engine.RouteEachEvent(engine_pb2.RouteEventsRequest(events=events))).results

    return Batched("RouteEachEvent", many, engine.RouteEvent, "routed", in_flight=in_flight)
