"""InstanceService: instances, their steps, cancelling, and the stuck-instance report."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from google.protobuf import duration_pb2
from kalcifer.v1 import instance_pb2, instance_pb2_grpc

from kalcifer_client._pagination import paginate
from kalcifer_client._transport import Transport


class Instances:
    """A tenant's flow instances (read-only but for `cancel`: the engine alone changes them)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._stub = instance_pb2_grpc.InstanceServiceStub(transport.channel)

    async def get(self, instance_id: str) -> instance_pb2.FlowInstance:
        """One instance."""
        return await self._transport.call(self._stub.GetInstance, instance_pb2.GetInstanceRequest(id=instance_id))

    def list(
        self,
        *,
        flow_id: str = "",
        status: instance_pb2.InstanceStatus.ValueType = instance_pb2.INSTANCE_STATUS_UNSPECIFIED,
        participant_id: str = "",
        page_size: int = 0,
    ) -> AsyncIterator[instance_pb2.FlowInstance]:
        """Instances newest first, filtered by flow, status and participant when given."""

        async def page(token: str) -> tuple[Sequence[instance_pb2.FlowInstance], str]:
            request = instance_pb2.ListInstancesRequest(
                flow_id=flow_id, status=status, participant_id=participant_id, page_size=page_size, page_token=token
            )
            response = await self._transport.call(self._stub.ListInstances, request)
            return response.instances, response.next_page_token

        return paginate(page)

    def steps(self, instance_id: str, *, page_size: int = 0) -> AsyncIterator[instance_pb2.ExecutionStep]:
        """The instance's steps in execution order."""

        async def page(token: str) -> tuple[Sequence[instance_pb2.ExecutionStep], str]:
            request = instance_pb2.ListExecutionStepsRequest(
                instance_id=instance_id, page_size=page_size, page_token=token
            )
            response = await self._transport.call(self._stub.ListExecutionSteps, request)
            return response.steps, response.next_page_token

        return paginate(page)

    async def cancel(self, instance_id: str, *, reason: str = "", request_id: str = "") -> instance_pb2.FlowInstance:
        """End a live instance as EXITED (`FailedPrecondition` INSTANCE_FINISHED when it already ended)."""
        request = instance_pb2.CancelInstanceRequest(id=instance_id, reason=reason, request_id=request_id)
        return await self._transport.call(self._stub.CancelInstance, request)

    def stuck(
        self,
        *,
        flow_id: str = "",
        overdue: timedelta | None = None,
        idle: timedelta | None = None,
        page_size: int = 0,
    ) -> AsyncIterator[instance_pb2.StuckInstance]:
        """Stuck instances, stuck longest first: WAITING with a wait more than `overdue` past its fire time, or
        RUNNING with no progress for more than `idle` (None: the server's defaults, 60 s and 300 s)."""

        async def page(token: str) -> tuple[Sequence[instance_pb2.StuckInstance], str]:
            request = instance_pb2.ListStuckInstancesRequest(flow_id=flow_id, page_size=page_size, page_token=token)
            if overdue is not None:
                request.overdue_threshold.CopyFrom(_duration(overdue))
            if idle is not None:
                request.idle_threshold.CopyFrom(_duration(idle))
            response = await self._transport.call(self._stub.ListStuckInstances, request)
            return response.instances, response.next_page_token

        return paginate(page)


def _duration(delta: timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(delta)
    return duration
