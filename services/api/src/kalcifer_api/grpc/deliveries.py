"""`kalcifer.v1.DeliveryService`: deliveries read from PostgreSQL; providers' status reports relayed to the
scheduler, which alone writes delivery statuses (one writer per column: it sends, and applies the reports under
the same forward-only rule, so a report and a send can never undo each other)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kalcifer.v1 import delivery_pb2, delivery_pb2_grpc
from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.pagination import PageCursor, decode_page_token, encode_page_token, page_size_of, time_key
from kalcifer_common.rpc.auth import current_tenant_id
from kalcifer_common.rpc.errors import map_errors
from kalcifer_common.statuses import DeliveryStatus
from kalcifer_common.timestamps import timestamp_in_request, to_timestamp

from kalcifer_api.domain.deliveries import DeliveryFilter, DeliveryRecord, DeliveryReport, report_violations
from kalcifer_api.domain.instances import id_or_violation, participant_id_violations
from kalcifer_api.domain.templates import channel_violations
from kalcifer_api.repo.deliveries import DeliveryRepository
from kalcifer_api.scheduler_client import SchedulerClient

_Status = delivery_pb2.DeliveryStatus

DELIVERY_STATUS_TO_PROTO: dict[str, delivery_pb2.DeliveryStatus.ValueType] = {
    DeliveryStatus.PENDING: _Status.DELIVERY_STATUS_PENDING,
    DeliveryStatus.SENDING: _Status.DELIVERY_STATUS_SENDING,
    DeliveryStatus.SENT: _Status.DELIVERY_STATUS_SENT,
    DeliveryStatus.DELIVERED: _Status.DELIVERY_STATUS_DELIVERED,
    DeliveryStatus.BOUNCED: _Status.DELIVERY_STATUS_BOUNCED,
    DeliveryStatus.FAILED: _Status.DELIVERY_STATUS_FAILED,
}
DELIVERY_STATUS_FROM_PROTO = {proto: DeliveryStatus(name) for name, proto in DELIVERY_STATUS_TO_PROTO.items()}


def delivery_to_proto(delivery: DeliveryRecord) -> delivery_pb2.Delivery:
    """Domain -> wire."""
    return delivery_pb2.Delivery(
        id=str(delivery.id),
        instance_id=str(delivery.instance_id) if delivery.instance_id else "",
        node_id=delivery.node_id,
        participant_id=delivery.participant_id,
        channel=delivery.channel,
        template_id=delivery.template_id,
        status=DELIVERY_STATUS_TO_PROTO.get(delivery.status, _Status.DELIVERY_STATUS_UNSPECIFIED),
        provider=delivery.provider,
        provider_message_id=delivery.provider_message_id,
        attempts=delivery.attempts,
        reason=delivery.reason,
        send_after=to_timestamp(delivery.send_after),
        create_time=to_timestamp(delivery.create_time),
        update_time=to_timestamp(delivery.update_time),
        sent_time=to_timestamp(delivery.sent_time),
        final_time=to_timestamp(delivery.final_time),
        idempotency_key=delivery.idempotency_key,
    )


def _delivery_filter(request: delivery_pb2.ListDeliveriesRequest) -> DeliveryFilter:
    violations: list[FieldViolation] = []
    if not request.instance_id and not request.participant_id:
        violations.append(FieldViolation("instance_id", "give instance_id or participant_id (or both)"))
    instance_id = id_or_violation(request.instance_id, "instance_id", violations, required=False)
    violations += participant_id_violations(request.participant_id, "participant_id", required=False)
    violations += channel_violations(request.channel, required=False)
    status: str | None = None
    if request.status != _Status.DELIVERY_STATUS_UNSPECIFIED:
        status = DELIVERY_STATUS_FROM_PROTO.get(request.status)
        if status is None:
            violations.append(FieldViolation("status", f"{request.status} is not a DeliveryStatus"))
    if violations:
        raise InvalidArgument(violations)
    return DeliveryFilter(
        instance_id=instance_id,
        participant_id=request.participant_id or None,
        status=status,
        channel=request.channel or None,
    )


def _report_of(request: delivery_pb2.ReportDeliveryStatusRequest) -> DeliveryReport:
    violations: list[FieldViolation] = []
    delivery_id = id_or_violation(request.delivery_id, "delivery_id", violations)
    now = datetime.now(UTC)
    occurred_at = (
        timestamp_in_request(request.occurred_at, "occurred_at", violations) if request.HasField("occurred_at") else now
    )
    status = DELIVERY_STATUS_FROM_PROTO.get(request.status)
    violations += report_violations(
        status=status,
        provider_message_id=request.provider_message_id,
        occurred_at=occurred_at or now,
        reason=request.reason,
        now=now,
    )
    if violations or delivery_id is None or status is None or occurred_at is None:
        raise InvalidArgument(violations)
    return DeliveryReport(
        delivery_id=delivery_id,
        status=status,
        provider_message_id=request.provider_message_id,
        occurred_at=occurred_at,
        reason=request.reason,
    )


@map_errors
class DeliveryServicer(delivery_pb2_grpc.DeliveryServiceServicer):
    """GetDelivery and ListDeliveries read; ReportDeliveryStatus asks the scheduler, then reads the result."""

    def __init__(self, deliveries: DeliveryRepository, scheduler: SchedulerClient) -> None:
        self._deliveries = deliveries
        self._scheduler = scheduler

    async def GetDelivery(self, request: delivery_pb2.GetDeliveryRequest, context: Any) -> delivery_pb2.Delivery:
        violations: list[FieldViolation] = []
        delivery_id = id_or_violation(request.id, "id", violations)
        if delivery_id is None:
            raise InvalidArgument(violations)
        return delivery_to_proto(await self._deliveries.get(delivery_id))

    async def ListDeliveries(
        self, request: delivery_pb2.ListDeliveriesRequest, context: Any
    ) -> delivery_pb2.ListDeliveriesResponse:
        where = _delivery_filter(request)
        limit = page_size_of(request.page_size)
        query = {
            "list": "deliveries",
            "instance_id": request.instance_id,
            "participant_id": request.participant_id,
            "status": int(request.status),
            "channel": request.channel,
        }
        rows = await self._deliveries.list_page(
            where, limit=limit, after=decode_page_token(request.page_token, query=query)
        )
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = encode_page_token(PageCursor(time_key(last.create_time), str(last.id)), query=query)
        return delivery_pb2.ListDeliveriesResponse(
            deliveries=[delivery_to_proto(row) for row in rows[:limit]], next_page_token=token
        )

    async def ReportDeliveryStatus(
        self, request: delivery_pb2.ReportDeliveryStatusRequest, context: Any
    ) -> delivery_pb2.Delivery:
        report = _report_of(request)
        tenant_id = current_tenant_id()

        async def relay() -> delivery_pb2.Delivery:
            await self._scheduler.report_delivery_status(tenant_id, report)
            return delivery_to_proto(await self._deliveries.get(report.delivery_id))

        return await self._deliveries.relay_once(
            "DeliveryService.ReportDeliveryStatus", request, delivery_pb2.Delivery, relay
        )
