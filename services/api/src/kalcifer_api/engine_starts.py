"""TriggerFlow's starts, sent to the engine together: the StartInstance calls the API handles at once go out as one
`EngineService.StartInstances` call (a gRPC call costs both processes about as much CPU as a start's own work in the
engine, measured), each caller answered with its own start's answer or error.

While fewer than `in_flight` (ENGINE_STARTS_IN_FLIGHT) StartInstances calls are out, a start goes out at once (on
the event loop's next turn: a start alone waits for nothing); while they all are, starts queue, and the next call
free takes up to `MAX_BATCH` of them. Starts rarely arrive in the same turn of the loop, so batches form only under
load, while earlier calls are answered, as the engine's group commit forms its groups. An engine older than
StartInstances (UNIMPLEMENTED, during a rolling upgrade) gets the batch's starts one StartInstance call each. A
batch's call is traced as part of the trace of the start that opened it.
"""

from __future__ import annotations

import asyncio
from typing import Final

import grpc
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer_common.rpc.errors import relayed, relayed_status

MAX_BATCH: Final = 64

_Pending = tuple[engine_pb2.StartInstanceRequest, "asyncio.Future[engine_pb2.StartInstanceResponse]"]


class BatchedStarts:
    """`start(request)`: StartInstance's answer, through StartInstances calls shared with concurrent starts."""

    def __init__(self, engine: engine_pb2_grpc.EngineServiceAsyncStub, *, in_flight: int = 2) -> None:
        self._engine = engine
        self._max_in_flight = in_flight
        self._queue: list[_Pending] = []
        self._in_flight = 0
        self._draining: set[asyncio.Task[None]] = set()

    async def start(self, request: engine_pb2.StartInstanceRequest) -> engine_pb2.StartInstanceResponse:
        """The engine's answer to this start; raises its error as a domain error (`relayed`)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[engine_pb2.StartInstanceResponse] = loop.create_future()
        self._queue.append((request, answer))
        if self._in_flight < self._max_in_flight:
            self._in_flight += 1
            task = loop.create_task(self._drain(), name="StartInstances")
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        return await answer

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._send(batch)
        finally:
            self._in_flight -= 1

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            response = await self._engine.StartInstances(
                engine_pb2.StartInstancesRequest(starts=[request for request, _ in batch])
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                await asyncio.gather(*(self._one(request, answer) for request, answer in batch))
                return
            for _, answer in batch:
                _settle_error(answer, relayed(error))
            return
        except Exception as error:  # noqa: BLE001 - each caller gets it, as from its own call
            for _, answer in batch:
                _settle_error(answer, error)
            return
        if len(response.results) != len(batch):
            mismatch = RuntimeError(f"StartInstances answered {len(response.results)} results for {len(batch)}")
            for _, answer in batch:
                _settle_error(answer, mismatch)
            return
        for (_, answer), result in zip(batch, response.results, strict=True):
            if answer.done():
                continue
            if result.HasField("started"):
                answer.set_result(result.started)
            else:
                answer.set_exception(relayed_status(result.error))

    async def _one(
        self, request: engine_pb2.StartInstanceRequest, answer: asyncio.Future[engine_pb2.StartInstanceResponse]
    ) -> None:
        try:
            started = await self._engine.StartInstance(request)
        except grpc.aio.AioRpcError as error:
            _settle_error(answer, relayed(error))
            return
        except Exception as error:  # noqa: BLE001 - the caller's answer
            _settle_error(answer, error)
            return
        if not answer.done():
            answer.set_result(started)


def _settle_error(answer: asyncio.Future[engine_pb2.StartInstanceResponse], error: BaseException) -> None:
    if not answer.done():
        answer.set_exception(error)
