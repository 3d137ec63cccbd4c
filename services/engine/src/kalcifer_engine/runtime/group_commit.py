"""Group commit: single calls that arrive together share one transaction and one commit.

A call is answered only after the transaction holding it committed (and its effects were handed on), exactly as
when it has a transaction of its own, so durability is unchanged; what the calls share is the BEGIN, the COMMIT
(one WAL flush), the analytics counters' upsert and the scheduler's batch. While `MAX_OPEN` shared transactions
are in flight, new calls queue; the next free one takes up to `MAX_SIZE` of them. Under light load a transaction
holds one call: no call waits for others.

A refusal that wrote nothing (the operation raises `Refused` around it, from where it knows nothing was written)
answers its own caller and leaves the transaction to the others. Anything else raised inside the shared transaction
(a deadlock, a lost connection, a check that fails after a write) rolls all of it back, and each of its calls then
runs again in a transaction of its own, so one call's failure is never another's. A failure of the commit itself
(its outcome unknown) or after it is answered to every caller, as it would be to a call alone: running them again
could apply one twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Final, Generic, TypeVar

from kalcifer_common.coalescing import Coalescer, Pending
from kalcifer_common.logging import get_logger
from sqlalchemy.ext.asyncio import AsyncConnection

from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.run import Effects

_log = get_logger(__name__)

MAX_SIZE: Final = 64
MAX_OPEN: Final = 2

_Q = TypeVar("_Q")
_A = TypeVar("_A")

# The operation inside a transaction: (runtime, connection, request, the transaction's effects, now) -> answer.
Shared = Callable[[Runtime, AsyncConnection, _Q, Effects, datetime], Awaitable[_A]]


class Refused(Exception):
    """Raised by an operation around `error` when it refused the call before writing anything: the shared
    transaction stays good for the others, and the caller gets `error`."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class GroupCommit(Generic[_Q, _A]):
    """Runs one operation for concurrent callers in shared transactions (see the module docstring)."""

    def __init__(self, rt: Runtime, name: str, operation: Shared[_Q, _A]) -> None:
        self._rt = rt
        self._name = name
        self._operation = operation
        self._calls: Coalescer[_Q, _A] = Coalescer(
            self._run, max_open=MAX_OPEN, max_batch=MAX_SIZE, name=f"group commit: {name}"
        )

    async def __call__(self, request: _Q) -> _A:
        """The operation's answer once its transaction committed and its effects were handed on; raises what the
        operation raises."""
        return await self._calls(request)

    async def _run(self, calls: list[Pending[_Q, _A]]) -> None:
        rt = self._rt
        effects = Effects()
        outcomes: list[_A | BaseException] = []
        ran = False
        try:
            async with rt.transaction(effects) as conn:
                now = rt.now()
                for call in calls:
                    try:
                        outcomes.append(await self._operation(rt, conn, call.request, effects, now))
                    except Refused as refused:
                        outcomes.append(refused.error)
                ran = True
            await rt.after_commit(effects)
        except Exception as error:  # noqa: BLE001 - answered below, one way or the other
            if not ran:
                if len(calls) > 1:
                    _log.info("shared transaction failed; one by one", operation=self._name, error=repr(error))
                await asyncio.gather(*(self._alone(call) for call in calls))
                return
            outcomes = [error] * len(calls)
        for call, outcome in zip(calls, outcomes, strict=True):
            call.settle(outcome)

    async def _alone(self, call: Pending[_Q, _A]) -> None:
        rt = self._rt
        effects = Effects()
        outcome: _A | BaseException
        try:
            async with rt.transaction(effects) as conn:
                outcome = await self._operation(rt, conn, call.request, effects, rt.now())
            await rt.after_commit(effects)
        except Refused as refused:
            outcome = refused.error
        except Exception as error:  # noqa: BLE001 - the caller's answer
            outcome = error
        call.settle(outcome)
