"""Tenant isolation of FlowService and NodeTypeService: tenant B, with its own valid key, walks every RPC
against tenant A's resources and gets NOT_FOUND or an empty answer every time, and A's resources are unchanged."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from kalcifer.v1 import flow_pb2, flow_pb2_grpc, node_type_pb2, node_type_pb2_grpc
from kalcifer_common.structs import dict_to_struct

from tests.support.processes import Suite
from tests.support.rpc import code_of
from tests.support.tenants import new_tenant

pytestmark = pytest.mark.e2e

NOT_FOUND = grpc.StatusCode.NOT_FOUND


def _graph(webhook_type: str | None = None) -> flow_pb2.FlowGraph:
    nodes = [
        flow_pb2.GraphNode(id="signup", type="event_entry", config=dict_to_struct({"event_type": "signup"})),
        flow_pb2.GraphNode(id="tag", type="add_tag", config=dict_to_struct({"tag": "new"})),
    ]
    edges = [flow_pb2.GraphEdge(source="signup", target="tag")]
    if webhook_type:
        nodes.append(flow_pb2.GraphNode(id="hook", type=webhook_type))
        edges.append(flow_pb2.GraphEdge(source="tag", target="hook"))
    return flow_pb2.FlowGraph(nodes=nodes, edges=edges)


def _node_type(key: str, url: str) -> node_type_pb2.NodeType:
    return node_type_pb2.NodeType(
        key=key,
        category=node_type_pb2.NODE_CATEGORY_ACTION,
        config_schema=dict_to_struct({"type": "object"}),
        endpoint_url=url,
    )


def test_tenant_b_sees_and_touches_nothing_of_tenant_a(suite: Suite, channel: grpc.Channel) -> None:
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    node_types = node_type_pb2_grpc.NodeTypeServiceStub(channel)
    a, b = new_tenant(suite, "isolation-a").auth, new_tenant(suite, "isolation-b").auth

    node_types.RegisterNodeType(
        node_type_pb2.RegisterNodeTypeRequest(node_type=_node_type("a_hook", "https://a.example.com/hook")), metadata=a
    )
    active = flows.CreateFlow(
        flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="a-active"), graph=_graph("a_hook")), metadata=a
    )
    active = flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=active.id), metadata=a)
    flows.CreateFlowVersion(flow_pb2.CreateFlowVersionRequest(flow_id=active.id, graph=_graph()), metadata=a)
    paused = flows.CreateFlow(
        flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="a-paused"), graph=_graph()), metadata=a
    )
    flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=paused.id), metadata=a)
    paused = flows.PauseFlow(flow_pb2.PauseFlowRequest(id=paused.id), metadata=a)
    draft = flows.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="a-draft"), graph=_graph()), metadata=a)
    a_flows = {f.id: f for f in flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=a).flows}

    walked: set[str] = set()

    def refused(method: str, call: Callable[[], Any], code: grpc.StatusCode = NOT_FOUND) -> None:
        walked.add(method)
        answered = code_of(call)
        assert answered == code, f"{method} answered tenant B with {answered}, expected {code}"

    def update() -> Any:
        return flows.UpdateFlow(
            flow_pb2.UpdateFlowRequest(
                flow=flow_pb2.Flow(id=draft.id, name="stolen", etag=draft.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=b,
        )

    refused("GetFlow", lambda: flows.GetFlow(flow_pb2.GetFlowRequest(id=active.id), metadata=b))
    refused("UpdateFlow", update)
    refused("DeleteFlow", lambda: flows.DeleteFlow(flow_pb2.DeleteFlowRequest(id=draft.id), metadata=b))
    refused(
        "CreateFlowVersion",
        lambda: flows.CreateFlowVersion(
            flow_pb2.CreateFlowVersionRequest(flow_id=draft.id, graph=_graph()), metadata=b
        ),
    )
    refused(
        "GetFlowVersion",
        lambda: flows.GetFlowVersion(flow_pb2.GetFlowVersionRequest(flow_id=active.id, version_number=1), metadata=b),
    )
    refused(
        "ListFlowVersions",
        lambda: flows.ListFlowVersions(flow_pb2.ListFlowVersionsRequest(flow_id=active.id), metadata=b),
    )
    refused("ActivateFlow", lambda: flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=draft.id), metadata=b))
    refused("PauseFlow", lambda: flows.PauseFlow(flow_pb2.PauseFlowRequest(id=active.id), metadata=b))
    refused("ResumeFlow", lambda: flows.ResumeFlow(flow_pb2.ResumeFlowRequest(id=paused.id), metadata=b))
    refused("ArchiveFlow", lambda: flows.ArchiveFlow(flow_pb2.ArchiveFlowRequest(id=active.id), metadata=b))
    refused(
        "MigrateFlowVersion",
        lambda: flows.MigrateFlowVersion(
            flow_pb2.MigrateFlowVersionRequest(
                flow_id=active.id, version_number=2, strategy=flow_pb2.MIGRATION_STRATEGY_NEW_ENTRIES_ONLY
            ),
            metadata=b,
        ),
    )
    refused(
        "RollbackFlowVersion",
        lambda: flows.RollbackFlowVersion(
            flow_pb2.RollbackFlowVersionRequest(flow_id=active.id, version_number=1), metadata=b
        ),
    )
    refused(
        "GetMigrationStatus",
        lambda: flows.GetMigrationStatus(flow_pb2.GetMigrationStatusRequest(flow_id=active.id), metadata=b),
    )

    # Lists and registries: B's answers hold nothing of A's.
    walked.add("ListFlows")
    assert list(flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=b).flows) == []
    walked.add("ValidateFlowGraph")
    checked = flows.ValidateFlowGraph(flow_pb2.ValidateFlowGraphRequest(graph=_graph("a_hook")), metadata=b)
    assert [(v.reason, v.node_id) for v in checked.violations] == [("UNKNOWN_NODE_TYPE", "hook")]
    walked.add("CreateFlow")
    refused(
        "CreateFlow",
        lambda: flows.CreateFlow(
            flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="b"), graph=_graph("a_hook")), metadata=b
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    b_flow = flows.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="b-own")), metadata=b)
    assert b_flow.id not in {f.id for f in flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=a).flows}

    walked.add("ListNodeTypes")
    b_types = node_types.ListNodeTypes(node_type_pb2.ListNodeTypesRequest(), metadata=b).node_types
    assert "a_hook" not in {t.key for t in b_types}
    refused(
        "DeleteNodeType",
        lambda: node_types.DeleteNodeType(node_type_pb2.DeleteNodeTypeRequest(key="a_hook"), metadata=b),
    )
    walked.add("RegisterNodeType")
    node_types.RegisterNodeType(
        node_type_pb2.RegisterNodeTypeRequest(node_type=_node_type("a_hook", "https://b.example.com/other")), metadata=b
    )
    a_types = {t.key: t for t in node_types.ListNodeTypes(node_type_pb2.ListNodeTypesRequest(), metadata=a).node_types}
    assert a_types["a_hook"].endpoint_url == "https://a.example.com/hook", "B's same key is B's own type"

    every_rpc = {m.name for m in flow_pb2.DESCRIPTOR.services_by_name["FlowService"].methods} | {
        m.name for m in node_type_pb2.DESCRIPTOR.services_by_name["NodeTypeService"].methods
    }
    assert walked == every_rpc

    # Nothing of A's changed.
    after = {f.id: f for f in flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=a).flows}
    assert after == a_flows
    versions = flows.ListFlowVersions(flow_pb2.ListFlowVersionsRequest(flow_id=active.id), metadata=a).versions
    assert [v.version_number for v in versions] == [2, 1]
    assert uuid.UUID(active.id)
