"""What the public-API fuzzer (`test_fuzz_public_api`) found, one test per bug, each on the smallest request that
showed it: every one was answered INTERNAL (or lost its status on the way back) instead of INVALID_ARGUMENT."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import grpc
import orjson
import pytest
from kalcifer.v1 import (
    customer_pb2,
    customer_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    flow_pb2,
    flow_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
    trigger_pb2,
    trigger_pb2_grpc,
)
from kalcifer_common.structs import dict_to_struct

from tests.support.processes import Suite
from tests.support.rpc import bearer, field_violations, rpc_error
from tests.support.tenants import Tenant, new_tenant

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tenant(suite: Suite) -> Tenant:
    return new_tenant(suite, "fuzz-findings")


def _invalid(call: Callable[[], Any]) -> dict[str, str]:
    """The field violations of a call that must fail INVALID_ARGUMENT."""
    error = rpc_error(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    return field_violations(error)


def test_nul_in_any_string_is_refused_naming_the_field(suite: Suite, channel: grpc.Channel, tenant: Tenant) -> None:
    """PostgreSQL stores U+0000 in neither text nor jsonb: a request_id, a participant id, a tenant name or a
    context key holding it failed the statement (INTERNAL); it is refused at the edge instead, and nothing is
    stored."""
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    customers = customer_pb2_grpc.CustomerServiceStub(channel)
    events = event_pb2_grpc.EventServiceStub(channel)
    triggers = trigger_pb2_grpc.TriggerServiceStub(channel)
    tenants = tenant_pb2_grpc.TenantServiceStub(channel)
    auth = tenant.auth

    create = flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="nul"), request_id="a\x00b")
    assert "request_id" in _invalid(lambda: flows.CreateFlow(create, metadata=auth))
    ingest = event_pb2.IngestEventRequest(participant_id="\x00", event_type="signup")
    assert "participant_id" in _invalid(lambda: events.IngestEvent(ingest, metadata=auth))
    trigger = trigger_pb2.TriggerFlowRequest(
        flow_id="00000000-0000-4000-8000-000000000000", participant_id="alice", context=dict_to_struct({"k\x00": 1})
    )
    assert "context['k\\x00']" in _invalid(lambda: triggers.TriggerFlow(trigger, metadata=auth))
    upsert = customer_pb2.UpsertCustomerRequest(
        customer=customer_pb2.Customer(external_id="nul", attributes=dict_to_struct({"note": "a\x00"}))
    )
    assert "customer.attributes['note']" in _invalid(lambda: customers.UpsertCustomer(upsert, metadata=auth))
    named = tenant_pb2.CreateTenantRequest(name="acme\x00")
    assert "name" in _invalid(lambda: tenants.CreateTenant(named, metadata=bearer(suite.admin_token)))

    assert not flows.ListFlows(flow_pb2.ListFlowsRequest(), metadata=auth).flows
    missing = rpc_error(
        lambda: customers.GetCustomer(customer_pb2.GetCustomerRequest(external_id="nul"), metadata=auth)
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def _tampered(token: str, **inside: object) -> str:
    """An issued page token with its inside changed and its query fingerprint kept (it is no secret)."""
    decoded = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return base64.urlsafe_b64encode(orjson.dumps({**decoded, **inside})).decode().rstrip("=")


def test_a_page_token_with_a_forged_inside_is_refused(suite: Suite, channel: grpc.Channel, tenant: Tenant) -> None:
    """The cursor of a token was parsed without a check in the repositories: a token whose sort key is no time,
    or whose last id is no UUID, failed the query (INTERNAL)."""
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    for name in ("a", "b"):
        flows.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=name)), metadata=tenant.auth)
    token = flows.ListFlows(flow_pb2.ListFlowsRequest(page_size=1), metadata=tenant.auth).next_page_token
    assert token

    def listed_after(forged: str) -> Callable[[], Any]:
        request = flow_pb2.ListFlowsRequest(page_size=1, page_token=forged)
        return lambda: flows.ListFlows(request, metadata=tenant.auth)

    for forged in (_tampered(token, i=70959201501909), _tampered(token, k="\ufdd0"), _tampered(token, k="2026-01-01")):
        assert "page_token" in _invalid(listed_after(forged))

    tenants = tenant_pb2_grpc.TenantServiceStub(channel)
    admin = bearer(suite.admin_token)
    new_tenant(suite, "fuzz-findings-second")  # two tenants at least: a page of one has a next page
    token = tenants.ListTenants(tenant_pb2.ListTenantsRequest(page_size=1), metadata=admin).next_page_token
    forged_tenants = tenant_pb2.ListTenantsRequest(page_token=_tampered(token, k="\ufdd0"))
    assert "page_token" in _invalid(lambda: tenants.ListTenants(forged_tenants, metadata=admin))


def test_an_error_quoting_a_huge_request_still_reaches_the_caller(channel: grpc.Channel, tenant: Tenant) -> None:
    """Violations quote the bad value: a 300 000-character id, or a thousand over-long tags, made a status bigger
    than gRPC clients accept (16 KiB of trailing metadata), and the caller got RESOURCE_EXHAUSTED "Stream
    removed" instead of the violations."""
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    customers = customer_pb2_grpc.CustomerServiceStub(channel)

    huge_id = flow_pb2.GetFlowRequest(id="x" * 300_000)
    assert set(_invalid(lambda: flows.GetFlow(huge_id, metadata=tenant.auth))) == {"id"}
    tags = customer_pb2.AddCustomerTagsRequest(external_id="alice", tags=["\u202e" * 101] * 1000)
    violations = _invalid(lambda: customers.AddCustomerTags(tags, metadata=tenant.auth))
    assert "tags[0]" in violations


def test_a_graph_with_countless_violations_gets_a_bounded_answer(channel: grpc.Channel, tenant: Tenant) -> None:
    """100 nodes with 5000 unknown config keys each: the engine built 500 000 violations, a 50 MB answer it could
    not send (RESOURCE_EXHAUSTED "Sent message larger than max" after seconds of work); now the first 1000 and a
    TOO_LARGE saying more were left out."""
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    config = dict_to_struct({"template_id": "t", **{f"k{index}": True for index in range(5000)}})
    graph = flow_pb2.FlowGraph(
        nodes=[flow_pb2.GraphNode(id=f"n{index}", type="send_email", config=config) for index in range(100)]
    )

    checked = flows.ValidateFlowGraph(flow_pb2.ValidateFlowGraphRequest(graph=graph), metadata=tenant.auth)
    assert not checked.valid
    assert len(checked.violations) == 1001
    assert checked.violations[-1].reason == "TOO_LARGE"
    create = flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="countless"), graph=graph)
    assert _invalid(lambda: flows.CreateFlow(create, metadata=tenant.auth))
