"""Best-effort, batched calls to `SchedulerService` after a run commits: arm timers, cancel them, queue sends.

The wait and delivery rows are the truth (SPEC 6.5): these calls only make timers fire on time and sends go out
at once. So they never block or fail a run: requests queue in memory (bounded), a background task sends them in
batches of up to 1000 per RPC, and a failure is logged and dropped; the scheduler's sweeps catch up.

A timer due later than `reach_seconds` from now is not sent at all, armed or cancelled: the scheduler keeps only
the near future in Redis and reads farther timers from their wait rows when they come within its horizon
(TIMER_HORIZON_SECONDS; the reach is twice that, so clocks a little apart cannot lose one), and a wait cancelled
meanwhile is no longer pending when that read comes.

Traces: a batch serves the runs of many calls, so its span (`scheduler batch`, around its RPCs) is a child of the
first call whose run queued into it and links to the others' (`kalcifer_common.tracing.batch_span`). The background
task starts in an empty context: it must not stay, forever, inside the trace of the call that happened to start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import grpc
from kalcifer.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from kalcifer_common.logging import get_logger
from kalcifer_common.rpc.clients import internal_channel
from kalcifer_common.rpc.tls import TlsFiles
from kalcifer_common.timestamps import to_timestamp
from kalcifer_common.tracing import MAX_LINKS, batch_span
from opentelemetry import trace

_log = get_logger(__name__)

BATCH_LIMIT = 1000
QUEUE_LIMIT = 100_000
QUIET_SECONDS = 1.0


class SchedulerClient:
    """Queues scheduler requests and sends them in batches from one background task."""

    def __init__(
        self,
        address: str,
        *,
        token: str,
        timeout_seconds: float,
        tls: TlsFiles | None = None,
        reach_seconds: float | None = None,
    ) -> None:
        """`reach_seconds`: timers due later than this from now are left to the scheduler's horizon arming (None:
        every timer is sent)."""
        self._address = address
        self._reach = None if reach_seconds is None else timedelta(seconds=reach_seconds)
        self._tls = tls
        self._token = token
        self._timeout = timeout_seconds
        self._arm: list[scheduler_pb2.ScheduleResumeRequest] = []
        self._cancel: list[str] = []
        self._deliveries: list[str] = []
        # The span contexts of the calls whose runs queued requests since the last batch (the batch's parent, links).
        self._origins: list[trace.SpanContext] = []
        self._wake = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # After a failed call the scheduler is left alone for a moment: requests made meanwhile are dropped (the
        # sweeps find their rows) instead of costing every run a failing RPC.
        self._quiet_until = 0.0

    def arm(self, timers: Iterable[tuple[uuid.UUID, uuid.UUID, datetime]]) -> None:
        """Ask for timers (instance id, wait id, fire time) due within reach."""
        within = self._within_reach()
        near = [
            scheduler_pb2.ScheduleResumeRequest(instance_id=str(i), wait_id=str(w), fire_time=to_timestamp(t))
            for i, w, t in timers
            if within(t)
        ]
        if near:
            self._arm += near
            self._kick()

    def cancel(self, timers: Iterable[tuple[uuid.UUID, datetime]]) -> None:
        """Ask to drop the timers (wait id, fire time) of waits resolved another way (an event, a cancel), those
        due within reach (a farther one was never put in Redis)."""
        within = self._within_reach()
        near = [str(wait_id) for wait_id, fire_time in timers if within(fire_time)]
        if near:
            self._cancel += near
            self._kick()

    def _within_reach(self) -> Callable[[datetime], bool]:
        if self._reach is None:
            return lambda _: True
        limit = datetime.now(UTC) + self._reach
        return lambda fire_time: fire_time <= limit

    def enqueue_deliveries(self, delivery_ids: Iterable[uuid.UUID]) -> None:
        """Ask to send committed deliveries now."""
        self._deliveries += [str(d) for d in delivery_ids]
        self._kick()

    def _kick(self) -> None:
        if self._closed:
            return
        if time.monotonic() < self._quiet_until:
            self._drop_queued()
            return
        pending = len(self._arm) + len(self._cancel) + len(self._deliveries)
        if pending > QUEUE_LIMIT:
            # Memory is bounded; the sweeps will find these rows.
            _log.warning("scheduler queue full, dropping requests", dropped=pending)
            self._drop_queued()
            return
        origin = trace.get_current_span().get_span_context()
        if origin.is_valid and len(self._origins) <= MAX_LINKS and origin not in self._origins[-1:]:
            self._origins.append(origin)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._send_forever(), context=contextvars.Context())
        self._wake.set()

    def _drop_queued(self) -> None:
        self._arm, self._cancel, self._deliveries, self._origins = [], [], [], []

    async def flush(self) -> None:
        """Send everything queued now (tests and shutdown)."""
        await self._send_once()

    async def close(self) -> None:
        """Send what is queued, then stop the task and the channel."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._send_once()
        if self._channel is not None:
            await self._channel.close(None)

    async def _send_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0.002)  # let the runs of the same moment join the batch
            await self._send_once()

    async def _send_once(self) -> None:
        if not (self._arm or self._cancel or self._deliveries):
            return
        origins, self._origins = self._origins, []
        with batch_span("scheduler batch", origins, len(self._arm) + len(self._cancel) + len(self._deliveries)):
            await self._send_queued()

    async def _send_queued(self) -> None:
        if self._channel is None:
            self._channel = internal_channel(
                self._address, token=self._token, timeout_seconds=self._timeout, tls=self._tls
            )
        stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)
        while self._arm or self._cancel or self._deliveries:
            arm, self._arm = self._arm[:BATCH_LIMIT], self._arm[BATCH_LIMIT:]
            cancel, self._cancel = self._cancel[:BATCH_LIMIT], self._cancel[BATCH_LIMIT:]
            deliveries, self._deliveries = self._deliveries[:BATCH_LIMIT], self._deliveries[BATCH_LIMIT:]
            try:
                if arm:
                    await stub.ScheduleResumes(scheduler_pb2.ScheduleResumesRequest(resumes=arm))
                if cancel:
                    await stub.CancelResumes(scheduler_pb2.CancelResumesRequest(wait_ids=cancel))
                if deliveries:
                    await stub.EnqueueDeliveries(scheduler_pb2.EnqueueDeliveriesRequest(delivery_ids=deliveries))
            except grpc.aio.AioRpcError as error:
                self._quiet_until = time.monotonic() + QUIET_SECONDS
                self._drop_queued()
                _log.info(
                    "scheduler call failed; its sweep will catch up (requests dropped for a second)",
                    code=error.code().name,
                    timers=len(arm),
                    cancels=len(cancel),
                    deliveries=len(deliveries),
                )
