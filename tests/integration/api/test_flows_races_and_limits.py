"""FlowService under concurrent calls on one flow, at the graph size limits, and with a journey on a draft."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from kalcifer.v1 import flow_pb2, flow_pb2_grpc
from kalcifer_common.db.models import Journey
from kalcifer_common.structs import dict_to_struct
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.rpc import field_violations, reason_of, rpc_error
from tests.support.tenants import Tenant

CONCURRENT = 6


def graph(extra_nodes: int = 0, config: dict[str, Any] | None = None) -> flow_pb2.FlowGraph:
    nodes = [flow_pb2.GraphNode(id="in", type="event_entry", config=dict_to_struct({"event_type": "signup"}))]
    edges = []
    for i in range(extra_nodes):
        nodes.append(flow_pb2.GraphNode(id=f"t{i}", type="add_tag", config=dict_to_struct(config or {"tag": "x"})))
        edges.append(flow_pb2.GraphEdge(source="in", target=f"t{i}"))
    return flow_pb2.FlowGraph(nodes=nodes, edges=edges)


def _outcomes(futures: list[Any]) -> list[Any]:
    results: list[Any] = []
    for future in futures:
        try:
            results.append(future.result())
        except grpc.RpcError as error:
            results.append(error)
    return results


def test_concurrent_activations_of_one_flow_serialize(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    auth = tenant.auth
    flow = flows.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="race"), graph=graph(1)), metadata=auth)
    futures = [
        flows.ActivateFlow.future(flow_pb2.ActivateFlowRequest(id=flow.id), metadata=auth) for _ in range(CONCURRENT)
    ]
    outcomes = _outcomes(futures)
    won = [o for o in outcomes if isinstance(o, flow_pb2.Flow)]
    lost = [o for o in outcomes if isinstance(o, grpc.RpcError)]
    assert len(won) == 1
    assert won[0].active_version_number == 1
    assert {(e.code(), reason_of(e)) for e in lost} == {(grpc.StatusCode.FAILED_PRECONDITION, "INVALID_TRANSITION")}


def test_concurrent_versions_get_distinct_numbers(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    auth = tenant.auth
    flow = flows.CreateFlow(
        flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="versions"), graph=graph(1)), metadata=auth
    )
    futures = [
        flows.CreateFlowVersion.future(
            flow_pb2.CreateFlowVersionRequest(flow_id=flow.id, graph=graph(i + 1)), metadata=auth
        )
        for i in range(CONCURRENT)
    ]
    numbers = sorted(v.version_number for v in _outcomes(futures))
    assert numbers == list(range(2, CONCURRENT + 2))


def test_graphs_over_the_limits_are_refused(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    auth = tenant.auth
    too_many = graph(500)  # 501 nodes
    checked = flows.ValidateFlowGraph(flow_pb2.ValidateFlowGraphRequest(graph=too_many), metadata=auth)
    assert [(v.field, v.reason) for v in checked.violations] == [("nodes", "TOO_LARGE")]
    error = rpc_error(
        lambda: flows.CreateFlow(
            flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="big"), graph=too_many), metadata=auth
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"nodes"}
    huge_config = graph(1, {"tag": "x" * 70_000})
    oversized = flows.ValidateFlowGraph(flow_pb2.ValidateFlowGraphRequest(graph=huge_config), metadata=auth)
    assert [v.field for v in oversized.violations] == ["nodes[1].config"]
    at_limit = flows.ValidateFlowGraph(flow_pb2.ValidateFlowGraphRequest(graph=graph(499)), metadata=auth)
    assert at_limit.valid, "500 nodes is within the limit"


async def test_a_draft_with_a_journey_cannot_be_deleted(
    flows: flow_pb2_grpc.FlowServiceStub,
    tenant: Tenant,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant_id, auth = tenant.id, tenant.auth
    flow = flows.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="journeyed")), metadata=auth)
    async with sessions.begin() as session:
        session.add(Journey(tenant_id=tenant_id, flow_id=uuid.UUID(flow.id), name="j"))
    error = rpc_error(lambda: flows.DeleteFlow(flow_pb2.DeleteFlowRequest(id=flow.id), metadata=auth))
    assert (error.code(), reason_of(error)) == (grpc.StatusCode.FAILED_PRECONDITION, "FLOW_IN_USE")
    assert flows.GetFlow(flow_pb2.GetFlowRequest(id=flow.id), metadata=auth).id == flow.id
