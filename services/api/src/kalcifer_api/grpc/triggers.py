"""`kalcifer.v1.TriggerService`: starts instances through the engine, for one flow or every flow on a webhook path.

The engine owns the rules of a start (flow ACTIVE, active version, entry node, one live instance per participant,
request_id idempotency); its refusals reach the caller unchanged through `map_errors`.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc
from google.rpc import error_details_pb2, status_pb2
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer.v1 import trigger_pb2, trigger_pb2_grpc
from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.rpc.auth import current_tenant_id
from kalcifer_common.rpc.errors import map_errors

from kalcifer_api.domain.instances import id_or_violation, participant_id_violations, request_id_violations
from kalcifer_api.domain.payloads import payload_violations
from kalcifer_api.domain.triggers import (
    WebhookTarget,
    entry_node_id_violations,
    webhook_path_violations,
    webhook_request_id,
)
from kalcifer_api.engine_batches import StartBatches
from kalcifer_api.repo.triggers import WebhookTargetRepository

# How many flows of one webhook call start at once: enough to hide engine latency, bounded so one call with many
# matching flows cannot monopolise the engine.
WEBHOOK_START_CONCURRENCY = 8

# Refusals that mean "this flow does not take the participant now": a webhook skips the flow rather than failing
# the whole call (already in the flow, or the flow was paused, archived or deleted since it was looked up).
_SKIPPED_REASONS = frozenset({"ALREADY_IN_FLOW", "FLOW_NOT_ACTIVE", "NO_ACTIVE_VERSION"})


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The `google.rpc.ErrorInfo` reason carried by another service's error, or "" when it has none."""
    for key, value in cast(Any, error.trailing_metadata()) or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return ""


def _skips_flow(error: grpc.aio.AioRpcError) -> bool:
    if error.code() == grpc.StatusCode.NOT_FOUND:
        return True
    return error.code() in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION) and (
        error_reason(error) in _SKIPPED_REASONS
    )


@map_errors
class TriggerServicer(trigger_pb2_grpc.TriggerServiceServicer):
    """TriggerFlow and TriggerWebhook."""

    def __init__(
        self,
        engine: engine_pb2_grpc.EngineServiceAsyncStub,
        starts: StartBatches,
        webhook_targets: WebhookTargetRepository,
    ) -> None:
        self._engine = engine
        self._starts = starts
        self._webhook_targets = webhook_targets

    async def TriggerFlow(
        self, request: trigger_pb2.TriggerFlowRequest, context: Any
    ) -> trigger_pb2.TriggerFlowResponse:
        violations: list[FieldViolation] = []
        flow_id = id_or_violation(request.flow_id, "flow_id", violations)
        violations += participant_id_violations(request.participant_id, "participant_id")
        violations += payload_violations(request.context, "context")
        violations += entry_node_id_violations(request.entry_node_id, "entry_node_id")
        violations += request_id_violations(request.request_id, "request_id")
        if violations or flow_id is None:
            raise InvalidArgument(violations)
        started = await self._starts(
            engine_pb2.StartInstanceRequest(
                tenant_id=str(current_tenant_id()),
                flow_id=str(flow_id),
                participant_id=request.participant_id,
                context=request.context if request.HasField("context") else None,
                entry_node_id=request.entry_node_id,
                request_id=request.request_id,
            )
        )
        return trigger_pb2.TriggerFlowResponse(instance_id=started.instance_id)

    async def TriggerWebhook(
        self, request: trigger_pb2.TriggerWebhookRequest, context: Any
    ) -> trigger_pb2.TriggerWebhookResponse:
        violations = webhook_path_violations(request.webhook_path, "webhook_path")
        violations += participant_id_violations(request.participant_id, "participant_id")
        violations += payload_violations(request.payload, "payload")
        violations += request_id_violations(request.request_id, "request_id")
        if violations:
            raise InvalidArgument(violations)
        targets = await self._webhook_targets.targets(request.webhook_path)
        tenant_id = str(current_tenant_id())
        gate = asyncio.Semaphore(WEBHOOK_START_CONCURRENCY)

        async def start(target: WebhookTarget) -> str | None:
            async with gate:
                try:
                    started = await self._engine.StartInstance(
                        engine_pb2.StartInstanceRequest(
                            tenant_id=tenant_id,
                            flow_id=str(target.flow_id),
                            participant_id=request.participant_id,
                            context=request.payload if request.HasField("payload") else None,
                            event=request.payload if request.HasField("payload") else None,
                            entry_node_id=target.entry_node_id,
                            request_id=webhook_request_id(request.request_id, target.flow_id),
                        )
                    )
                except grpc.aio.AioRpcError as error:
                    if _skips_flow(error):
                        return None
                    raise
                return str(started.instance_id)

        # Every start runs to its end; then any other failure fails the call. Starts that went through are kept and,
        # with a request_id, a retry gets the same instances back (each flow's start is idempotent under its key).
        outcomes = await asyncio.gather(*(start(target) for target in targets), return_exceptions=True)
        instance_ids: list[str] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is not None:
                instance_ids.append(outcome)
        return trigger_pb2.TriggerWebhookResponse(instance_ids=instance_ids)
