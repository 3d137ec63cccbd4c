"""`kalcifer.v1.NodeTypeService`: the node registry as the calling tenant sees it, kept by the engine.

The engine owns the registry (built-ins in code, tenants' webhook types in the database); this servicer adds the
caller's tenant to every request, so a tenant can neither see nor change another tenant's types.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2
from kalcifer.engine.v1 import engine_pb2
from kalcifer.v1 import node_type_pb2, node_type_pb2_grpc
from kalcifer_common.rpc.auth import current_tenant_id
from kalcifer_common.rpc.errors import map_errors

from kalcifer_api.engine_client import EngineClient
from kalcifer_api.repo.node_types import NodeTypeCalls


@map_errors
class NodeTypeServicer(node_type_pb2_grpc.NodeTypeServiceServicer):
    """ListNodeTypes, RegisterNodeType, DeleteNodeType, delegated to EngineService with the caller's tenant."""

    def __init__(self, engine: EngineClient, calls: NodeTypeCalls) -> None:
        self._engine = engine
        self._calls = calls

    async def ListNodeTypes(
        self, request: node_type_pb2.ListNodeTypesRequest, context: Any
    ) -> node_type_pb2.ListNodeTypesResponse:
        answer = await self._engine.stub.ListNodeTypes(
            engine_pb2.ListNodeTypesRequest(tenant_id=str(current_tenant_id()), category=request.category)
        )
        return node_type_pb2.ListNodeTypesResponse(node_types=answer.node_types)

    async def RegisterNodeType(
        self, request: node_type_pb2.RegisterNodeTypeRequest, context: Any
    ) -> node_type_pb2.NodeType:
        async def call() -> node_type_pb2.NodeType:
            answer: node_type_pb2.NodeType = await self._engine.stub.RegisterNodeType(
                engine_pb2.RegisterNodeTypeRequest(tenant_id=str(current_tenant_id()), node_type=request.node_type)
            )
            return answer

        return await self._calls.once("RegisterNodeType", request, node_type_pb2.NodeType, call)

    async def DeleteNodeType(self, request: node_type_pb2.DeleteNodeTypeRequest, context: Any) -> empty_pb2.Empty:
        async def call() -> empty_pb2.Empty:
            answer: empty_pb2.Empty = await self._engine.stub.DeleteNodeType(
                engine_pb2.DeleteNodeTypeRequest(tenant_id=str(current_tenant_id()), key=request.key)
            )
            return answer

        return await self._calls.once("DeleteNodeType", request, empty_pb2.Empty, call)
