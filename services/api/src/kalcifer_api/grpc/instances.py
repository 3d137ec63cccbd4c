"""`kalcifer.v1.InstanceService`: reads instances and steps from PostgreSQL; cancels through the engine."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer.v1 import instance_pb2, instance_pb2_grpc
from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.pagination import PageCursor, decode_page_token, encode_page_token, page_size_of, time_key
from kalcifer_common.rpc.auth import current_tenant_id
from kalcifer_common.rpc.errors import map_errors
from kalcifer_common.statuses import InstanceStatus, StepStatus
from kalcifer_common.structs import dict_to_struct
from kalcifer_common.timestamps import to_timestamp

from kalcifer_api.domain.instances import (
    DEFAULT_IDLE_THRESHOLD,
    DEFAULT_OVERDUE_THRESHOLD,
    InstanceFilter,
    InstanceRecord,
    StepRecord,
    StuckFilter,
    StuckReason,
    StuckRecord,
    exit_reason_violations,
    id_or_violation,
    participant_id_violations,
    request_id_violations,
    stuck_threshold,
)
from kalcifer_api.repo.instances import InstanceRepository

_Status = instance_pb2.InstanceStatus
_Step = instance_pb2.StepStatus

INSTANCE_STATUS_TO_PROTO: dict[str, instance_pb2.InstanceStatus.ValueType] = {
    InstanceStatus.RUNNING: _Status.INSTANCE_STATUS_RUNNING,
    InstanceStatus.WAITING: _Status.INSTANCE_STATUS_WAITING,
    InstanceStatus.PAUSED: _Status.INSTANCE_STATUS_PAUSED,
    InstanceStatus.COMPLETED: _Status.INSTANCE_STATUS_COMPLETED,
    InstanceStatus.FAILED: _Status.INSTANCE_STATUS_FAILED,
    InstanceStatus.EXITED: _Status.INSTANCE_STATUS_EXITED,
}
INSTANCE_STATUS_FROM_PROTO = {proto: name for name, proto in INSTANCE_STATUS_TO_PROTO.items()}

STEP_STATUS_TO_PROTO: dict[str, instance_pb2.StepStatus.ValueType] = {
    StepStatus.RUNNING: _Step.STEP_STATUS_RUNNING,
    StepStatus.COMPLETED: _Step.STEP_STATUS_COMPLETED,
    StepStatus.FAILED: _Step.STEP_STATUS_FAILED,
    StepStatus.WAITING: _Step.STEP_STATUS_WAITING,
    "skipped": _Step.STEP_STATUS_SKIPPED,
    StepStatus.CANCELLED: _Step.STEP_STATUS_CANCELLED,
}


def instance_to_proto(instance: InstanceRecord) -> instance_pb2.FlowInstance:
    """Domain -> wire."""
    return instance_pb2.FlowInstance(
        id=str(instance.id),
        flow_id=str(instance.flow_id),
        version_number=instance.version_number,
        participant_id=instance.participant_id,
        status=INSTANCE_STATUS_TO_PROTO.get(instance.status, _Status.INSTANCE_STATUS_UNSPECIFIED),
        current_nodes=instance.current_nodes,
        context=dict_to_struct(instance.context),
        exit_reason=instance.exit_reason,
        enter_time=to_timestamp(instance.enter_time),
        end_time=to_timestamp(instance.end_time),
    )


def _output_struct(output: Any) -> struct_pb2.Struct | None:
    # Node results are JSON objects as a rule; a scalar or list result is wrapped so it still reaches the caller.
    if output is None:
        return None
    if isinstance(output, dict):
        return dict_to_struct(output)
    return dict_to_struct({"value": output})


def step_to_proto(step: StepRecord) -> instance_pb2.ExecutionStep:
    """Domain -> wire."""
    return instance_pb2.ExecutionStep(
        id=str(step.id),
        instance_id=str(step.instance_id),
        node_id=step.node_id,
        node_type=step.node_type,
        version_number=step.version_number,
        status=STEP_STATUS_TO_PROTO.get(step.status, _Step.STEP_STATUS_UNSPECIFIED),
        input=dict_to_struct(step.input),
        output=_output_struct(step.output),
        error=step.error,
        start_time=to_timestamp(step.start_time),
        end_time=to_timestamp(step.end_time),
        branch=step.branch,
    )


STUCK_REASON_TO_PROTO: dict[StuckReason, instance_pb2.StuckReason.ValueType] = {
    StuckReason.WAIT_OVERDUE: instance_pb2.StuckReason.STUCK_REASON_WAIT_OVERDUE,
    StuckReason.NO_PROGRESS: instance_pb2.StuckReason.STUCK_REASON_NO_PROGRESS,
}


def stuck_to_proto(stuck: StuckRecord) -> instance_pb2.StuckInstance:
    """Domain -> wire."""
    return instance_pb2.StuckInstance(
        instance=instance_to_proto(stuck.instance),
        reason=STUCK_REASON_TO_PROTO[stuck.reason],
        since=to_timestamp(stuck.since),
        wait_id=str(stuck.wait_id) if stuck.wait_id is not None else "",
        node_id=stuck.node_id,
        wait_kind=stuck.wait_kind,
    )


def _stuck_filter(request: instance_pb2.ListStuckInstancesRequest) -> StuckFilter:
    violations: list[FieldViolation] = []
    flow_id = id_or_violation(request.flow_id, "flow_id", violations, required=False)
    overdue, idle = request.overdue_threshold, request.idle_threshold
    where = StuckFilter(
        flow_id=flow_id,
        overdue=stuck_threshold(
            overdue.seconds, overdue.nanos, "overdue_threshold", DEFAULT_OVERDUE_THRESHOLD, violations
        ),
        idle=stuck_threshold(idle.seconds, idle.nanos, "idle_threshold", DEFAULT_IDLE_THRESHOLD, violations),
    )
    if violations:
        raise InvalidArgument(violations)
    return where


def _instance_filter(request: instance_pb2.ListInstancesRequest) -> InstanceFilter:
    violations: list[FieldViolation] = []
    flow_id = id_or_violation(request.flow_id, "flow_id", violations, required=False)
    violations += participant_id_violations(request.participant_id, "participant_id", required=False)
    status: str | None = None
    if request.status != _Status.INSTANCE_STATUS_UNSPECIFIED:
        status = INSTANCE_STATUS_FROM_PROTO.get(request.status)
        if status is None:
            violations.append(FieldViolation("status", f"{request.status} is not an InstanceStatus"))
    if violations:
        raise InvalidArgument(violations)
    return InstanceFilter(flow_id=flow_id, status=status, participant_id=request.participant_id or None)


@map_errors
class InstanceServicer(instance_pb2_grpc.InstanceServiceServicer):
    """Instances are the engine's rows: read here tenant-scoped, changed only by asking the engine."""

    def __init__(self, instances: InstanceRepository, engine: engine_pb2_grpc.EngineServiceAsyncStub) -> None:
        self._instances = instances
        self._engine = engine

    async def GetInstance(self, request: instance_pb2.GetInstanceRequest, context: Any) -> instance_pb2.FlowInstance:
        violations: list[FieldViolation] = []
        instance_id = id_or_violation(request.id, "id", violations)
        if instance_id is None:
            raise InvalidArgument(violations)
        return instance_to_proto(await self._instances.get(instance_id))

    async def ListInstances(
        self, request: instance_pb2.ListInstancesRequest, context: Any
    ) -> instance_pb2.ListInstancesResponse:
        where = _instance_filter(request)
        limit = page_size_of(request.page_size)
        query = {
            "list": "instances",
            "flow_id": request.flow_id,
            "status": int(request.status),
            "participant_id": request.participant_id,
        }
        rows = await self._instances.list_instances(
            where, limit=limit, after=decode_page_token(request.page_token, query=query)
        )
        next_token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            next_token = encode_page_token(PageCursor(time_key(last.enter_time), str(last.id)), query=query)
        return instance_pb2.ListInstancesResponse(
            instances=[instance_to_proto(row) for row in rows[:limit]], next_page_token=next_token
        )

    async def ListExecutionSteps(
        self, request: instance_pb2.ListExecutionStepsRequest, context: Any
    ) -> instance_pb2.ListExecutionStepsResponse:
        violations: list[FieldViolation] = []
        instance_id = id_or_violation(request.instance_id, "instance_id", violations)
        if instance_id is None:
            raise InvalidArgument(violations)
        limit = page_size_of(request.page_size)
        query = {"list": "steps", "instance_id": str(instance_id)}
        rows = await self._instances.list_steps(
            instance_id, limit=limit, after=decode_page_token(request.page_token, query=query)
        )
        next_token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            next_token = encode_page_token(PageCursor(str(last.seq), str(last.id)), query=query)
        return instance_pb2.ListExecutionStepsResponse(
            steps=[step_to_proto(row) for row in rows[:limit]], next_page_token=next_token
        )

    async def ListStuckInstances(
        self, request: instance_pb2.ListStuckInstancesRequest, context: Any
    ) -> instance_pb2.ListStuckInstancesResponse:
        where = _stuck_filter(request)
        limit = page_size_of(request.page_size)
        query = {
            "list": "stuck",
            "flow_id": request.flow_id,
            "overdue": where.overdue.total_seconds(),
            "idle": where.idle.total_seconds(),
        }
        rows = await self._instances.list_stuck(
            where, limit=limit, after=decode_page_token(request.page_token, query=query)
        )
        next_token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            next_token = encode_page_token(PageCursor(time_key(last.since), str(last.instance.id)), query=query)
        return instance_pb2.ListStuckInstancesResponse(
            instances=[stuck_to_proto(row) for row in rows[:limit]], next_page_token=next_token
        )

    async def CancelInstance(
        self, request: instance_pb2.CancelInstanceRequest, context: Any
    ) -> instance_pb2.FlowInstance:
        violations: list[FieldViolation] = []
        instance_id = id_or_violation(request.id, "id", violations)
        violations += exit_reason_violations(request.reason, "reason")
        violations += request_id_violations(request.request_id, "request_id")
        if violations or instance_id is None:
            raise InvalidArgument(violations)
        cancel = engine_pb2.CancelInstanceRequest(
            tenant_id=str(current_tenant_id()), instance_id=str(instance_id), reason=request.reason
        )

        async def cancel_in_engine() -> instance_pb2.FlowInstance:
            cancelled = await self._engine.CancelInstance(cancel)
            return cancelled.instance

        # A retry of a cancel that went through must answer like the first call, not INSTANCE_FINISHED.
        return await self._instances.run_idempotent(
            method="InstanceService.CancelInstance",
            request=request,
            response_type=instance_pb2.FlowInstance,
            compute=cancel_in_engine,
        )
