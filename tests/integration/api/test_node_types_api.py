"""NodeTypeService on the real API and engine processes: the registry a tenant sees and its webhook types."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer.v1 import flow_pb2, node_type_pb2, node_type_pb2_grpc
from kalcifer_common.structs import dict_to_struct, struct_to_dict

from tests.support.processes import Suite
from tests.support.rpc import bearer, field_violations, reason_of, rpc_error
from tests.support.tenants import Tenant, new_tenant

_C = node_type_pb2.NodeCategory


@pytest.fixture
def tenant_a(suite: Suite) -> Tenant:
    """A tenant of each test's own (overrides the module's): the tests register the same type keys."""
    return new_tenant(suite, "node-types-a")


@pytest.fixture
def tenant_b(suite: Suite) -> Tenant:
    """The other tenant of each test's own."""
    return new_tenant(suite, "node-types-b")


def _schema(data: dict[str, Any]) -> struct_pb2.Struct:
    return dict_to_struct(data)


def score_lead(**overrides: object) -> node_type_pb2.NodeType:
    """A valid webhook CONDITION type; fields can be overridden."""
    node_type = node_type_pb2.NodeType(
        key="score_lead",
        category=_C.NODE_CATEGORY_CONDITION,
        config_schema=_schema(
            {"type": "object", "properties": {"min": {"type": "integer"}}, "additionalProperties": False}
        ),
        branches=["hot", "cold"],
        description="scores a lead in the CRM",
        endpoint_url="http://127.0.0.1:9/score",
    )
    for name, value in overrides.items():
        if name == "branches":
            del node_type.branches[:]
            node_type.branches.extend(value)  # type: ignore[arg-type]
        else:
            setattr(node_type, name, value)
    return node_type


def _keys(
    stub: node_type_pb2_grpc.NodeTypeServiceStub, tenant: Tenant, category: int = 0
) -> dict[str, node_type_pb2.NodeType]:
    listed = stub.ListNodeTypes(node_type_pb2.ListNodeTypesRequest(category=category), metadata=tenant.auth)  # type: ignore[arg-type]
    return {t.key: t for t in listed.node_types}


def test_list_shows_the_23_builtins_with_schemas_branches_and_resumable(
    node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant
) -> None:
    listed = node_types.ListNodeTypes(node_type_pb2.ListNodeTypesRequest(), metadata=tenant_a.auth).node_types
    assert len(listed) == 23
    assert all(t.builtin and not t.endpoint_url for t in listed)
    categories = [t.category for t in listed]
    assert categories == sorted(categories), "ordered by category, then key"
    by_key = {t.key: t for t in listed}
    assert list(by_key["condition"].branches) == ["true", "false"]
    assert list(by_key["wait_for_event"].branches) == ["event_received", "timed_out"]
    assert list(by_key["ab_split"].branches) == [], "config-dependent branches are listed empty"
    assert by_key["wait"].resumable
    assert not by_key["send_email"].resumable
    assert "template_id" in struct_to_dict(by_key["send_email"].config_schema)["properties"]


def test_list_filters_by_category(node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant) -> None:
    triggers = _keys(node_types, tenant_a, _C.NODE_CATEGORY_TRIGGER)
    assert sorted(triggers) == ["event_entry", "segment_entry", "webhook_entry"]
    assert sorted(_keys(node_types, tenant_a, _C.NODE_CATEGORY_END)) == ["exit", "goal_reached"]


def test_register_shows_the_type_to_its_tenant_only(
    node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    registered = node_types.RegisterNodeType(
        node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead()), metadata=tenant_a.auth
    )
    assert (registered.key, registered.builtin, list(registered.branches)) == ("score_lead", False, ["hot", "cold"])
    assert registered.endpoint_url == "http://127.0.0.1:9/score"
    mine = _keys(node_types, tenant_a)
    assert len(mine) == 24
    assert struct_to_dict(mine["score_lead"].config_schema)["properties"]["min"] == {"type": "integer"}
    assert "score_lead" in _keys(node_types, tenant_a, _C.NODE_CATEGORY_CONDITION)
    assert "score_lead" not in _keys(node_types, tenant_a, _C.NODE_CATEGORY_ACTION)
    assert "score_lead" not in _keys(node_types, tenant_b)


def test_registering_the_same_key_again_updates_it(
    node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant
) -> None:
    node_types.RegisterNodeType(node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead()), metadata=tenant_a.auth)
    node_types.RegisterNodeType(
        node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead(description="v2", branches=["hot", "warm", "cold"])),
        metadata=tenant_a.auth,
    )
    updated = _keys(node_types, tenant_a)["score_lead"]
    assert (updated.description, list(updated.branches)) == ("v2", ["hot", "warm", "cold"])


@pytest.mark.parametrize("key", ["send_email", "condition", "event_entry"])
def test_a_builtin_key_cannot_be_shadowed(
    node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant, key: str
) -> None:
    error = rpc_error(
        lambda: node_types.RegisterNodeType(
            node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead(key=key)), metadata=tenant_a.auth
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(error) == "ALREADY_EXISTS"
    assert _keys(node_types, tenant_a)[key].builtin


def test_a_bad_definition_names_every_field(
    node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant
) -> None:
    bad = score_lead(
        key="Score-Lead",
        category=_C.NODE_CATEGORY_TRIGGER,
        config_schema=_schema({"type": 5}),
        endpoint_url="http://crm.example.com/score",
        description="x" * 1001,
    )
    error = rpc_error(
        lambda: node_types.RegisterNodeType(
            node_type_pb2.RegisterNodeTypeRequest(node_type=bad), metadata=tenant_a.auth
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {
        "node_type.key",
        "node_type.category",
        "node_type.config_schema",
        "node_type.endpoint_url",
        "node_type.description",
    }


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"category": _C.NODE_CATEGORY_UNSPECIFIED}, "node_type.category"),
        ({"category": _C.NODE_CATEGORY_END}, "node_type.category"),
        ({"branches": []}, "node_type.branches"),
        ({"branches": ["hot", "hot"]}, "node_type.branches"),
        ({"endpoint_url": ""}, "node_type.endpoint_url"),
        ({"endpoint_url": "https://[::1"}, "node_type.endpoint_url"),
        ({"endpoint_url": "ftp://crm.example.com/x"}, "node_type.endpoint_url"),
        ({"config_schema": _schema({"$ref": "https://example.com/schema.json"})}, "node_type.config_schema"),
    ],
)
def test_each_bad_field_is_invalid_argument(
    node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant, overrides: dict[str, object], field: str
) -> None:
    error = rpc_error(
        lambda: node_types.RegisterNodeType(
            node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead(**overrides)), metadata=tenant_a.auth
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(error)


def test_https_and_allowlisted_http_endpoints_are_accepted(
    node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant
) -> None:
    for url in ("https://crm.example.com/score", "http://localhost:8080/x"):
        answer = node_types.RegisterNodeType(
            node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead(endpoint_url=url)), metadata=tenant_a.auth
        )
        assert answer.endpoint_url == url


def test_delete_removes_only_the_tenants_own_type(
    node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    node_types.RegisterNodeType(node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead()), metadata=tenant_a.auth)
    foreign = rpc_error(
        lambda: node_types.DeleteNodeType(node_type_pb2.DeleteNodeTypeRequest(key="score_lead"), metadata=tenant_b.auth)
    )
    assert foreign.code() == grpc.StatusCode.NOT_FOUND
    assert "score_lead" in _keys(node_types, tenant_a)
    node_types.DeleteNodeType(node_type_pb2.DeleteNodeTypeRequest(key="score_lead"), metadata=tenant_a.auth)
    assert "score_lead" not in _keys(node_types, tenant_a)
    again = rpc_error(
        lambda: node_types.DeleteNodeType(node_type_pb2.DeleteNodeTypeRequest(key="score_lead"), metadata=tenant_a.auth)
    )
    assert again.code() == grpc.StatusCode.NOT_FOUND


def test_delete_refuses_builtins_and_empty_keys(
    node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant
) -> None:
    for key in ("send_email", ""):
        error = rpc_error(
            lambda key=key: node_types.DeleteNodeType(  # type: ignore[misc]
                node_type_pb2.DeleteNodeTypeRequest(key=key), metadata=tenant_a.auth
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "key" in field_violations(error)


def test_request_id_replays_the_first_answer(
    node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant
) -> None:
    node_types.RegisterNodeType(node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead()), metadata=tenant_a.auth)
    request = node_type_pb2.DeleteNodeTypeRequest(key="score_lead", request_id=str(uuid.uuid4()))
    node_types.DeleteNodeType(request, metadata=tenant_a.auth)
    node_types.DeleteNodeType(request, metadata=tenant_a.auth)  # a retry: same answer, not NOT_FOUND
    register = node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead(), request_id=str(uuid.uuid4()))
    first = node_types.RegisterNodeType(register, metadata=tenant_a.auth)
    assert node_types.RegisterNodeType(register, metadata=tenant_a.auth) == first


def test_engine_validates_graphs_with_the_tenants_types_only(
    suite: Suite, node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    node_types.RegisterNodeType(node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead()), metadata=tenant_a.auth)
    graph = flow_pb2.FlowGraph(
        nodes=[
            flow_pb2.GraphNode(id="in", type="event_entry", config=_schema({"event_type": "lead"})),
            flow_pb2.GraphNode(id="score", type="score_lead", config=_schema({"min": 3})),
            flow_pb2.GraphNode(id="hot", type="add_tag", config=_schema({"tag": "hot"})),
            flow_pb2.GraphNode(id="cold", type="add_tag", config=_schema({"tag": "cold"})),
        ],
        edges=[
            flow_pb2.GraphEdge(source="in", target="score"),
            flow_pb2.GraphEdge(source="score", target="hot", branch="hot"),
            flow_pb2.GraphEdge(source="score", target="cold", branch="cold"),
        ],
    )
    with grpc.insecure_channel(suite.address("engine")) as channel:
        engine = engine_pb2_grpc.EngineServiceStub(channel)
        auth = bearer(suite.internal_token)
        for_a = engine.ValidateGraph(
            engine_pb2.ValidateGraphRequest(graph=graph, tenant_id=str(tenant_a.id)), metadata=auth
        )
        for_b = engine.ValidateGraph(
            engine_pb2.ValidateGraphRequest(graph=graph, tenant_id=str(tenant_b.id)), metadata=auth
        )
        graph.nodes[1].config["min"] = "three"
        bad_config = engine.ValidateGraph(
            engine_pb2.ValidateGraphRequest(graph=graph, tenant_id=str(tenant_a.id)), metadata=auth
        )
        malformed = rpc_error(
            lambda: engine.ValidateGraph(engine_pb2.ValidateGraphRequest(graph=graph, tenant_id="nope"), metadata=auth)
        )
    assert (for_a.valid, list(for_a.violations)) == (True, [])
    assert not for_b.valid
    assert {(v.reason, v.node_id, v.field) for v in for_b.violations} >= {
        ("UNKNOWN_NODE_TYPE", "score", "nodes[1].type")
    }
    assert [(v.reason, v.field) for v in bad_config.violations] == [("INVALID_CONFIG", "nodes[1].config.min")]
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": "object", "properties": {"name": {"type": "string", "pattern": "^(a+)+$"}}}, "nests a quantifier"),
        ({"type": "object", "properties": {"child": {"$ref": "#"}}}, "$ref recurses (# -> #)"),
        ({"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}, "$id": "x"}, "'$id'"),
    ],
    ids=["redos", "recursive", "identifier"],
)
def test_unsafe_schemas_are_refused_at_registration(
    node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant, schema: dict[str, Any], says: str
) -> None:
    error = rpc_error(
        lambda: node_types.RegisterNodeType(
            node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead(config_schema=_schema(schema))),
            metadata=tenant_a.auth,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(error)
    assert list(violations) == ["node_type.config_schema"]
    assert says in violations["node_type.config_schema"]
    assert "score_lead" not in _keys(node_types, tenant_a)


def test_a_tenant_has_at_most_100_node_types(
    node_types: node_type_pb2_grpc.NodeTypeServiceStub, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    for n in range(100):
        node_types.RegisterNodeType(
            node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead(key=f"type_{n}")), metadata=tenant_a.auth
        )
    error = rpc_error(
        lambda: node_types.RegisterNodeType(
            node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead(key="one_too_many")), metadata=tenant_a.auth
        )
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(error) == "NODE_TYPE_QUOTA_EXCEEDED"
    assert "one_too_many" not in _keys(node_types, tenant_a)
    # Updating a type the tenant has is not a new one; another tenant has a quota of its own.
    node_types.RegisterNodeType(
        node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead(key="type_7", description="v2")),
        metadata=tenant_a.auth,
    )
    assert _keys(node_types, tenant_a)["type_7"].description == "v2"
    node_types.RegisterNodeType(
        node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead(key="one_too_many")), metadata=tenant_b.auth
    )
    node_types.DeleteNodeType(node_type_pb2.DeleteNodeTypeRequest(key="type_0"), metadata=tenant_a.auth)
    node_types.RegisterNodeType(
        node_type_pb2.RegisterNodeTypeRequest(node_type=score_lead(key="one_too_many")), metadata=tenant_a.auth
    )
