"""Group commit of StartInstance: starts that arrive together share one transaction and one commit.

A start is answered only after the transaction holding it committed, exactly as when it has a transaction of its
own, so durability is unchanged; what the starts share is the BEGIN, the COMMIT (one WAL flush), the analytics
counters' upsert and the scheduler's batch. While `MAX_OPEN` batches are in flight, new starts queue; the next
free batch takes up to `MAX_SIZE` of them. Under light load a batch holds one start: no start waits for others.

A refusal that wrote nothing (`starts.REFUSALS`: no flow, not active, already in the flow) answers its own caller
and leaves the transaction to the others. Anything else raised inside the shared transaction (an entry node that
is not a trigger, a deadlock, a lost connection) rolls all of it back, and each of its starts then runs again in
a transaction of its own, so one start's failure is never another's.

Starts with a `request_id` keep their own transaction (their replay record is reserved in it): see
`starts.start_instance_once`.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Final

from kalcifer_common.logging import get_logger

from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.run import Effects
from kalcifer_engine.runtime.starts import REFUSALS, StartRequest, admit, run_admitted, start_instance

_log = get_logger(__name__)

MAX_SIZE: Final = 64
MAX_OPEN: Final = 4


@dataclass
class _Start:
    request: StartRequest
    answer: asyncio.Future[uuid.UUID] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class StartBatches:
    """Starts instances for concurrent callers in shared transactions (see the module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._queue: list[_Start] = []
        self._open = 0

    async def start(self, request: StartRequest) -> uuid.UUID:
        """Start an instance and run it to its first waits; its id once its transaction committed (and the
        scheduler was told). Raises what `starts.start_instance` raises."""
        start = _Start(request)
        self._queue.append(start)
        if self._open < MAX_OPEN:
            self._open += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await start.answer

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_SIZE], self._queue[MAX_SIZE:]
                await self._run(batch)
        finally:
            self._open -= 1

    async def _run(self, batch: list[_Start]) -> None:
        rt = self._rt
        effects = Effects()
        outcomes: list[uuid.UUID | BaseException] = []
        ran = False
        try:
            async with rt.transaction(effects) as conn:
                now = rt.now()
                for start in batch:
                    try:
                        admitted = await admit(conn, start.request, now=now)
                    except REFUSALS as refusal:
                        outcomes.append(refusal)
                        continue
                    assert admitted is not None  # only event entries skip
                    outcomes.append(await run_admitted(rt, conn, start.request, admitted, effects, now=now))
                ran = True
            await rt.after_commit(effects)
        except Exception as error:  # noqa: BLE001 - answered below, one way or the other
            if not ran:
                # Rolled back before its commit: each start gets a transaction of its own.
                if len(batch) > 1:
                    _log.info("shared start transaction failed; one by one", error=repr(error), size=len(batch))
                await asyncio.gather(*(self._alone(start) for start in batch))
                return
            # The commit itself (its outcome unknown) or what follows it failed: like a start alone, the callers
            # hear it; running them again could start an instance twice.
            outcomes = [error] * len(batch)
        for start, outcome in zip(batch, outcomes, strict=True):
            if start.answer.done():  # the caller went away
                continue
            if isinstance(outcome, BaseException):
                start.answer.set_exception(outcome)
            else:
                start.answer.set_result(outcome)

    async def _alone(self, start: _Start) -> None:
        rt = self._rt
        effects = Effects()
        try:
            async with rt.transaction(effects) as conn:
                instance_id = await start_instance(rt, conn, start.request, effects, now=rt.now())
            await rt.after_commit(effects)
        except Exception as error:  # noqa: BLE001 - the caller's answer
            if not start.answer.done():
                start.answer.set_exception(error)
            return
        assert instance_id is not None
        if not start.answer.done():
            start.answer.set_result(instance_id)
