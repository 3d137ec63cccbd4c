"""Making the calls of call waits (SPEC 6.10), out of every database transaction, exactly once in effect.

A call wait is due the moment its run parks on it, so the timer paths (a Redis bucket, or the sweep) claim it
like a timer and hand it here. Each call runs in its own task, at most `concurrency` at once:
1. `take_call` extends this replica's claim over the call's deadline and reads its spec (no claim, no call);
2. the request goes out with the wait id as `Idempotency-Key`, retried with doubling backoff on network errors,
   timeouts and non-2xx answers while attempts and the spec's total deadline last (a refused address is retried
   like any unreachable host, and told alike: `OutboundClient`);
3. the answer (or why there is none) resumes the wait with trigger `call`.
Nothing is held meanwhile: no connection, no row lock. If this process dies at any point, the claim's lease runs
out and a sweep (of any replica) claims the wait again and makes the call again with the same key; the engine
applies the first resume and answers the others `wait_not_found`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import orjson
from kalcifer_common.logging import get_logger
from kalcifer_common.outbound import CALL_TRIGGER, CallAnswer, CallSpec
from kalcifer_common.outbound_policy import OutboundError

from kalcifer_scheduler.engine_resumes import ResumeFailed, ResumeSender
from kalcifer_scheduler.outbound.client import OutboundClient
from kalcifer_scheduler.stats import SchedulerStats
from kalcifer_scheduler.timers.claims import DueWait, WaitClaims

_log = get_logger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
# The engine keeps a paused flow's call wait pending; once the flow runs again a sweep takes it and calls again.
_HELD = "held_flow_paused"


class CallMaker:
    """Runs the calls of claimed call waits in background tasks."""

    def __init__(
        self,
        *,
        claims: WaitClaims,
        client: OutboundClient,
        sender: ResumeSender,
        stats: SchedulerStats,
        concurrency: int,
        max_attempts: int,
        backoff_seconds: float,
    ) -> None:
        self._claims = claims
        self._client = client
        self._sender = sender
        self._stats = stats
        self._slots = asyncio.Semaphore(concurrency)
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, waits: Sequence[DueWait]) -> None:
        """Make the calls of these claimed waits, each in its own task (returns at once)."""
        for wait in waits:
            task = asyncio.get_running_loop().create_task(self._run(wait), name=f"call:{wait.wait_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @property
    def in_flight(self) -> int:
        """Calls started and not finished."""
        return len(self._tasks)

    async def close(self) -> None:
        """Stop every call in flight; their claims lapse and a sweep makes them again."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self, wait: DueWait) -> None:
        try:
            async with self._slots:
                await self._make(wait)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the claim lapses and a sweep tries again
            _log.exception("call failed unexpectedly", wait_id=wait.wait_id)

    async def _make(self, wait: DueWait) -> None:
        taken = await self._claims.take_call(wait)
        if taken is None:
            return  # resolved meanwhile, or the claim lapsed and another replica holds it now
        try:
            spec = CallSpec.from_json(taken[1])
        except ValueError as error:
            answer = CallAnswer(ok=False, error=f"the call cannot be made: {error}", attempts=0)
        else:
            answer = await self.call(spec, idempotency_key=wait.wait_id)
        if answer.ok:
            self._stats.calls_answered += 1
        else:
            self._stats.calls_failed += 1
            _log.warning("call failed", wait_id=wait.wait_id, attempts=answer.attempts, error=answer.error)
        try:
            result = await self._sender.send_answer(wait, CALL_TRIGGER, answer.to_data())
        except ResumeFailed as error:
            _log.error("call answer not delivered", wait_id=wait.wait_id, error=str(error))
            await self._claims.release([wait.wait_id])
            return
        if not result.applied and result.reason == _HELD:
            await self._claims.release([wait.wait_id])

    async def call(self, spec: CallSpec, *, idempotency_key: str) -> CallAnswer:
        """Make the request, retrying with backoff within the spec's deadline; every attempt has the same key."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + spec.deadline_seconds
        headers = {**spec.headers, IDEMPOTENCY_HEADER: idempotency_key}
        content = None
        if spec.body is not None:
            content = orjson.dumps(spec.body)
            headers.setdefault("Content-Type", "application/json")
        attempt, status = 0, 0
        while True:
            attempt += 1
            try:
                response = await self._client.request(
                    spec.method,
                    spec.url,
                    headers=headers,
                    content=content,
                    timeout_seconds=max(give_up_at - loop.time(), 0.001),
                    https_only=spec.https_only,
                )
            except OutboundError as error:
                why, status = str(error), 0
                if not error.retryable:
                    return CallAnswer(ok=False, error=why, attempts=attempt)
            else:
                status = response.status
                if 200 <= status < 300:
                    return CallAnswer(ok=True, status=status, body=response.body, attempts=attempt)
                why = f"answered HTTP {status}"
            delay = self._backoff * 2 ** (attempt - 1)
            if attempt >= self._max_attempts or loop.time() + delay >= give_up_at:
                return CallAnswer(ok=False, status=status, error=why, attempts=attempt)
            _log.info("call retry", attempt=attempt, retry_in=delay, error=why)
            await asyncio.sleep(delay)
