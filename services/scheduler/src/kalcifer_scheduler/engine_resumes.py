"""Resumes handed to `EngineService.ResumeInstances`: one call per batch, a deadline each, retried with backoff
while the engine is unavailable. "Already resumed" (applied=false) is an answer, not an error: the engine
decides exactly-once application by wait id, so a retry after a lost reply is always safe."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer_common.logging import get_logger

from kalcifer_scheduler.timers.claims import DueWait

Data = Mapping[str, Any]

_log = get_logger(__name__)

# Transient: the engine is restarting, overloaded, or the reply was lost (the resume may have been applied; a
# retry then answers applied=false).
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


class ResumeFailed(Exception):
    """The engine did not take a batch of resumes (after retries, or with a non-transient status)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


class ResumeSender:
    """Sends batches of due waits to the engine."""

    def __init__(
        self, stub: engine_pb2_grpc.EngineServiceAsyncStub, *, deadline_seconds: float, retry_seconds: float
    ) -> None:
        self._stub = stub
        self._deadline = deadline_seconds
        self._retry_seconds = retry_seconds

    async def send(self, waits: Sequence[DueWait]) -> list[engine_pb2.ResumeInstanceResponse]:
        """Resume every wait (with its timer trigger) in one call; one result per wait, in order. Raises
        ResumeFailed."""
        return await self._send(
            [
                engine_pb2.ResumeInstanceRequest(instance_id=w.instance_id, wait_id=w.wait_id, trigger=w.trigger)
                for w in waits
            ]
        )

    async def send_answer(self, wait: DueWait, trigger: str, data: Data) -> engine_pb2.ResumeInstanceResponse:
        """Resume one wait with `trigger` and `data` (a call wait with its answer). Raises ResumeFailed."""
        resume = engine_pb2.ResumeInstanceRequest(instance_id=wait.instance_id, wait_id=wait.wait_id, trigger=trigger)
        resume.data.update(dict(data))
        return (await self._send([resume]))[0]

    async def _send(self, resumes: list[engine_pb2.ResumeInstanceRequest]) -> list[engine_pb2.ResumeInstanceResponse]:
        request = engine_pb2.ResumeInstancesRequest(resumes=resumes)
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._retry_seconds
        delay = 0.05
        while True:
            try:
                response = await self._stub.ResumeInstances(request, timeout=self._deadline)
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code not in RETRYABLE or loop.time() + delay > give_up_at:
                    raise ResumeFailed(code, error.details() or "") from error
                _log.warning("engine resume retry", code=code.name, batch=len(resumes), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            return list(response.results)
