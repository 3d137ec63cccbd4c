"""FlowService: flows, their versions and lifecycle, and graph validation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from google.protobuf import field_mask_pb2
from kalcifer.v1 import common_pb2, flow_pb2, flow_pb2_grpc

from kalcifer_client._pagination import paginate
from kalcifer_client._transport import Transport
from kalcifer_client.graphs import GraphLike, as_graph


class Flows:
    """A tenant's flows. Graphs are `FlowGraph`s or their JSON form (dicts, e.g. loaded from JSON or YAML)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._stub = flow_pb2_grpc.FlowServiceStub(transport.channel)

    async def create(
        self,
        name: str,
        *,
        description: str = "",
        graph: GraphLike | None = None,
        re_entry: common_pb2.ReEntryPolicy.ValueType = common_pb2.RE_ENTRY_POLICY_UNSPECIFIED,
        request_id: str = "",
    ) -> flow_pb2.Flow:
        """A DRAFT flow; with a graph, its version 1 (validated by the server: InvalidArgument lists problems)."""
        request = flow_pb2.CreateFlowRequest(
            flow=flow_pb2.Flow(name=name, description=description, re_entry=re_entry), request_id=request_id
        )
        if graph is not None:
            request.graph.CopyFrom(as_graph(graph))
        return await self._transport.call(self._stub.CreateFlow, request)

    async def get(self, flow_id: str) -> flow_pb2.Flow:
        """One flow."""
        return await self._transport.call(self._stub.GetFlow, flow_pb2.GetFlowRequest(id=flow_id))

    def list(
        self, *, status: flow_pb2.FlowStatus.ValueType = flow_pb2.FLOW_STATUS_UNSPECIFIED, page_size: int = 0
    ) -> AsyncIterator[flow_pb2.Flow]:
        """Every flow of the tenant (of one status when given)."""

        async def page(token: str) -> tuple[Sequence[flow_pb2.Flow], str]:
            request = flow_pb2.ListFlowsRequest(status=status, page_size=page_size, page_token=token)
            response = await self._transport.call(self._stub.ListFlows, request)
            return response.flows, response.next_page_token

        return paginate(page)

    async def update(self, flow: flow_pb2.Flow, fields: Sequence[str], *, request_id: str = "") -> flow_pb2.Flow:
        """Change the named fields (name, description, re_entry) of a DRAFT flow; `flow.etag` guards the change."""
        request = flow_pb2.UpdateFlowRequest(
            flow=flow, update_mask=field_mask_pb2.FieldMask(paths=list(fields)), request_id=request_id
        )
        return await self._transport.call(self._stub.UpdateFlow, request)

    async def delete(self, flow_id: str, *, etag: str = "", request_id: str = "") -> None:
        """Delete a DRAFT flow."""
        request = flow_pb2.DeleteFlowRequest(id=flow_id, etag=etag, request_id=request_id)
        await self._transport.call(self._stub.DeleteFlow, request)

    async def create_version(
        self, flow_id: str, graph: GraphLike, *, changelog: str = "", request_id: str = ""
    ) -> flow_pb2.FlowVersion:
        """A new DRAFT version of the flow (published by `activate`)."""
        request = flow_pb2.CreateFlowVersionRequest(
            flow_id=flow_id, graph=as_graph(graph), changelog=changelog, request_id=request_id
        )
        return await self._transport.call(self._stub.CreateFlowVersion, request)

    async def get_version(self, flow_id: str, version_number: int) -> flow_pb2.FlowVersion:
        """One version of the flow, with its graph."""
        request = flow_pb2.GetFlowVersionRequest(flow_id=flow_id, version_number=version_number)
        return await self._transport.call(self._stub.GetFlowVersion, request)

    def list_versions(self, flow_id: str, *, page_size: int = 0) -> AsyncIterator[flow_pb2.FlowVersion]:
        """Every version of the flow."""

        async def page(token: str) -> tuple[Sequence[flow_pb2.FlowVersion], str]:
            request = flow_pb2.ListFlowVersionsRequest(flow_id=flow_id, page_size=page_size, page_token=token)
            response = await self._transport.call(self._stub.ListFlowVersions, request)
            return response.versions, response.next_page_token

        return paginate(page)

    async def validate(self, graph: GraphLike) -> flow_pb2.ValidateFlowGraphResponse:
        """Every problem of a graph at once (`valid`, `violations`), without storing anything."""
        request = flow_pb2.ValidateFlowGraphRequest(graph=as_graph(graph))
        return await self._transport.call(self._stub.ValidateFlowGraph, request)

    async def activate(self, flow_id: str, *, request_id: str = "") -> flow_pb2.Flow:
        """Publish the newest draft version and make the flow ACTIVE."""
        request = flow_pb2.ActivateFlowRequest(id=flow_id, request_id=request_id)
        return await self._transport.call(self._stub.ActivateFlow, request)

    async def pause(self, flow_id: str, *, request_id: str = "") -> flow_pb2.Flow:
        """Stop new entries; live instances hold where they are."""
        request = flow_pb2.PauseFlowRequest(id=flow_id, request_id=request_id)
        return await self._transport.call(self._stub.PauseFlow, request)

    async def resume(self, flow_id: str, *, request_id: str = "") -> flow_pb2.Flow:
        """Undo `pause`."""
        request = flow_pb2.ResumeFlowRequest(id=flow_id, request_id=request_id)
        return await self._transport.call(self._stub.ResumeFlow, request)

    async def archive(self, flow_id: str, *, request_id: str = "") -> flow_pb2.Flow:
        """End the flow for good; its live instances exit."""
        request = flow_pb2.ArchiveFlowRequest(id=flow_id, request_id=request_id)
        return await self._transport.call(self._stub.ArchiveFlow, request)
