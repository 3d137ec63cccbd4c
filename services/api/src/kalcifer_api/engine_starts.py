"""TriggerFlow's starts, sent to the engine together: the StartInstance calls the API handles at once go out as one
`EngineService.StartInstances` call (a gRPC call costs both processes about as much CPU as a start's own work in the
engine, measured), each caller answered with its own start's answer or error.

While fewer than `in_flight` (ENGINE_STARTS_IN_FLIGHT) StartInstances calls are out, a start goes out at once (on
the event loop's next turn: a start alone waits for nothing); while they all are, starts queue, and the next call
free takes up to `MAX_BATCH` of them (`kalcifer_common.coalescing`). Starts rarely arrive in the same turn of the
loop, so batches form only under load, while earlier calls are answered, as the engine's group commit forms its
groups. An engine older than StartInstances (UNIMPLEMENTED, during a rolling upgrade) gets the batch's starts one
StartInstance call each. A batch's call is traced under a `StartInstances batch` span, child of its first start's
span and linked to the others' (`kalcifer_common.coalescing`).
"""

from __future__ import annotations

import asyncio
from typing import Final

import grpc
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer_common.coalescing import Coalescer, Pending
from kalcifer_common.rpc.errors import relayed, relayed_status

MAX_BATCH: Final = 64

_Pending = Pending[engine_pb2.StartInstanceRequest, engine_pb2.StartInstanceResponse]


class BatchedStarts:
    """`start(request)`: StartInstance's answer, through StartInstances calls shared with concurrent starts."""

    def __init__(self, engine: engine_pb2_grpc.EngineServiceAsyncStub, *, in_flight: int = 2) -> None:
        self._engine = engine
        self._starts: Coalescer[engine_pb2.StartInstanceRequest, engine_pb2.StartInstanceResponse] = Coalescer(
            self._send, max_open=in_flight, max_batch=MAX_BATCH, name="StartInstances"
        )

    async def start(self, request: engine_pb2.StartInstanceRequest) -> engine_pb2.StartInstanceResponse:
        """The engine's answer to this start; raises its error as a domain error (`relayed`)."""
        return await self._starts(request)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            response = await self._engine.StartInstances(
                engine_pb2.StartInstancesRequest(starts=[call.request for call in batch])
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                await asyncio.gather(*(self._one(call) for call in batch))
                return
            for call in batch:
                call.settle(relayed(error))
            return
        except Exception as error:  # noqa: BLE001 - each caller gets it, as from its own call
            for call in batch:
                call.settle(error)
            return
        if len(response.results) != len(batch):
            mismatch = RuntimeError(f"StartInstances answered {len(response.results)} results for {len(batch)}")
            for call in batch:
                call.settle(mismatch)
            return
        for call, result in zip(batch, response.results, strict=True):
            call.settle(result.started if result.HasField("started") else relayed_status(result.error))

    async def _one(self, call: _Pending) -> None:
        try:
            call.settle(await self._engine.StartInstance(call.request))
        except grpc.aio.AioRpcError as error:
            call.settle(relayed(error))
        except Exception as error:  # noqa: BLE001 - the caller's answer
            call.settle(error)
