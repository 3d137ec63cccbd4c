"""Calls that arrive together, handled together: a queue that at most `max_open` handlers drain, each taking up to
`max_batch` waiting calls at once. Under light load a call goes alone, on the event loop's next turn; under load,
calls queue while the handlers are busy and the next free one takes them as one batch. The engine's group commit
(one transaction for many starts or routes) and the API's StartInstances (one engine call for many TriggerFlow
starts) are both this queue with their own handler.

Traces: a batch serves many callers, so each batch's handler runs inside a span of its own (`<name> batch`), a
child of its first call's span that links to the others' (`kalcifer_common.tracing.batch_span`): every caller's
trace reaches the work done for it. (Without it, a handler would run in the context of whichever caller started the
queue's drainer, and every later batch it drained would be filed under that one caller's trace.) Nothing is
recorded unless a tracer provider is installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from opentelemetry import trace

from kalcifer_common.tracing import batch_span, tracing_installed

_Q = TypeVar("_Q")
_A = TypeVar("_A")


@dataclass
class Pending(Generic[_Q, _A]):
    """One queued call: its request, and the answer its caller awaits."""

    request: _Q
    answer: asyncio.Future[_A] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    # The caller's span, when tracing: its batch's span is a child of it or links to it.
    origin: trace.SpanContext | None = None

    def settle(self, outcome: _A | BaseException) -> None:
        """Answer the caller (an exception is raised to it), unless it went away or was answered already."""
        if self.answer.done():
            return
        if isinstance(outcome, BaseException):
            self.answer.set_exception(outcome)
        else:
            self.answer.set_result(outcome)


class Coalescer(Generic[_Q, _A]):
    """`await coalescer(request)`: the answer `handle` settles for it, `handle` called with batches of pending
    calls. `handle` settles every call of its batch; should it raise instead, the calls it left unsettled get its
    error (a drainer cancelled at shutdown cancels the calls it holds and those still queued)."""

    def __init__(
        self,
        handle: Callable[[list[Pending[_Q, _A]]], Awaitable[None]],
        *,
        max_open: int,
        max_batch: int,
        name: str,
    ) -> None:
        self._handle = handle
        self._max_open = max_open
        self._max_batch = max_batch
        self._name = name
        self._queue: list[Pending[_Q, _A]] = []
        self._open = 0
        self._draining: set[asyncio.Task[None]] = set()

    async def __call__(self, request: _Q) -> _A:
        call: Pending[_Q, _A] = Pending(request)
        if tracing_installed():
            call.origin = trace.get_current_span().get_span_context()
        self._queue.append(call)
        if self._open < self._max_open:
            self._open += 1
            task = asyncio.get_running_loop().create_task(self._drain(), name=self._name)
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        return await call.answer

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                try:
                    if tracing_installed():
                        await self._handle_traced(batch)
                    else:
                        await self._handle(batch)
                except Exception as error:  # noqa: BLE001 - a handler's bug: its callers get it, never a hang
                    for call in batch:
                        call.settle(error)
                except asyncio.CancelledError:
                    for call in [*batch, *self._queue]:
                        call.answer.cancel()
                    raise
        finally:
            self._open -= 1

    async def _handle_traced(self, batch: list[Pending[_Q, _A]]) -> None:
        with batch_span(f"{self._name} batch", [call.origin for call in batch if call.origin is not None], len(batch)):
            await self._handle(batch)
