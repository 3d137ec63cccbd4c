"""`kalcifer.v1.FlowService`: flows, their versions and their lifecycle, for the calling tenant.

Graphs are validated by the engine (`EngineService.ValidateGraph`, which knows the node registry, the tenant's
webhook types included) just before the transaction that stores or publishes them, never inside it: a slow engine
holds no row lock and no pooled connection. The transaction checks under its lock that what was validated is what
it stores (versions never change; a newer draft makes ActivateFlow ABORTED). Every mutating call runs in one
transaction with `request_id` replay; a replayed call asks the engine nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from google.protobuf import empty_pb2
from kalcifer.engine.v1 import engine_pb2
from kalcifer.v1 import flow_pb2, flow_pb2_grpc
from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.graphs import graph_to_json
from kalcifer_common.ids import parse_id
from kalcifer_common.pagination import PageCursor, decode_page_token, encode_page_token, page_size_of, time_key
from kalcifer_common.rpc.auth import current_tenant_id
from kalcifer_common.rpc.errors import map_errors
from kalcifer_common.timestamps import to_timestamp

from kalcifer_api.domain.flows import (
    MAX_CHANGELOG_LENGTH,
    MAX_DESCRIPTION_LENGTH,
    FlowRecord,
    FlowVersionRecord,
    name_violations,
    require_version_number,
    text_violations,
    update_fields,
)
from kalcifer_api.engine_client import EngineClient
from kalcifer_api.grpc.flows_convert import (
    FLOW_STATUS_FROM_PROTO,
    flow_to_proto,
    re_entry_of,
    status_filter_of,
    version_to_proto,
)
from kalcifer_api.repo.flows import FlowRepository, FlowTransaction
from kalcifer_api.repo.marketing_base import Reply

_STRATEGIES = (flow_pb2.MIGRATION_STRATEGY_NEW_ENTRIES_ONLY, flow_pb2.MIGRATION_STRATEGY_MIGRATE_ALL)


def _raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)


def _flow_reply(method: str, request: Any) -> Reply[FlowRecord, flow_pb2.Flow]:
    return Reply(method=method, request=request, response_type=flow_pb2.Flow, present=flow_to_proto)


@map_errors
class FlowServicer(flow_pb2_grpc.FlowServiceServicer):
    """Every FlowService RPC; tenant scoping is in `FlowRepository`, graph rules in the engine."""

    def __init__(self, flows: FlowRepository, engine: EngineClient) -> None:
        self._flows = flows
        self._engine = engine

    async def _require_valid(self, graph: dict[str, Any]) -> None:
        await self._engine.require_valid_graph(current_tenant_id(), graph)

    async def _carried(self, flow_id: uuid.UUID, answer: flow_pb2.Flow) -> flow_pb2.Flow:
        """After a pause, resume or archive committed (or was replayed): the engine moves the flow's instances."""
        status = FLOW_STATUS_FROM_PROTO[answer.status]
        await self._engine.carry_to_instances(current_tenant_id(), flow_id, status)
        return answer

    # -- flows -----------------------------------------------------------------------------------------------------

    async def CreateFlow(self, request: flow_pb2.CreateFlowRequest, context: Any) -> flow_pb2.Flow:
        flow = request.flow
        _raise_if(
            name_violations(flow.name, "flow.name")
            + text_violations(flow.description, "flow.description", MAX_DESCRIPTION_LENGTH)
        )
        re_entry = re_entry_of(flow.re_entry, "flow.re_entry")
        graph = graph_to_json(request.graph) if request.HasField("graph") else None

        async def validate() -> None:
            if graph is not None:
                await self._require_valid(graph)

        async def work(tx: FlowTransaction) -> FlowRecord:
            return await tx.create_flow(
                name=flow.name.strip(), description=flow.description, re_entry=re_entry, graph=graph
            )

        return await self._flows.write(_flow_reply("CreateFlow", request), work, prepare=validate)

    async def GetFlow(self, request: flow_pb2.GetFlowRequest, context: Any) -> flow_pb2.Flow:
        return flow_to_proto(await self._flows.get_flow(parse_id(request.id, "id")))

    async def ListFlows(self, request: flow_pb2.ListFlowsRequest, context: Any) -> flow_pb2.ListFlowsResponse:
        status = status_filter_of(request.status)
        limit = page_size_of(request.page_size)
        query = {"list": "flows", "status": status or ""}
        rows = await self._flows.list_flows(
            status=status, limit=limit, after=decode_page_token(request.page_token, query=query)
        )
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = encode_page_token(PageCursor(time_key(last.create_time), str(last.id)), query=query)
        return flow_pb2.ListFlowsResponse(flows=[flow_to_proto(f) for f in rows[:limit]], next_page_token=token)

    async def UpdateFlow(self, request: flow_pb2.UpdateFlowRequest, context: Any) -> flow_pb2.Flow:
        flow = request.flow
        flow_id = parse_id(flow.id, "flow.id")
        fields = update_fields(list(request.update_mask.paths))
        values: dict[str, str] = {}
        violations: list[FieldViolation] = []
        if "name" in fields:
            violations += name_violations(flow.name, "flow.name")
            values["name"] = flow.name.strip()
        if "description" in fields:
            violations += text_violations(flow.description, "flow.description", MAX_DESCRIPTION_LENGTH)
            values["description"] = flow.description
        _raise_if(violations)
        if "re_entry" in fields:
            values["re_entry"] = re_entry_of(flow.re_entry, "flow.re_entry")

        async def work(tx: FlowTransaction) -> FlowRecord:
            return await tx.update_flow(flow_id, flow.etag, values)

        return await self._flows.write(_flow_reply("UpdateFlow", request), work)

    async def DeleteFlow(self, request: flow_pb2.DeleteFlowRequest, context: Any) -> empty_pb2.Empty:
        flow_id = parse_id(request.id, "id")

        async def work(tx: FlowTransaction) -> None:
            await tx.delete_flow(flow_id, request.etag)

        reply: Reply[None, empty_pb2.Empty] = Reply(
            method="DeleteFlow", request=request, response_type=empty_pb2.Empty, present=lambda _: empty_pb2.Empty()
        )
        return await self._flows.write(reply, work)

    # -- versions --------------------------------------------------------------------------------------------------

    async def CreateFlowVersion(self, request: flow_pb2.CreateFlowVersionRequest, context: Any) -> flow_pb2.FlowVersion:
        flow_id = parse_id(request.flow_id, "flow_id")
        violations = text_violations(request.changelog, "changelog", MAX_CHANGELOG_LENGTH)
        if not request.HasField("graph"):
            violations.append(FieldViolation("graph", "is required"))
        _raise_if(violations)
        graph = graph_to_json(request.graph)

        async def validate() -> None:
            await self._flows.require_taking_versions(flow_id)
            await self._require_valid(graph)

        async def work(tx: FlowTransaction) -> FlowVersionRecord:
            return await tx.create_version(flow_id, graph=graph, changelog=request.changelog)

        reply: Reply[FlowVersionRecord, flow_pb2.FlowVersion] = Reply(
            method="CreateFlowVersion",
            request=request,
            response_type=flow_pb2.FlowVersion,
            present=version_to_proto,
        )
        return await self._flows.write(reply, work, prepare=validate)

    async def GetFlowVersion(self, request: flow_pb2.GetFlowVersionRequest, context: Any) -> flow_pb2.FlowVersion:
        flow_id = parse_id(request.flow_id, "flow_id")
        number = require_version_number(request.version_number)
        return version_to_proto(await self._flows.get_version(flow_id, number))

    async def ListFlowVersions(
        self, request: flow_pb2.ListFlowVersionsRequest, context: Any
    ) -> flow_pb2.ListFlowVersionsResponse:
        flow_id = parse_id(request.flow_id, "flow_id")
        limit = page_size_of(request.page_size)
        query = {"list": "flow_versions", "flow_id": str(flow_id)}
        cursor = decode_page_token(request.page_token, query=query)
        after = cursor.number() if cursor is not None else None
        rows = await self._flows.list_versions(flow_id, limit=limit, after=after)
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = encode_page_token(PageCursor(str(last.version_number), str(flow_id)), query=query)
        return flow_pb2.ListFlowVersionsResponse(
            versions=[version_to_proto(v) for v in rows[:limit]], next_page_token=token
        )

    async def ValidateFlowGraph(
        self, request: flow_pb2.ValidateFlowGraphRequest, context: Any
    ) -> flow_pb2.ValidateFlowGraphResponse:
        answer = await self._engine.stub.ValidateGraph(
            engine_pb2.ValidateGraphRequest(graph=request.graph, tenant_id=str(current_tenant_id()))
        )
        return flow_pb2.ValidateFlowGraphResponse(valid=answer.valid, violations=answer.violations)

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def ActivateFlow(self, request: flow_pb2.ActivateFlowRequest, context: Any) -> flow_pb2.Flow:
        flow_id = parse_id(request.id, "id")

        validated: list[int] = []

        async def validate() -> None:
            number, graph = await self._flows.graph_to_activate(flow_id)
            await self._require_valid(graph)
            validated.append(number)

        async def work(tx: FlowTransaction) -> FlowRecord:
            return await tx.activate(flow_id, validated_version=validated[-1])

        return await self._flows.write(_flow_reply("ActivateFlow", request), work, prepare=validate)

    async def PauseFlow(self, request: flow_pb2.PauseFlowRequest, context: Any) -> flow_pb2.Flow:
        flow_id = parse_id(request.id, "id")

        async def work(tx: FlowTransaction) -> FlowRecord:
            return await tx.pause(flow_id)

        return await self._carried(flow_id, await self._flows.write(_flow_reply("PauseFlow", request), work))

    async def ResumeFlow(self, request: flow_pb2.ResumeFlowRequest, context: Any) -> flow_pb2.Flow:
        flow_id = parse_id(request.id, "id")

        async def work(tx: FlowTransaction) -> FlowRecord:
            return await tx.resume(flow_id)

        return await self._carried(flow_id, await self._flows.write(_flow_reply("ResumeFlow", request), work))

    async def ArchiveFlow(self, request: flow_pb2.ArchiveFlowRequest, context: Any) -> flow_pb2.Flow:
        flow_id = parse_id(request.id, "id")

        async def work(tx: FlowTransaction) -> FlowRecord:
            return await tx.archive(flow_id)

        return await self._carried(flow_id, await self._flows.write(_flow_reply("ArchiveFlow", request), work))

    # -- versions going live ---------------------------------------------------------------------------------------

    async def MigrateFlowVersion(
        self, request: flow_pb2.MigrateFlowVersionRequest, context: Any
    ) -> flow_pb2.MigrateFlowVersionResponse:
        """Publish the DRAFT version; with MIGRATE_ALL, then ask the engine to move the live instances.

        The engine moves instances in its own transactions and must see the new active version, so the publish
        commits first and the engine is called after it, outside any transaction here, with an idempotency key of
        its own derived from `request_id`: a retry after a failed engine call skips the (already done) publish and
        calls the engine again, which replays its counts if it had finished. The final answer is remembered once
        the engine has given it.
        """
        flow_id = parse_id(request.flow_id, "flow_id")
        number = require_version_number(request.version_number)
        if request.strategy not in _STRATEGIES:
            raise InvalidArgument.single("strategy", "must be MIGRATION_STRATEGY_NEW_ENTRIES_ONLY or _MIGRATE_ALL")
        response_type = flow_pb2.MigrateFlowVersionResponse

        async def validate() -> None:
            await self._require_valid(await self._flows.graph_to_publish(flow_id, number, rollback=False))

        if request.strategy == flow_pb2.MIGRATION_STRATEGY_NEW_ENTRIES_ONLY:

            async def publish_only(tx: FlowTransaction) -> int:
                await tx.publish(flow_id, number, rollback=False)
                return await tx.live_instances_elsewhere(flow_id, number)

            reply: Reply[int, flow_pb2.MigrateFlowVersionResponse] = Reply(
                method="MigrateFlowVersion",
                request=request,
                response_type=response_type,
                present=lambda skipped: response_type(skipped=skipped),
            )
            return await self._flows.write(reply, publish_only, prepare=validate)

        migrated: Reply[engine_pb2.MigrateInstancesResponse, flow_pb2.MigrateFlowVersionResponse] = Reply(
            method="MigrateFlowVersion",
            request=request,
            response_type=response_type,
            present=lambda a: response_type(
                migrated=a.migrated,
                exited=a.exited,
                skipped=a.skipped,
                failures=a.failures,
                in_progress=a.in_progress,
            ),
        )
        replayed = await self._flows.replayed(migrated)
        if replayed is not None:
            return replayed

        async def publish(tx: FlowTransaction) -> FlowRecord:
            return await tx.publish(flow_id, number, rollback=False)

        await self._flows.write(_flow_reply("MigrateFlowVersion.publish", request), publish, prepare=validate)
        tenant_id = current_tenant_id()
        answer: engine_pb2.MigrateInstancesResponse = await self._engine.stub.MigrateInstances(
            engine_pb2.MigrateInstancesRequest(
                tenant_id=str(tenant_id),
                flow_id=str(flow_id),
                to_version_number=number,
                strategy=request.strategy,
                # The engine's own key: fixed length whatever the caller's id (at most 200 characters either way).
                request_id=f"MigrateFlowVersion:{hashlib.sha256(request.request_id.encode()).hexdigest()}"
                if request.request_id
                else "",
            )
        )

        async def remember(tx: FlowTransaction) -> engine_pb2.MigrateInstancesResponse:
            return answer

        return await self._flows.write(migrated, remember)

    async def RollbackFlowVersion(self, request: flow_pb2.RollbackFlowVersionRequest, context: Any) -> flow_pb2.Flow:
        flow_id = parse_id(request.flow_id, "flow_id")
        number = require_version_number(request.version_number)

        async def validate() -> None:
            await self._require_valid(await self._flows.graph_to_publish(flow_id, number, rollback=True))

        async def work(tx: FlowTransaction) -> FlowRecord:
            return await tx.publish(flow_id, number, rollback=True)

        return await self._flows.write(_flow_reply("RollbackFlowVersion", request), work, prepare=validate)

    async def GetMigrationStatus(
        self, request: flow_pb2.GetMigrationStatusRequest, context: Any
    ) -> flow_pb2.GetMigrationStatusResponse:
        flow_id = parse_id(request.flow_id, "flow_id")
        active, counts = await self._flows.migration_status(flow_id)
        jobs = await self._flows.migrations(flow_id)
        return flow_pb2.GetMigrationStatusResponse(
            active_version_number=active,
            migrations=[
                flow_pb2.MigrationProgress(
                    to_version_number=job.to_version_number,
                    from_version_number=job.from_version_number,
                    in_progress=job.status == "running",
                    migrated=job.migrated,
                    exited=job.exited,
                    skipped=job.skipped,
                    failed=job.failed,
                    create_time=to_timestamp(job.create_time),
                    update_time=to_timestamp(job.update_time),
                )
                for job in jobs
            ],
            versions=[
                flow_pb2.VersionInstanceCount(
                    version_number=c.version_number,
                    running=c.running,
                    waiting=c.waiting,
                    paused=c.paused,
                    total_live=c.total_live,
                )
                for c in counts
            ],
        )
