"""Calls that arrive together, handled together: a queue that at most `max_open` handlers drain, each taking up to
`max_batch` waiting calls at once. Under light load a call goes alone, on the event loop's next turn; under load,
calls queue while the handlers are busy and the next free one takes them as one batch. The engine's group commit
(one transaction for many starts or routes) and the API's StartInstances (one engine call for many TriggerFlow
starts) are both this queue with their own handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

_Q = TypeVar("_Q")
_A = TypeVar("_A")


@dataclass
class Pending(Generic[_Q, _A]):
    """One queued call: its request, and the answer its caller awaits."""

    request: _Q
    answer: asyncio.Future[_A] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

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
    calls. `handle` must settle every call of its batch, whatever happens."""

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
                await self._handle(batch)
        finally:
            self._open -= 1
