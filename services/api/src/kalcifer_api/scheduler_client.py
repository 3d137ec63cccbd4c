"""The API's client of `kalcifer.scheduler.v1.SchedulerService`, over a channel that carries the internal token.

The API asks the scheduler to apply providers' delivery status reports: the scheduler is the one writer of
delivery statuses (it sends deliveries and moves them along), so the API never writes that column itself.
"""

from __future__ import annotations

import uuid

import grpc
from kalcifer.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from kalcifer_common.rpc.clients import internal_channel
from kalcifer_common.settings import ApiSettings
from kalcifer_common.timestamps import to_timestamp

from kalcifer_api.domain.deliveries import DeliveryReport


class SchedulerClient:
    """One channel for the process. Errors the scheduler answers with reach the caller through `map_errors`."""

    def __init__(self, settings: ApiSettings) -> None:
        self._channel: grpc.aio.Channel = internal_channel(
            settings.scheduler_addr,
            token=settings.kalcifer_internal_token,
            timeout_seconds=settings.rpc_timeout_seconds,
            tls=settings.tls(),
        )
        self.stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)

    async def close(self) -> None:
        """Close the channel (at shutdown)."""
        await self._channel.close(grace=None)

    async def report_delivery_status(self, tenant_id: uuid.UUID, report: DeliveryReport) -> bool:
        """Have the scheduler apply `report` to the tenant's delivery; whether it changed the delivery.
        NOT_FOUND and FAILED_PRECONDITION INVALID_TRANSITION are relayed as the scheduler answered them."""
        answer = await self.stub.ReportDeliveryStatus(
            scheduler_pb2.ReportDeliveryStatusRequest(
                tenant_id=str(tenant_id),
                delivery_id=str(report.delivery_id),
                status=report.status.value,
                provider_message_id=report.provider_message_id,
                occurred_at=to_timestamp(report.occurred_at),
                reason=report.reason,
            )
        )
        return answer.changed
