"""The suite as processes: health, reflection through the real grpcurl, auth and TenantService end to end."""

from __future__ import annotations

import functools
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from kalcifer.v1 import flow_pb2, flow_pb2_grpc, tenant_pb2, tenant_pb2_grpc

from tests.support.eventually import eventually_sync
from tests.support.grpcurl import grpcurl
from tests.support.processes import Suite, health_status
from tests.support.rpc import bearer, code_of, field_violations, reason_of, rpc_error

pytestmark = pytest.mark.e2e

PUBLIC_SERVICES = {
    "kalcifer.v1.TenantService",
    "kalcifer.v1.FlowService",
    "kalcifer.v1.JourneyService",
    "kalcifer.v1.CustomerService",
    "kalcifer.v1.TriggerService",
    "kalcifer.v1.EventService",
    "kalcifer.v1.InstanceService",
    "kalcifer.v1.NodeTypeService",
    "kalcifer.v1.AnalyticsService",
}


@pytest.fixture(scope="module")
def tenants(channel: grpc.Channel) -> tenant_pb2_grpc.TenantServiceStub:
    return tenant_pb2_grpc.TenantServiceStub(channel)


@pytest.fixture(scope="module")
def flows(channel: grpc.Channel) -> flow_pb2_grpc.FlowServiceStub:
    return flow_pb2_grpc.FlowServiceStub(channel)


def test_every_service_reports_serving_per_service(suite: Suite) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health_status(suite.address("api"), "kalcifer.v1.FlowService") == serving
    assert health_status(suite.address("engine"), "kalcifer.engine.v1.EngineService") == serving
    assert health_status(suite.address("scheduler"), "kalcifer.scheduler.v1.SchedulerService") == serving
    assert health_status(suite.address("api"), "no.such.Service") is None


def test_grpcurl_lists_every_public_service(suite: Suite) -> None:
    result = grpcurl(suite.address("api"), "list")
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    assert listed >= PUBLIC_SERVICES | {"grpc.health.v1.Health"}, PUBLIC_SERVICES - listed


def test_grpcurl_lists_internal_services(suite: Suite) -> None:
    engine = grpcurl(suite.address("engine"), "list")
    scheduler = grpcurl(suite.address("scheduler"), "list")
    assert "kalcifer.engine.v1.EngineService" in engine.stdout.split(), engine.stderr
    assert "kalcifer.scheduler.v1.SchedulerService" in scheduler.stdout.split(), scheduler.stderr


def test_grpcurl_creates_a_tenant_with_the_admin_token(suite: Suite) -> None:
    result = grpcurl(
        suite.address("api"), "kalcifer.v1.TenantService/CreateTenant", data={"name": "acme"}, token=suite.admin_token
    )
    assert result.returncode == 0, result.stderr
    body = result.json()
    assert body["tenant"]["name"] == "acme"
    assert body["raw_key"].startswith("kal_")
    assert body["api_key"]["key_prefix"] == body["raw_key"][:12]


def _all_tenants(tenants: tenant_pb2_grpc.TenantServiceStub, admin: tuple[tuple[str, str]]) -> list[tenant_pb2.Tenant]:
    """Every tenant ListTenants answers, page after page."""
    listed: list[tenant_pb2.Tenant] = []
    token = ""
    while True:
        page = tenants.ListTenants(tenant_pb2.ListTenantsRequest(page_size=100, page_token=token), metadata=admin)
        listed.extend(page.tenants)
        if not (token := page.next_page_token):
            return listed


def test_create_tenant_and_api_key_with_a_request_id_make_one_each(
    suite: Suite, tenants: tenant_pb2_grpc.TenantServiceStub
) -> None:
    admin = bearer(suite.admin_token)
    name = f"once-{uuid.uuid4().hex[:8]}"
    request = tenant_pb2.CreateTenantRequest(name=name, request_id=f"tenant-{uuid.uuid4()}")
    first = tenants.CreateTenant(request, metadata=admin)
    again = tenants.CreateTenant(request, metadata=admin)
    assert (again.tenant, again.api_key) == (first.tenant, first.api_key), "a retry answers the same tenant and key"
    assert [tenant.id for tenant in _all_tenants(tenants, admin) if tenant.name == name] == [first.tenant.id]
    assert first.raw_key.startswith("kal_")
    assert again.raw_key == "", "the raw key is shown once; the idempotency record does not keep it"
    other = tenant_pb2.CreateTenantRequest(name="different", request_id=request.request_id)
    assert code_of(functools.partial(tenants.CreateTenant, other, metadata=admin)) == (grpc.StatusCode.INVALID_ARGUMENT)

    key_request = tenant_pb2.CreateApiKeyRequest(tenant_id=first.tenant.id, name="ci", request_id="key-once")
    key = tenants.CreateApiKey(key_request, metadata=admin)
    assert tenants.CreateApiKey(key_request, metadata=admin).api_key == key.api_key
    keys = tenants.ListApiKeys(tenant_pb2.ListApiKeysRequest(tenant_id=first.tenant.id), metadata=admin).api_keys
    assert sorted(k.name for k in keys) == ["ci", "default"], "one tenant, one default key, one more key"


def test_tenant_service_refuses_calls_without_the_admin_token(
    suite: Suite, tenants: tenant_pb2_grpc.TenantServiceStub
) -> None:
    request = tenant_pb2.CreateTenantRequest(name="x")
    created = tenants.CreateTenant(request, metadata=bearer(suite.admin_token))
    for metadata in [(), bearer("wrong-token"), bearer(created.raw_key), (("authorization", suite.admin_token),)]:
        error = rpc_error(functools.partial(tenants.CreateTenant, request, metadata=metadata))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        assert reason_of(error) == "UNAUTHENTICATED"


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_tenant_name_is_a_field_violation(
    suite: Suite, tenants: tenant_pb2_grpc.TenantServiceStub, name: str
) -> None:
    error = rpc_error(
        lambda: tenants.CreateTenant(tenant_pb2.CreateTenantRequest(name=name), metadata=bearer(suite.admin_token))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == {"name": "must not be empty"}


def test_malformed_ids_are_field_violations(suite: Suite, tenants: tenant_pb2_grpc.TenantServiceStub) -> None:
    error = rpc_error(
        lambda: tenants.GetTenant(tenant_pb2.GetTenantRequest(id="nope"), metadata=bearer(suite.admin_token))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"id"}


def test_unknown_tenant_is_not_found(suite: Suite, tenants: tenant_pb2_grpc.TenantServiceStub) -> None:
    request = tenant_pb2.GetTenantRequest(id="00000000-0000-4000-8000-000000000000")
    error = rpc_error(lambda: tenants.GetTenant(request, metadata=bearer(suite.admin_token)))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_api_keys_are_created_listed_and_revoked(
    suite: Suite, tenants: tenant_pb2_grpc.TenantServiceStub, flows: flow_pb2_grpc.FlowServiceStub
) -> None:
    admin = bearer(suite.admin_token)
    created = tenants.CreateTenant(tenant_pb2.CreateTenantRequest(name="keys"), metadata=admin)
    second = tenants.CreateApiKey(
        tenant_pb2.CreateApiKeyRequest(tenant_id=created.tenant.id, name="ci"), metadata=admin
    )
    listed = tenants.ListApiKeys(tenant_pb2.ListApiKeysRequest(tenant_id=created.tenant.id), metadata=admin)
    assert [k.id for k in listed.api_keys] == [created.api_key.id, second.api_key.id]
    assert all(not k.revoked for k in listed.api_keys)
    assert second.raw_key not in str(listed)  # raw keys are shown once, never listed

    # Both keys authenticate: the call reaches the (not yet implemented) handler instead of failing auth.
    for raw_key in (created.raw_key, second.raw_key):
        code = code_of(functools.partial(flows.ListFlows, flow_pb2.ListFlowsRequest(), metadata=bearer(raw_key)))
        assert code != grpc.StatusCode.UNAUTHENTICATED

    revoked = tenants.RevokeApiKey(tenant_pb2.RevokeApiKeyRequest(id=second.api_key.id), metadata=admin)
    assert revoked.revoked
    assert revoked.HasField("revoke_time")

    code = eventually_sync(
        lambda: code_of(lambda: flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=bearer(second.raw_key))),
        until=lambda seen: seen == grpc.StatusCode.UNAUTHENTICATED,
        within=10,
        interval=0.2,
        what="the revoked key refused",
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED, "a revoked key still works after 10 s"
    still_good = code_of(lambda: flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=bearer(created.raw_key)))
    assert still_good != grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param((), id="missing"),
        pytest.param((("authorization", "kal_abc"),), id="no-scheme"),
        pytest.param((("authorization", "Basic kal_abc"),), id="wrong-scheme"),
        pytest.param((("authorization", "Bearer"),), id="no-key"),
        pytest.param((("authorization", "Bearer a b"),), id="two-words"),
        pytest.param((("authorization", "Bearer kal_unknown"),), id="unknown"),
    ],
)
def test_bad_api_keys_are_unauthenticated(
    flows: flow_pb2_grpc.FlowServiceStub, metadata: tuple[tuple[str, str]]
) -> None:
    error = rpc_error(lambda: flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=metadata))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(error) == "UNAUTHENTICATED"


def test_scheme_word_is_case_insensitive(suite: Suite, tenants: tenant_pb2_grpc.TenantServiceStub) -> None:
    listed = tenants.ListTenants(
        tenant_pb2.ListTenantsRequest(), metadata=(("authorization", f"bEaReR {suite.admin_token}"),)
    )
    assert len(listed.tenants) >= 1


def test_tenant_pagination_walks_every_tenant_once(suite: Suite, tenants: tenant_pb2_grpc.TenantServiceStub) -> None:
    admin = bearer(suite.admin_token)
    mine = {
        tenants.CreateTenant(tenant_pb2.CreateTenantRequest(name=f"page-{i}"), metadata=admin).tenant.id
        for i in range(5)
    }
    seen: list[str] = []
    token = ""
    for _ in range(100):
        page = tenants.ListTenants(tenant_pb2.ListTenantsRequest(page_size=2, page_token=token), metadata=admin)
        assert len(page.tenants) <= 2
        seen += [t.id for t in page.tenants]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert mine <= set(seen)

    negative = rpc_error(lambda: tenants.ListTenants(tenant_pb2.ListTenantsRequest(page_size=-1), metadata=admin))
    assert negative.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(negative)) == {"page_size"}
    forged = rpc_error(lambda: tenants.ListTenants(tenant_pb2.ListTenantsRequest(page_token="zz"), metadata=admin))
    assert set(field_violations(forged)) == {"page_token"}


def test_internal_services_accept_only_the_internal_token(suite: Suite) -> None:
    with grpc.insecure_channel(suite.address("engine")) as channel:
        engine = engine_pb2_grpc.EngineServiceStub(channel)
        request = engine_pb2.ListNodeTypesRequest()
        for metadata in [(), bearer(suite.admin_token), bearer("nope")]:
            assert code_of(functools.partial(engine.ListNodeTypes, request, metadata=metadata)) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
        authenticated = code_of(lambda: engine.ListNodeTypes(request, metadata=bearer(suite.internal_token)))
        assert authenticated != grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(suite.address("scheduler")) as channel:
        scheduler = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        cancel = scheduler_pb2.CancelResumeRequest(wait_id="w")
        assert code_of(lambda: scheduler.CancelResume(cancel)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: scheduler.CancelResume(cancel, metadata=bearer(suite.internal_token))) != (
            grpc.StatusCode.UNAUTHENTICATED
        )


def test_sigterm_drains_and_exits_cleanly(suite: Suite) -> None:
    assert suite.stop("scheduler") == 0
    suite.start("scheduler")
    assert health_status(suite.address("scheduler")) == health_pb2.HealthCheckResponse.SERVING
