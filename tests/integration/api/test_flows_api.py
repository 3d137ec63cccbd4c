"""FlowService on the real API and engine processes: every RPC's good and bad paths, the lifecycle matrix,
versions, migration and rollback, and request_id replay."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from kalcifer.v1 import (
    common_pb2,
    flow_pb2,
    flow_pb2_grpc,
    node_type_pb2,
    node_type_pb2_grpc,
)
from kalcifer_common.db.models import FlowInstance, Wait
from kalcifer_common.structs import dict_to_struct, struct_to_dict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.processes import Suite
from tests.support.rpc import code_of, detail_of, field_violations, reason_of, rpc_error
from tests.support.tenants import Tenant, new_tenant

_S = flow_pb2.FlowStatus
_V = flow_pb2.FlowVersionStatus
OK = grpc.StatusCode.OK
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def node(node_id: str, node_type: str, **config: Any) -> flow_pb2.GraphNode:
    return flow_pb2.GraphNode(id=node_id, type=node_type, config=dict_to_struct(config))


def edge(source: str, target: str, branch: str = "") -> flow_pb2.GraphEdge:
    return flow_pb2.GraphEdge(source=source, target=target, branch=branch)


def valid_graph(tag: str = "welcomed") -> flow_pb2.FlowGraph:
    """signup -> wait 1h -> condition -> add_tag on both branches."""
    return flow_pb2.FlowGraph(
        nodes=[
            node("signup", "event_entry", event_type="signup"),
            node("pause", "wait", duration="1h"),
            node("vip", "condition", field="customer.attributes.tier", operator="eq", value="gold"),
            node("tag_vip", "add_tag", tag=tag),
            node("tag_other", "add_tag", tag="other"),
        ],
        edges=[
            edge("signup", "pause"),
            edge("pause", "vip"),
            edge("vip", "tag_vip", "true"),
            edge("vip", "tag_other", "false"),
        ],
    )


def broken_graph() -> flow_pb2.FlowGraph:
    """A wait whose duration does not parse, and a node of an unknown type."""
    return flow_pb2.FlowGraph(
        nodes=[
            node("signup", "event_entry", event_type="signup"),
            node("pause", "wait", duration="30"),
            node("mystery", "teleport"),
        ],
        edges=[edge("signup", "pause"), edge("pause", "mystery")],
    )


def create(
    flows: flow_pb2_grpc.FlowServiceStub,
    tenant: Tenant,
    graph: flow_pb2.FlowGraph | None = None,
    name: str = "welcome",
    **flow_fields: Any,
) -> flow_pb2.Flow:
    request = flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=name, **flow_fields))
    if graph is not None:
        request.graph.CopyFrom(graph)
    answer: flow_pb2.Flow = flows.CreateFlow(request, metadata=tenant.auth)
    return answer


def flow_in(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant, status: int) -> flow_pb2.Flow:
    """A flow with a valid draft version 1, brought to `status` through the lifecycle RPCs."""
    flow = create(flows, tenant, valid_graph())
    if status == _S.FLOW_STATUS_DRAFT:
        return flow
    flow = flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=flow.id), metadata=tenant.auth)
    if status == _S.FLOW_STATUS_PAUSED:
        flow = flows.PauseFlow(flow_pb2.PauseFlowRequest(id=flow.id), metadata=tenant.auth)
    elif status == _S.FLOW_STATUS_ARCHIVED:
        flow = flows.ArchiveFlow(flow_pb2.ArchiveFlowRequest(id=flow.id), metadata=tenant.auth)
    assert flow.status == status
    return flow


def get(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant, flow_id: str) -> flow_pb2.Flow:
    answer: flow_pb2.Flow = flows.GetFlow(flow_pb2.GetFlowRequest(id=flow_id), metadata=tenant.auth)
    return answer


def version(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant, flow_id: str, number: int) -> flow_pb2.FlowVersion:
    answer: flow_pb2.FlowVersion = flows.GetFlowVersion(
        flow_pb2.GetFlowVersionRequest(flow_id=flow_id, version_number=number), metadata=tenant.auth
    )
    return answer


def expect(call: Callable[[], Any], code: grpc.StatusCode, reason: str | None = None) -> grpc.RpcError:
    error = rpc_error(call)
    assert error.code() == code, error.details()
    if reason is not None:
        assert reason_of(error) == reason
    return error


# -- CreateFlow / GetFlow ------------------------------------------------------------------------------------------


def test_create_without_graph_is_an_empty_draft(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    flow = create(flows, tenant, name="  plain  ", description="no graph yet")
    assert (flow.name, flow.description, flow.status) == ("plain", "no graph yet", _S.FLOW_STATUS_DRAFT)
    assert (flow.active_version_number, flow.latest_version_number) == (0, 0)
    assert flow.re_entry == common_pb2.RE_ENTRY_POLICY_AFTER_EXIT
    assert flow.etag
    assert flow.create_time.seconds > 0
    uuid.UUID(flow.id)
    assert get(flows, tenant, flow.id) == flow


def test_create_with_graph_makes_draft_version_1(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    flow = create(flows, tenant, valid_graph(), re_entry=common_pb2.RE_ENTRY_POLICY_ALWAYS)
    assert (flow.latest_version_number, flow.re_entry) == (1, common_pb2.RE_ENTRY_POLICY_ALWAYS)
    first = version(flows, tenant, flow.id, 1)
    assert (first.flow_id, first.status, first.HasField("publish_time")) == (
        flow.id,
        _V.FLOW_VERSION_STATUS_DRAFT,
        False,
    )
    assert first.graph == valid_graph()


def test_create_refuses_bad_fields_naming_each(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    error = expect(
        lambda: flows.CreateFlow(
            flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=" ", description="d" * 2001)), metadata=tenant.auth
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(error)) == {"flow.name", "flow.description"}
    error = expect(
        lambda: create(flows, tenant, re_entry=42),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(error)) == {"flow.re_entry"}


def test_create_with_a_broken_graph_names_every_node_and_stores_nothing(
    flows: flow_pb2_grpc.FlowServiceStub, suite: Suite
) -> None:
    fresh = new_tenant(suite, "flows")
    error = expect(lambda: create(flows, fresh, broken_graph()), grpc.StatusCode.INVALID_ARGUMENT)
    violations = field_violations(error)
    assert "nodes[1].config.duration" in violations
    assert "nodes[2].type" in violations
    assert "mystery" in violations["nodes[2].type"]
    listed = flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=fresh.auth)
    assert list(listed.flows) == []


def test_get_bad_ids(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    error = expect(lambda: get(flows, tenant, "not-a-uuid"), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(field_violations(error)) == {"id"}
    error = expect(lambda: get(flows, tenant, str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND)
    assert detail_of(error, error_details_pb2.ResourceInfo).resource_type == "flow"


# -- ListFlows -----------------------------------------------------------------------------------------------------


def test_list_is_newest_first_filtered_and_paginated(flows: flow_pb2_grpc.FlowServiceStub, suite: Suite) -> None:
    fresh = new_tenant(suite, "flows")
    drafts = [create(flows, fresh, name=f"d{i}").id for i in range(3)]
    active = flow_in(flows, fresh, _S.FLOW_STATUS_ACTIVE).id

    def page(status: int, size: int, token: str = "") -> flow_pb2.ListFlowsResponse:
        answer: flow_pb2.ListFlowsResponse = flows.ListFlows(
            flow_pb2.ListFlowsRequest(status=status, page_size=size, page_token=token),  # type: ignore[arg-type]
            metadata=fresh.auth,
        )
        return answer

    everything = page(0, 0)
    assert [f.id for f in everything.flows] == [active, *reversed(drafts)]
    assert everything.next_page_token == ""
    first = page(_S.FLOW_STATUS_DRAFT, 2)
    assert [f.id for f in first.flows] == [drafts[2], drafts[1]]
    second = page(_S.FLOW_STATUS_DRAFT, 2, first.next_page_token)
    assert ([f.id for f in second.flows], second.next_page_token) == ([drafts[0]], "")
    assert [f.id for f in page(_S.FLOW_STATUS_ACTIVE, 10).flows] == [active]
    assert list(page(_S.FLOW_STATUS_ARCHIVED, 10_000).flows) == []
    foreign_token = expect(
        lambda: page(_S.FLOW_STATUS_ACTIVE, 2, first.next_page_token), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert set(field_violations(foreign_token)) == {"page_token"}
    assert set(field_violations(expect(lambda: page(0, -1), grpc.StatusCode.INVALID_ARGUMENT))) == {"page_size"}
    assert set(field_violations(expect(lambda: page(0, 1, "garbage!"), grpc.StatusCode.INVALID_ARGUMENT))) == {
        "page_token"
    }
    assert set(field_violations(expect(lambda: page(17, 1), grpc.StatusCode.INVALID_ARGUMENT))) == {"status"}


# -- UpdateFlow / DeleteFlow ---------------------------------------------------------------------------------------


def test_update_with_mask_and_etag(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    flow = create(flows, tenant, name="before", description="keep me")

    def update(paths: list[str], etag: str, **fields: Any) -> flow_pb2.Flow:
        answer: flow_pb2.Flow = flows.UpdateFlow(
            flow_pb2.UpdateFlowRequest(
                flow=flow_pb2.Flow(id=flow.id, etag=etag, **fields),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            ),
            metadata=tenant.auth,
        )
        return answer

    renamed = update(["name"], flow.etag, name="after", description="ignored")
    assert (renamed.name, renamed.description) == ("after", "keep me")
    assert renamed.etag != flow.etag
    expect(lambda: update(["name"], flow.etag, name="stale"), grpc.StatusCode.ABORTED)
    everything = update([], "", name="all", description="", re_entry=common_pb2.RE_ENTRY_POLICY_NEVER)
    assert (everything.name, everything.description, everything.re_entry) == (
        "all",
        "",
        common_pb2.RE_ENTRY_POLICY_NEVER,
    )
    bad_path = expect(lambda: update(["status"], ""), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(field_violations(bad_path)) == {"update_mask.paths[0]"}
    empty_name = expect(lambda: update(["name"], "", name=""), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(field_violations(empty_name)) == {"flow.name"}
    expect(
        lambda: flows.UpdateFlow(
            flow_pb2.UpdateFlowRequest(flow=flow_pb2.Flow(id=str(uuid.uuid4()), name="x")), metadata=tenant.auth
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert get(flows, tenant, flow.id) == everything


def test_delete_a_draft_with_its_versions(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    flow = create(flows, tenant, valid_graph())
    expect(
        lambda: flows.DeleteFlow(flow_pb2.DeleteFlowRequest(id=flow.id, etag='"999"'), metadata=tenant.auth),
        grpc.StatusCode.ABORTED,
    )
    flows.DeleteFlow(flow_pb2.DeleteFlowRequest(id=flow.id, etag=flow.etag), metadata=tenant.auth)
    expect(lambda: get(flows, tenant, flow.id), grpc.StatusCode.NOT_FOUND)
    expect(lambda: version(flows, tenant, flow.id, 1), grpc.StatusCode.NOT_FOUND)
    expect(
        lambda: flows.DeleteFlow(flow_pb2.DeleteFlowRequest(id=flow.id), metadata=tenant.auth),
        grpc.StatusCode.NOT_FOUND,
    )


# -- the lifecycle matrix ------------------------------------------------------------------------------------------

IT = "INVALID_TRANSITION"
ND = "FLOW_NOT_DRAFT"
_D, _A, _P, _X = _S.FLOW_STATUS_DRAFT, _S.FLOW_STATUS_ACTIVE, _S.FLOW_STATUS_PAUSED, _S.FLOW_STATUS_ARCHIVED

# status -> rpc -> (None = OK, else the FAILED_PRECONDITION reason); and the status an OK leaves the flow in.
MATRIX: dict[int, dict[str, str | None]] = {
    _D: {"Activate": None, "Pause": IT, "Resume": IT, "Archive": IT, "Update": None, "Delete": None, "Version": None},
    _A: {"Activate": IT, "Pause": None, "Resume": IT, "Archive": None, "Update": ND, "Delete": ND, "Version": None},
    _P: {"Activate": IT, "Pause": IT, "Resume": None, "Archive": None, "Update": ND, "Delete": ND, "Version": None},
    _X: {"Activate": IT, "Pause": IT, "Resume": IT, "Archive": IT, "Update": ND, "Delete": ND, "Version": IT},
}
AFTER = {"Activate": _A, "Pause": _P, "Resume": _A, "Archive": _X}


def _transition(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant, rpc: str, flow_id: str) -> Any:
    auth = tenant.auth
    if rpc == "Activate":
        return flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=flow_id), metadata=auth)
    if rpc == "Pause":
        return flows.PauseFlow(flow_pb2.PauseFlowRequest(id=flow_id), metadata=auth)
    if rpc == "Resume":
        return flows.ResumeFlow(flow_pb2.ResumeFlowRequest(id=flow_id), metadata=auth)
    if rpc == "Archive":
        return flows.ArchiveFlow(flow_pb2.ArchiveFlowRequest(id=flow_id), metadata=auth)
    if rpc == "Update":
        return flows.UpdateFlow(
            flow_pb2.UpdateFlowRequest(
                flow=flow_pb2.Flow(id=flow_id, name="renamed"), update_mask=field_mask_pb2.FieldMask(paths=["name"])
            ),
            metadata=auth,
        )
    if rpc == "Delete":
        return flows.DeleteFlow(flow_pb2.DeleteFlowRequest(id=flow_id), metadata=auth)
    return flows.CreateFlowVersion(
        flow_pb2.CreateFlowVersionRequest(flow_id=flow_id, graph=valid_graph("v2")), metadata=auth
    )


@pytest.mark.parametrize(
    ("status", "rpc"), [(status, rpc) for status, row in MATRIX.items() for rpc in row], ids=lambda v: str(v)
)
def test_lifecycle_matrix(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant, status: int, rpc: str) -> None:
    flow = flow_in(flows, tenant, status)
    reason = MATRIX[status][rpc]
    if reason is None:
        _transition(flows, tenant, rpc, flow.id)
        if rpc == "Delete":
            expect(lambda: get(flows, tenant, flow.id), grpc.StatusCode.NOT_FOUND)
        else:
            assert get(flows, tenant, flow.id).status == AFTER.get(rpc, status)
    else:
        expect(lambda: _transition(flows, tenant, rpc, flow.id), FAILED_PRECONDITION, reason)
        assert get(flows, tenant, flow.id).status == status, "a refused move changes nothing"


@pytest.mark.parametrize("rpc", ["Activate", "Pause", "Resume", "Archive", "Update", "Delete", "Version"])
def test_every_transition_of_an_unknown_flow_is_not_found(
    flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant, rpc: str
) -> None:
    expect(lambda: _transition(flows, tenant, rpc, str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND)
    error = expect(lambda: _transition(flows, tenant, rpc, "x"), grpc.StatusCode.INVALID_ARGUMENT)
    assert len(field_violations(error)) == 1


# -- activation --------------------------------------------------------------------------------------------------


def test_activate_publishes_the_newest_draft(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    flow = create(flows, tenant, valid_graph("v1"))
    flows.CreateFlowVersion(
        flow_pb2.CreateFlowVersionRequest(flow_id=flow.id, graph=valid_graph("v2"), changelog="second"),
        metadata=tenant.auth,
    )
    active = flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=flow.id), metadata=tenant.auth)
    assert (active.status, active.active_version_number, active.latest_version_number) == (_A, 2, 2)
    published = version(flows, tenant, flow.id, 2)
    assert (published.status, published.HasField("publish_time"), published.changelog) == (
        _V.FLOW_VERSION_STATUS_ACTIVE,
        True,
        "second",
    )
    assert version(flows, tenant, flow.id, 1).status == _V.FLOW_VERSION_STATUS_DRAFT


def test_activate_without_a_draft_version(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    flow = create(flows, tenant)
    expect(
        lambda: flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=flow.id), metadata=tenant.auth),
        FAILED_PRECONDITION,
        "NO_DRAFT_VERSION",
    )


def test_activate_revalidates_the_draft(
    flows: flow_pb2_grpc.FlowServiceStub, channel: grpc.Channel, suite: Suite
) -> None:
    """A draft that used a webhook type deleted since is no longer valid: it never goes live."""
    fresh = new_tenant(suite, "flows")
    node_types = node_type_pb2_grpc.NodeTypeServiceStub(channel)
    node_types.RegisterNodeType(
        node_type_pb2.RegisterNodeTypeRequest(
            node_type=node_type_pb2.NodeType(
                key="enrich",
                category=node_type_pb2.NODE_CATEGORY_ACTION,
                config_schema=dict_to_struct({"type": "object"}),
                endpoint_url="https://enrich.example.com/run",
            )
        ),
        metadata=fresh.auth,
    )
    graph = flow_pb2.FlowGraph(
        nodes=[node("signup", "event_entry", event_type="signup"), node("enrich", "enrich")],
        edges=[edge("signup", "enrich")],
    )
    flow = create(flows, fresh, graph)
    node_types.DeleteNodeType(node_type_pb2.DeleteNodeTypeRequest(key="enrich"), metadata=fresh.auth)
    error = expect(
        lambda: flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=flow.id), metadata=fresh.auth),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(error)) == {"nodes[1].type"}
    assert get(flows, fresh, flow.id).status == _D


# -- versions ------------------------------------------------------------------------------------------------------


def test_versions_are_numbered_listed_newest_first_and_paginated(
    flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant
) -> None:
    flow = create(flows, tenant, valid_graph("v1"))
    for n in (2, 3):
        created = flows.CreateFlowVersion(
            flow_pb2.CreateFlowVersionRequest(flow_id=flow.id, graph=valid_graph(f"v{n}"), changelog=f"c{n}"),
            metadata=tenant.auth,
        )
        assert (created.version_number, created.status, created.changelog) == (n, _V.FLOW_VERSION_STATUS_DRAFT, f"c{n}")
    assert get(flows, tenant, flow.id).latest_version_number == 3
    first = flows.ListFlowVersions(flow_pb2.ListFlowVersionsRequest(flow_id=flow.id, page_size=2), metadata=tenant.auth)
    assert [v.version_number for v in first.versions] == [3, 2]
    second = flows.ListFlowVersions(
        flow_pb2.ListFlowVersionsRequest(flow_id=flow.id, page_size=2, page_token=first.next_page_token),
        metadata=tenant.auth,
    )
    assert ([v.version_number for v in second.versions], second.next_page_token) == ([1], "")
    assert struct_to_dict(second.versions[0].graph.nodes[3].config) == {"tag": "v1"}
    other = create(flows, tenant)
    expect(
        lambda: flows.ListFlowVersions(
            flow_pb2.ListFlowVersionsRequest(flow_id=other.id, page_token=first.next_page_token), metadata=tenant.auth
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert (
        list(flows.ListFlowVersions(flow_pb2.ListFlowVersionsRequest(flow_id=other.id), metadata=tenant.auth).versions)
        == []
    )


def test_version_bad_input(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    flow = create(flows, tenant, valid_graph())
    assert set(
        field_violations(expect(lambda: version(flows, tenant, flow.id, 0), grpc.StatusCode.INVALID_ARGUMENT))
    ) == {"version_number"}
    expect(lambda: version(flows, tenant, flow.id, 2), grpc.StatusCode.NOT_FOUND)
    expect(lambda: version(flows, tenant, str(uuid.uuid4()), 1), grpc.StatusCode.NOT_FOUND)
    expect(
        lambda: flows.ListFlowVersions(
            flow_pb2.ListFlowVersionsRequest(flow_id=str(uuid.uuid4())), metadata=tenant.auth
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    missing = expect(
        lambda: flows.CreateFlowVersion(flow_pb2.CreateFlowVersionRequest(flow_id=flow.id), metadata=tenant.auth),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(missing)) == {"graph"}
    broken = expect(
        lambda: flows.CreateFlowVersion(
            flow_pb2.CreateFlowVersionRequest(flow_id=flow.id, graph=broken_graph()), metadata=tenant.auth
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "nodes[1].config.duration" in field_violations(broken)
    assert get(flows, tenant, flow.id).latest_version_number == 1, "a refused version is not stored"


def test_validate_flow_graph_answers_violations_not_errors(
    flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant
) -> None:
    good = flows.ValidateFlowGraph(flow_pb2.ValidateFlowGraphRequest(graph=valid_graph()), metadata=tenant.auth)
    assert (good.valid, list(good.violations)) == (True, [])
    bad = flows.ValidateFlowGraph(flow_pb2.ValidateFlowGraphRequest(graph=broken_graph()), metadata=tenant.auth)
    assert not bad.valid
    by_field = {v.field: v for v in bad.violations}
    assert (by_field["nodes[1].config.duration"].node_id, by_field["nodes[1].config.duration"].reason) == (
        "pause",
        "INVALID_CONFIG",
    )
    assert (by_field["nodes[2].type"].node_id, by_field["nodes[2].type"].reason) == ("mystery", "UNKNOWN_NODE_TYPE")
    empty = flows.ValidateFlowGraph(flow_pb2.ValidateFlowGraphRequest(), metadata=tenant.auth)
    assert [v.reason for v in empty.violations] == ["NO_TRIGGER"]


# -- migration and rollback ----------------------------------------------------------------------------------------


def _migrate(
    flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant, flow_id: str, number: int, strategy: int, request_id: str = ""
) -> flow_pb2.MigrateFlowVersionResponse:
    answer: flow_pb2.MigrateFlowVersionResponse = flows.MigrateFlowVersion(
        flow_pb2.MigrateFlowVersionRequest(
            flow_id=flow_id,
            version_number=number,
            strategy=strategy,  # type: ignore[arg-type]
            request_id=request_id,
        ),
        metadata=tenant.auth,
    )
    return answer


def _rollback(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant, flow_id: str, number: int) -> flow_pb2.Flow:
    answer: flow_pb2.Flow = flows.RollbackFlowVersion(
        flow_pb2.RollbackFlowVersionRequest(flow_id=flow_id, version_number=number), metadata=tenant.auth
    )
    return answer


NEW_ONLY = flow_pb2.MIGRATION_STRATEGY_NEW_ENTRIES_ONLY
ALL = flow_pb2.MIGRATION_STRATEGY_MIGRATE_ALL


def _add_version(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant, flow_id: str, tag: str) -> int:
    created = flows.CreateFlowVersion(
        flow_pb2.CreateFlowVersionRequest(flow_id=flow_id, graph=valid_graph(tag)), metadata=tenant.auth
    )
    number: int = created.version_number
    return number


def test_migrate_new_entries_only_then_rollback(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    flow = flow_in(flows, tenant, _A)
    assert _add_version(flows, tenant, flow.id, "v2") == 2
    answer = _migrate(flows, tenant, flow.id, 2, NEW_ONLY)
    assert (answer.migrated, answer.exited, answer.skipped, list(answer.failures)) == (0, 0, 0, [])
    assert get(flows, tenant, flow.id).active_version_number == 2
    statuses = [version(flows, tenant, flow.id, n).status for n in (1, 2)]
    assert statuses == [_V.FLOW_VERSION_STATUS_ARCHIVED, _V.FLOW_VERSION_STATUS_ACTIVE]
    expect(lambda: _migrate(flows, tenant, flow.id, 2, NEW_ONLY), FAILED_PRECONDITION, "SAME_VERSION")
    expect(lambda: _migrate(flows, tenant, flow.id, 1, NEW_ONLY), FAILED_PRECONDITION, "VERSION_NOT_PUBLISHABLE")
    expect(lambda: _migrate(flows, tenant, flow.id, 9, NEW_ONLY), grpc.StatusCode.NOT_FOUND)

    first_publish = version(flows, tenant, flow.id, 1).publish_time
    rolled = _rollback(flows, tenant, flow.id, 1)
    assert (rolled.active_version_number, rolled.status) == (1, _A)
    back = version(flows, tenant, flow.id, 1)
    assert (back.status, back.publish_time) == (_V.FLOW_VERSION_STATUS_ACTIVE, first_publish)
    assert version(flows, tenant, flow.id, 2).status == _V.FLOW_VERSION_STATUS_ARCHIVED
    expect(lambda: _rollback(flows, tenant, flow.id, 1), FAILED_PRECONDITION, "SAME_VERSION")
    _add_version(flows, tenant, flow.id, "v3")
    expect(lambda: _rollback(flows, tenant, flow.id, 3), FAILED_PRECONDITION, "VERSION_NOT_PUBLISHABLE")
    expect(lambda: _rollback(flows, tenant, flow.id, 7), grpc.StatusCode.NOT_FOUND)
    assert _rollback(flows, tenant, flow.id, 2).active_version_number == 2


def test_migrate_and_rollback_need_a_published_flow(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    for status in (_D, _X):
        flow_id = flow_in(flows, tenant, status).id
        expect(lambda: _migrate(flows, tenant, flow_id, 1, NEW_ONLY), FAILED_PRECONDITION, "FLOW_NOT_ACTIVE")  # noqa: B023
        expect(lambda: _rollback(flows, tenant, flow_id, 1), FAILED_PRECONDITION, "FLOW_NOT_ACTIVE")  # noqa: B023
    paused = flow_in(flows, tenant, _P)
    _add_version(flows, tenant, paused.id, "v2")
    _migrate(flows, tenant, paused.id, 2, NEW_ONLY)
    after = get(flows, tenant, paused.id)
    assert (after.status, after.active_version_number) == (_P, 2)


def test_migrate_bad_input(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    flow = flow_in(flows, tenant, _A)
    unspecified = expect(
        lambda: _migrate(flows, tenant, flow.id, 1, flow_pb2.MIGRATION_STRATEGY_UNSPECIFIED),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(unspecified)) == {"strategy"}
    zero = expect(lambda: _migrate(flows, tenant, flow.id, 0, NEW_ONLY), grpc.StatusCode.INVALID_ARGUMENT)
    assert set(field_violations(zero)) == {"version_number"}
    expect(lambda: _migrate(flows, tenant, str(uuid.uuid4()), 1, NEW_ONLY), grpc.StatusCode.NOT_FOUND)


def test_migrate_all_publishes_and_reports_the_engines_counts(
    flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant
) -> None:
    flow = flow_in(flows, tenant, _A)
    _add_version(flows, tenant, flow.id, "v2")
    rid = str(uuid.uuid4())
    answer = _migrate(flows, tenant, flow.id, 2, ALL, rid)
    assert (answer.migrated, answer.exited, list(answer.failures)) == (0, 0, [])
    assert get(flows, tenant, flow.id).active_version_number == 2
    assert _migrate(flows, tenant, flow.id, 2, ALL, rid) == answer, "a retry replays the answer"


# -- instances: migration status, pause, resume, archive -------------------------------------------------------------


async def _instances(
    sessions: async_sessionmaker[AsyncSession], tenant: Tenant, flow_id: str, rows: list[tuple[int, str]]
) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    async with sessions.begin() as session:
        for number, status in rows:
            instance = FlowInstance(
                id=uuid.uuid4(),
                tenant_id=tenant.id,
                flow_id=uuid.UUID(flow_id),
                version_number=number,
                participant_id=str(uuid.uuid4()),
                status=status,
            )
            session.add(instance)
            await session.flush()
            if status == "waiting":
                session.add(
                    Wait(
                        tenant_id=tenant.id,
                        instance_id=instance.id,
                        node_id="pause",
                        kind="event",
                        event_type="never",
                        participant_id=instance.participant_id,
                    )
                )
            ids.append(instance.id)
    return ids


async def test_migration_status_counts_live_instances_per_version(
    flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    flow = flow_in(flows, tenant, _A)
    await _instances(
        sessions,
        tenant,
        flow.id,
        [(1, "running"), (1, "waiting"), (1, "waiting"), (1, "completed"), (3, "paused"), (3, "exited")],
    )
    _add_version(flows, tenant, flow.id, "v2")
    _migrate(flows, tenant, flow.id, 2, NEW_ONLY)
    status = flows.GetMigrationStatus(flow_pb2.GetMigrationStatusRequest(flow_id=flow.id), metadata=tenant.auth)
    assert status.active_version_number == 2
    rows = [(v.version_number, v.running, v.waiting, v.paused, v.total_live) for v in status.versions]
    assert rows == [(1, 1, 2, 0, 3), (2, 0, 0, 0, 0), (3, 0, 0, 1, 1)]
    draft = create(flows, tenant)
    empty = flows.GetMigrationStatus(flow_pb2.GetMigrationStatusRequest(flow_id=draft.id), metadata=tenant.auth)
    assert (empty.active_version_number, list(empty.versions)) == (0, [])
    expect(
        lambda: flows.GetMigrationStatus(
            flow_pb2.GetMigrationStatusRequest(flow_id=str(uuid.uuid4())), metadata=tenant.auth
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_new_entries_only_counts_instances_left_behind(
    flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    flow = flow_in(flows, tenant, _A)
    await _instances(sessions, tenant, flow.id, [(1, "waiting"), (1, "running"), (1, "completed")])
    _add_version(flows, tenant, flow.id, "v2")
    assert _migrate(flows, tenant, flow.id, 2, NEW_ONLY).skipped == 2


async def test_pause_resume_archive_carry_the_instances(
    flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    flow = flow_in(flows, tenant, _A)
    waiting, running, done = await _instances(
        sessions, tenant, flow.id, [(1, "waiting"), (1, "running"), (1, "completed")]
    )

    async def statuses() -> list[str]:
        async with sessions() as session:
            found = dict(
                (row.id, row.status)
                for row in await session.execute(
                    select(FlowInstance.id, FlowInstance.status).where(FlowInstance.id.in_((waiting, running, done)))
                )
            )
        return [found[waiting], found[running], found[done]]

    flows.PauseFlow(flow_pb2.PauseFlowRequest(id=flow.id), metadata=tenant.auth)
    assert await statuses() == ["paused", "running", "completed"]
    flows.ResumeFlow(flow_pb2.ResumeFlowRequest(id=flow.id), metadata=tenant.auth)
    assert await statuses() == ["waiting", "running", "completed"]
    flows.ArchiveFlow(flow_pb2.ArchiveFlowRequest(id=flow.id), metadata=tenant.auth)
    assert await statuses() == ["exited", "exited", "completed"]
    async with sessions() as session:
        exited = await session.get_one(FlowInstance, waiting)
        wait_status = await session.scalar(select(Wait.status).where(Wait.instance_id == waiting))
    assert (exited.exit_reason, exited.end_time is not None, wait_status) == ("flow_archived", True, "cancelled")


# -- request_id ----------------------------------------------------------------------------------------------------


def test_request_id_replays_the_first_answer(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> None:
    rid = str(uuid.uuid4())
    request = flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="once"), graph=valid_graph(), request_id=rid)
    first = flows.CreateFlow(request, metadata=tenant.auth)
    assert flows.CreateFlow(request, metadata=tenant.auth) == first
    reused = expect(
        lambda: flows.CreateFlow(
            flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="other"), request_id=rid), metadata=tenant.auth
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(field_violations(reused)) == {"request_id"}

    version_request = flow_pb2.CreateFlowVersionRequest(
        flow_id=first.id, graph=valid_graph("v2"), request_id=str(uuid.uuid4())
    )
    v2 = flows.CreateFlowVersion(version_request, metadata=tenant.auth)
    assert flows.CreateFlowVersion(version_request, metadata=tenant.auth) == v2
    assert get(flows, tenant, first.id).latest_version_number == 2, "no second version"

    activate = flow_pb2.ActivateFlowRequest(id=first.id, request_id=str(uuid.uuid4()))
    active = flows.ActivateFlow(activate, metadata=tenant.auth)
    assert flows.ActivateFlow(activate, metadata=tenant.auth) == active, "not INVALID_TRANSITION on a retry"
    archive = flow_pb2.ArchiveFlowRequest(id=first.id, request_id=str(uuid.uuid4()))
    archived = flows.ArchiveFlow(archive, metadata=tenant.auth)
    assert flows.ArchiveFlow(archive, metadata=tenant.auth) == archived
    assert code_of(lambda: flows.ArchiveFlow(flow_pb2.ArchiveFlowRequest(id=first.id), metadata=tenant.auth)) == (
        FAILED_PRECONDITION
    )


def _graph_without_pause() -> flow_pb2.FlowGraph:
    return flow_pb2.FlowGraph(
        nodes=[node("signup", "event_entry", event_type="signup"), node("hold", "wait", duration="2h")],
        edges=[edge("signup", "hold")],
    )


async def test_migrate_all_moves_live_instances_and_exits_those_whose_node_is_gone(
    flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Two instances wait at "pause": v2 keeps that node unchanged (they move), v3 drops it (they exit with
    node_removed_in_new_version), and GetMigrationStatus follows them."""
    flow = flow_in(flows, tenant, _A)
    ann, bob = await _instances(sessions, tenant, flow.id, [(1, "waiting"), (1, "waiting")])

    def live() -> list[tuple[int, int]]:
        status = flows.GetMigrationStatus(flow_pb2.GetMigrationStatusRequest(flow_id=flow.id), metadata=tenant.auth)
        return [(v.version_number, v.total_live) for v in status.versions]

    assert live() == [(1, 2)]
    _add_version(flows, tenant, flow.id, "v2")
    moved = _migrate(flows, tenant, flow.id, 2, ALL)
    assert (moved.migrated, moved.exited, list(moved.failures)) == (2, 0, [])
    assert live() == [(2, 2)]
    flows.CreateFlowVersion(
        flow_pb2.CreateFlowVersionRequest(flow_id=flow.id, graph=_graph_without_pause()), metadata=tenant.auth
    )
    dropped = _migrate(flows, tenant, flow.id, 3, ALL)
    assert (dropped.migrated, dropped.exited) == (0, 2)
    assert live() == [(3, 0)]
    async with sessions() as session:
        reasons = set(
            (await session.scalars(select(FlowInstance.exit_reason).where(FlowInstance.id.in_((ann, bob))))).all()
        )
    assert reasons == {"node_removed_in_new_version"}
