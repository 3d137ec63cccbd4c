"""EngineService RPCs of instance execution: start, resume, route events, cancel, pause, migrate.

Thin: proto -> parsed request -> `runtime` operation -> proto. Struct <-> dict conversion happens here, once.
No transaction is opened here: the runtime operation opens its own (and remembers a `request_id`'s answer in it,
given a `Replay`); a database failure a retry can get past answers UNAVAILABLE through the servicer's `map_errors`
(`kalcifer_common.db.errors`, the rule of every service).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from kalcifer.engine.v1 import engine_pb2
from kalcifer.v1 import flow_pb2, instance_pb2
from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.ids import parse_id
from kalcifer_common.rpc.errors import answerable, status_proto_for
from kalcifer_common.statuses import InstanceStatus
from kalcifer_common.structs import dict_to_struct, struct_to_dict
from kalcifer_common.timestamps import to_timestamp

from kalcifer_engine.deps import EngineDeps
from kalcifer_engine.repo.instances import InstanceRow
from kalcifer_engine.runtime import events, lifecycle, migration, resumes, starts
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.grouped_calls import GroupedCalls
from kalcifer_engine.runtime.migration import MigrationReport
from kalcifer_engine.runtime.replay import Replay

MAX_BATCH = 1000
MAX_PARTICIPANT_ID = 256

_R = TypeVar("_R")

_STATUS: dict[str, instance_pb2.InstanceStatus.ValueType] = {
    InstanceStatus.RUNNING: instance_pb2.INSTANCE_STATUS_RUNNING,
    InstanceStatus.WAITING: instance_pb2.INSTANCE_STATUS_WAITING,
    InstanceStatus.PAUSED: instance_pb2.INSTANCE_STATUS_PAUSED,
    InstanceStatus.COMPLETED: instance_pb2.INSTANCE_STATUS_COMPLETED,
    InstanceStatus.FAILED: instance_pb2.INSTANCE_STATUS_FAILED,
    InstanceStatus.EXITED: instance_pb2.INSTANCE_STATUS_EXITED,
}
_STRATEGY = {
    flow_pb2.MIGRATION_STRATEGY_NEW_ENTRIES_ONLY: migration.NEW_ENTRIES_ONLY,
    flow_pb2.MIGRATION_STRATEGY_MIGRATE_ALL: migration.MIGRATE_ALL,
}


def instance_to_proto(instance: InstanceRow) -> instance_pb2.FlowInstance:
    """The wire form of an instance row."""
    return instance_pb2.FlowInstance(
        id=str(instance.id),
        flow_id=str(instance.flow_id),
        version_number=instance.version_number,
        participant_id=instance.participant_id,
        status=_STATUS.get(instance.status, instance_pb2.INSTANCE_STATUS_UNSPECIFIED),
        current_nodes=instance.current_nodes,
        context=dict_to_struct(instance.context),
        exit_reason=instance.exit_reason or "",
        enter_time=to_timestamp(instance.enter_time),
        end_time=to_timestamp(instance.end_time),
    )


def _participant(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument.single(field, "is required")
    if len(value) > MAX_PARTICIPANT_ID:
        raise InvalidArgument.single(field, f"must be at most {MAX_PARTICIPANT_ID} characters")
    return value


def _resume_request(request: engine_pb2.ResumeInstanceRequest, prefix: str = "") -> resumes.ResumeRequest:
    violations: list[FieldViolation] = []
    ids: dict[str, uuid.UUID] = {}
    for name in ("instance_id", "wait_id"):
        try:
            ids[name] = parse_id(getattr(request, name), f"{prefix}{name}")
        except InvalidArgument as error:
            violations += error.violations
    if request.trigger not in resumes.TRIGGERS:
        violations.append(
            FieldViolation(
                f"{prefix}trigger", f"must be one of {', '.join(sorted(resumes.TRIGGERS))}; got {request.trigger!r}"
            )
        )
    if violations:
        raise InvalidArgument(violations)
    return resumes.ResumeRequest(ids["instance_id"], ids["wait_id"], request.trigger, struct_to_dict(request.data))


def _event(request: engine_pb2.RouteEventRequest, prefix: str = "") -> events.EventToRoute:
    violations: list[FieldViolation] = []
    parsed: dict[str, uuid.UUID] = {}
    for name in ("tenant_id", "event_id"):
        try:
            parsed[name] = parse_id(getattr(request, name), f"{prefix}{name}")
        except InvalidArgument as error:
            violations += error.violations
    for name in ("participant_id", "event_type"):
        if not getattr(request, name):
            violations.append(FieldViolation(f"{prefix}{name}", "is required"))
    if violations:
        raise InvalidArgument(violations)
    return events.EventToRoute(
        parsed["tenant_id"],
        parsed["event_id"],
        request.participant_id,
        request.event_type,
        struct_to_dict(request.data),
    )


def _route_response(result: events.RouteResult) -> engine_pb2.RouteEventResponse:
    return engine_pb2.RouteEventResponse(
        resumed=result.resumed, started=result.started, instance_ids=list(result.instance_ids)
    )


def _start_response(instance_id: uuid.UUID) -> engine_pb2.StartInstanceResponse:
    return engine_pb2.StartInstanceResponse(instance_id=str(instance_id))


def _migration_response(report: MigrationReport) -> engine_pb2.MigrateInstancesResponse:
    return engine_pb2.MigrateInstancesResponse(
        migrated=report.migrated,
        exited=report.exited,
        skipped=report.skipped,
        failures=[flow_pb2.MigrationFailure(instance_id=i, reason=r) for i, r in report.failures],
        in_progress=report.in_progress,
    )


def _batch_size(count: int, field: str) -> None:
    if not 1 <= count <= MAX_BATCH:
        raise InvalidArgument.single(field, f"must hold 1 to {MAX_BATCH} items; got {count}")


async def _each(
    calls: Sequence[Coroutine[Any, Any, Message]], method: str, result: Callable[..., _R], answer: str
) -> list[_R]:
    """The calls of a batch RPC run concurrently, each answered by a `result` message holding its answer (field
    `answer`) or its error as a serialized `google.rpc.Status` (field `error`: what the call alone would have
    failed with). Cancellation is the whole call's."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    results: list[_R] = []
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            results.append(result(error=status_proto_for(answerable(outcome, method)).SerializeToString()))
        elif isinstance(outcome, BaseException):  # cancelled: the whole call is
            raise outcome
        else:
            results.append(result(**{answer: outcome}))
    return results


class RuntimeRpcs:
    """StartInstance(s), ResumeInstance(s), RouteEvent(s), RouteEachEvent, CancelInstance, MigrateInstances,
    *FlowInstances."""

    deps: EngineDeps

    @property
    def runtime(self) -> Runtime:
        """The process's runtime (built on first use unless the composition root provided one)."""
        existing: Runtime | None = getattr(self.deps, "runtime", None)
        if existing is None:
            existing = Runtime(self.deps)
            self.deps.runtime = existing
        return existing

    @property
    def grouped(self) -> GroupedCalls:
        """The calls that share transactions (built on first use, over the process's runtime)."""
        existing = self.deps.grouped
        if existing is None:
            existing = self.deps.grouped = GroupedCalls.over(self.runtime)
        return existing

    async def StartInstance(
        self, request: engine_pb2.StartInstanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.StartInstanceResponse:
        """Start an instance and run it to its first waits, in one transaction (idempotent by request_id)."""
        return await self._start(request)

    async def StartInstances(
        self, request: engine_pb2.StartInstancesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.StartInstancesResponse:
        """Several StartInstance calls in one, each answered on its own (its error included), in request order;
        they share transactions as concurrent StartInstance calls do."""
        _batch_size(len(request.starts), "starts")
        calls = [self._start(item) for item in request.starts]
        results = await _each(calls, "StartInstances", engine_pb2.StartInstanceResult, "started")
        return engine_pb2.StartInstancesResponse(results=results)

    async def _start(self, request: engine_pb2.StartInstanceRequest) -> engine_pb2.StartInstanceResponse:
        violations: list[FieldViolation] = []
        parsed: dict[str, uuid.UUID] = {}
        for name in ("tenant_id", "flow_id"):
            try:
                parsed[name] = parse_id(getattr(request, name), name)
            except InvalidArgument as error:
                violations += error.violations
        try:
            participant = _participant(request.participant_id, "participant_id")
        except InvalidArgument as error:
            violations += error.violations
        if violations:
            raise InvalidArgument(violations)
        rt = self.runtime
        start = starts.StartRequest(
            tenant_id=parsed["tenant_id"],
            flow_id=parsed["flow_id"],
            participant_id=participant,
            context=struct_to_dict(request.context),
            entry_node_ids=(request.entry_node_id,) if request.entry_node_id else (),
            event=struct_to_dict(request.event) if request.HasField("event") else None,
        )
        if not request.request_id:
            return _start_response(await self.grouped.starts(start))
        return await starts.start_instance_once(
            rt,
            start,
            Replay("kalcifer.engine.v1.EngineService/StartInstance", request, engine_pb2.StartInstanceResponse),
            _start_response,
        )

    async def ResumeInstance(
        self, request: engine_pb2.ResumeInstanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.ResumeInstanceResponse:
        """Apply one resume; a duplicate, stale or late one answers applied=false with a reason."""
        outcome = await resumes.resume_one(self.runtime, _resume_request(request))
        return engine_pb2.ResumeInstanceResponse(applied=outcome.applied, reason=outcome.reason)

    async def ResumeInstances(
        self, request: engine_pb2.ResumeInstancesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.ResumeInstancesResponse:
        """Apply a batch of resumes, several per commit; any malformed one rejects the whole batch."""
        _batch_size(len(request.resumes), "resumes")
        parsed: list[resumes.ResumeRequest] = []
        violations: list[FieldViolation] = []
        for index, item in enumerate(request.resumes):
            try:
                parsed.append(_resume_request(item, f"resumes[{index}]."))
            except InvalidArgument as error:
                violations += error.violations
        if violations:
            raise InvalidArgument(violations)
        outcomes = await resumes.resume_many(self.runtime, parsed)
        return engine_pb2.ResumeInstancesResponse(
            results=[engine_pb2.ResumeInstanceResponse(applied=o.applied, reason=o.reason) for o in outcomes]
        )

    async def RouteEvent(
        self, request: engine_pb2.RouteEventRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.RouteEventResponse:
        """Route one stored event (idempotent per event_id)."""
        return await self._route(request)

    async def RouteEvents(
        self, request: engine_pb2.RouteEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.RouteEventsResponse:
        """Route a batch of stored events in order."""
        _batch_size(len(request.events), "events")
        parsed: list[events.EventToRoute] = []
        violations: list[FieldViolation] = []
        for index, item in enumerate(request.events):
            try:
                parsed.append(_event(item, f"events[{index}]."))
            except InvalidArgument as error:
                violations += error.violations
        if violations:
            raise InvalidArgument(violations)
        results = await events.route_events(self.runtime, parsed)
        return engine_pb2.RouteEventsResponse(results=[_route_response(r) for r in results])

    async def RouteEachEvent(
        self, request: engine_pb2.RouteEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.RouteEachEventResponse:
        """Several RouteEvent calls in one, each answered on its own (its error included), in request order; they
        share transactions as concurrent RouteEvent calls do."""
        _batch_size(len(request.events), "events")
        calls = [self._route(item) for item in request.events]
        results = await _each(calls, "RouteEachEvent", engine_pb2.RouteEventResult, "routed")
        return engine_pb2.RouteEachEventResponse(results=results)

    async def _route(self, request: engine_pb2.RouteEventRequest) -> engine_pb2.RouteEventResponse:
        return _route_response(await self.grouped.routes(_event(request)))

    async def CancelInstance(
        self, request: engine_pb2.CancelInstanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.CancelInstanceResponse:
        """Exit a live instance; a finished one is FAILED_PRECONDITION INSTANCE_FINISHED."""
        tenant_id = parse_id(request.tenant_id, "tenant_id")
        instance_id = parse_id(request.instance_id, "instance_id")
        instance = await lifecycle.cancel_instance(self.runtime, tenant_id, instance_id, request.reason)
        return engine_pb2.CancelInstanceResponse(instance=instance_to_proto(instance))

    async def PauseFlowInstances(
        self, request: engine_pb2.PauseFlowInstancesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.PauseFlowInstancesResponse:
        """Hold the flow's waiting instances."""
        tenant_id = parse_id(request.tenant_id, "tenant_id")
        flow_id = parse_id(request.flow_id, "flow_id")
        return engine_pb2.PauseFlowInstancesResponse(
            paused=await lifecycle.pause_flow_instances(self.runtime, tenant_id, flow_id)
        )

    async def ResumeFlowInstances(
        self, request: engine_pb2.ResumeFlowInstancesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.ResumeFlowInstancesResponse:
        """Release the flow's paused instances and apply the resumes held meanwhile."""
        tenant_id = parse_id(request.tenant_id, "tenant_id")
        flow_id = parse_id(request.flow_id, "flow_id")
        result = await lifecycle.resume_flow_instances(self.runtime, tenant_id, flow_id)
        return engine_pb2.ResumeFlowInstancesResponse(resumed=result.resumed, applied=result.applied)

    async def ExitFlowInstances(
        self, request: engine_pb2.ExitFlowInstancesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.ExitFlowInstancesResponse:
        """Exit every live instance of the flow."""
        tenant_id = parse_id(request.tenant_id, "tenant_id")
        flow_id = parse_id(request.flow_id, "flow_id")
        exited = await lifecycle.exit_flow_instances(self.runtime, tenant_id, flow_id, request.reason)
        return engine_pb2.ExitFlowInstancesResponse(exited=exited)

    async def MigrateInstances(
        self, request: engine_pb2.MigrateInstancesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> engine_pb2.MigrateInstancesResponse:
        """Move live instances to a version (MIGRATE_ALL) or leave them (NEW_ENTRIES_ONLY)."""
        tenant_id = parse_id(request.tenant_id, "tenant_id")
        flow_id = parse_id(request.flow_id, "flow_id")
        strategy = _STRATEGY.get(request.strategy)
        if strategy is None:
            raise InvalidArgument.single("strategy", "must be NEW_ENTRIES_ONLY or MIGRATE_ALL")
        if request.to_version_number < 1:
            raise InvalidArgument.single("to_version_number", "must be a version number (>= 1)")
        return await migration.migrate_instances_once(
            self.runtime,
            tenant_id,
            flow_id,
            from_version=request.from_version_number,
            to_version=request.to_version_number,
            strategy=strategy,
            replay=Replay(
                "kalcifer.engine.v1.EngineService/MigrateInstances", request, engine_pb2.MigrateInstancesResponse
            ),
            answer=_migration_response,
        )
