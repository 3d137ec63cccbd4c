"""`kalcifer.scheduler.v1.SchedulerService`: thin mapping from requests to the timer store, the delivery queue and
the delivery status reports."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
from kalcifer.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from kalcifer_common.errors import FieldViolation, InvalidArgument, Unavailable
from kalcifer_common.rpc.errors import map_errors
from kalcifer_common.statuses import DeliveryStatus
from kalcifer_common.timestamps import timestamp_in_request
from redis.exceptions import RedisError

from kalcifer_scheduler.deliveries.queue import DeliveryQueue
from kalcifer_scheduler.deliveries.reports import REPORTABLE, StatusReport, StatusReports
from kalcifer_scheduler.stats import SchedulerStats
from kalcifer_scheduler.timers.store import Timer, TimerStore

MAX_BATCH = 1000

_Context = grpc.aio.ServicerContext[Any, Any]


@map_errors
class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    """Arms and cancels timers, enqueues deliveries, applies delivery status reports. Redis failures are
    UNAVAILABLE: the sweep still fires."""

    def __init__(
        self, *, timers: TimerStore, deliveries: DeliveryQueue, reports: StatusReports, stats: SchedulerStats
    ) -> None:
        self._timers = timers
        self._deliveries = deliveries
        self._reports = reports
        self._stats = stats

    async def ScheduleResume(
        self, request: scheduler_pb2.ScheduleResumeRequest, context: _Context
    ) -> scheduler_pb2.ScheduleResumeResponse:
        """Arm one timer (no-op when armed already)."""
        violations: list[FieldViolation] = []
        timer = _timer_of(request, "", violations)
        if violations or timer is None:
            raise InvalidArgument(violations)
        async with _redis_errors():
            armed = await self._timers.arm([timer])
        self._stats.armed += armed
        return scheduler_pb2.ScheduleResumeResponse(scheduled=armed == 1)

    async def ScheduleResumes(
        self, request: scheduler_pb2.ScheduleResumesRequest, context: _Context
    ) -> scheduler_pb2.ScheduleResumesResponse:
        """Arm a batch of timers; any malformed element rejects the whole batch."""
        _check_batch_size(len(request.resumes), "resumes")
        violations: list[FieldViolation] = []
        timers = [_timer_of(item, f"resumes[{i}].", violations) for i, item in enumerate(request.resumes)]
        if violations:
            raise InvalidArgument(violations)
        async with _redis_errors():
            armed = await self._timers.arm([timer for timer in timers if timer is not None])
        self._stats.armed += armed
        return scheduler_pb2.ScheduleResumesResponse(scheduled=armed)

    async def CancelResume(
        self, request: scheduler_pb2.CancelResumeRequest, context: _Context
    ) -> scheduler_pb2.CancelResumeResponse:
        """Disarm one timer; unknown or fired ones answer cancelled=false."""
        wait_ids = _ids_of([request.wait_id], lambda i: "wait_id")
        async with _redis_errors():
            cancelled = await self._timers.cancel(wait_ids)
        self._stats.cancelled += cancelled
        return scheduler_pb2.CancelResumeResponse(cancelled=cancelled == 1)

    async def CancelResumes(
        self, request: scheduler_pb2.CancelResumesRequest, context: _Context
    ) -> scheduler_pb2.CancelResumesResponse:
        """Disarm a batch of timers."""
        _check_batch_size(len(request.wait_ids), "wait_ids")
        wait_ids = _ids_of(list(request.wait_ids), lambda i: f"wait_ids[{i}]")
        async with _redis_errors():
            cancelled = await self._timers.cancel(wait_ids)
        self._stats.cancelled += cancelled
        return scheduler_pb2.CancelResumesResponse(cancelled=cancelled)

    async def EnqueueDeliveries(
        self, request: scheduler_pb2.EnqueueDeliveriesRequest, context: _Context
    ) -> scheduler_pb2.EnqueueDeliveriesResponse:
        """Queue committed pending deliveries for sending now."""
        _check_batch_size(len(request.delivery_ids), "delivery_ids")
        ids = _ids_of(list(request.delivery_ids), lambda i: f"delivery_ids[{i}]")
        async with _redis_errors():
            enqueued = await self._deliveries.enqueue_pending([uuid.UUID(value) for value in ids])
        return scheduler_pb2.EnqueueDeliveriesResponse(enqueued=enqueued)

    async def ReportDeliveryStatus(
        self, request: scheduler_pb2.ReportDeliveryStatusRequest, context: _Context
    ) -> scheduler_pb2.ReportDeliveryStatusResponse:
        """Apply a provider's report (relayed by the API) under the forward-only rule."""
        violations: list[FieldViolation] = []
        for field in ("tenant_id", "delivery_id"):
            _check_uuid(getattr(request, field), field, violations)
        if request.status not in REPORTABLE:
            violations.append(FieldViolation("status", f"must be one of {', '.join(sorted(REPORTABLE))}"))
        occurred_at = None
        if not request.HasField("occurred_at"):
            violations.append(FieldViolation("occurred_at", "is required"))
        else:
            occurred_at = timestamp_in_request(request.occurred_at, "occurred_at", violations)
        if violations or occurred_at is None:
            raise InvalidArgument(violations)
        status, changed = await self._reports.apply(
            StatusReport(
                tenant_id=uuid.UUID(request.tenant_id),
                delivery_id=uuid.UUID(request.delivery_id),
                status=DeliveryStatus(request.status),
                provider_message_id=request.provider_message_id,
                occurred_at=occurred_at,
                reason=request.reason,
            )
        )
        if changed:
            self._stats.delivery_reported(status)
        return scheduler_pb2.ReportDeliveryStatusResponse(status=status.value, changed=changed)


def _timer_of(
    request: scheduler_pb2.ScheduleResumeRequest, prefix: str, violations: list[FieldViolation]
) -> Timer | None:
    before = len(violations)
    for field in ("instance_id", "wait_id"):
        _check_uuid(getattr(request, field), f"{prefix}{field}", violations)
    if not request.HasField("fire_time"):
        violations.append(FieldViolation(f"{prefix}fire_time", "is required"))
    elif not 0 <= request.fire_time.seconds < 253402300800:  # 0001..9999 is what Timestamp allows
        violations.append(FieldViolation(f"{prefix}fire_time", "is out of range"))
    if len(violations) > before:
        return None
    fire_ms = request.fire_time.seconds * 1000 + (request.fire_time.nanos + 999_999) // 1_000_000
    return Timer(str(uuid.UUID(request.wait_id)), fire_ms)


def _ids_of(values: Sequence[str], field_of: Any) -> list[str]:
    violations: list[FieldViolation] = []
    for i, value in enumerate(values):
        _check_uuid(value, field_of(i), violations)
    if violations:
        raise InvalidArgument(violations)
    return [str(uuid.UUID(value)) for value in values]


def _check_uuid(value: str, field: str, violations: list[FieldViolation]) -> None:
    if not value:
        violations.append(FieldViolation(field, "is required"))
        return
    try:
        uuid.UUID(value)
    except ValueError:
        violations.append(FieldViolation(field, f"{value!r} is not a valid id (expected a UUID)"))


def _check_batch_size(size: int, field: str) -> None:
    if not 1 <= size <= MAX_BATCH:
        raise InvalidArgument.single(field, f"must hold 1 to {MAX_BATCH} items, got {size}")


@asynccontextmanager
async def _redis_errors() -> AsyncIterator[None]:
    """Redis down or timing out is UNAVAILABLE: the caller may retry, and the sweep fires the wait anyway."""
    try:
        yield
    except (RedisError, OSError) as error:
        raise Unavailable(f"redis unavailable: {error}") from error
