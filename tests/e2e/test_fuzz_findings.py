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
    instance_pb2,
    instance_pb2_grpc,
    tenant_pb2,
    tenant_pb2_grpc,
    trigger_pb2,
    trigger_pb2_grpc,
)
from kalcifer_common.structs import MAX_JSON_NESTING, dict_to_struct, struct_to_dict

from tests.support.fingerprints import DatabaseFingerprints, changed_tables
from tests.support.payloads import nested
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


def test_payloads_nested_past_the_limit_are_refused_and_the_limit_travels_everywhere(
    suite: Suite, channel: grpc.Channel, tenant: Tenant
) -> None:
    """Event data nested 33 deep was stored by the API and then made the engine refuse the whole RouteEachEvent
    call it travelled in (protobuf decoders stop at 100 message levels, a Struct level takes three): the event was
    never routed, and every IngestEvent sharing that call was answered INVALID_ARGUMENT. Payloads now nest at most
    20 deep: past it they are refused before anything is stored; at it they are routed, started and read back."""
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    events = event_pb2_grpc.EventServiceStub(channel)
    triggers = trigger_pb2_grpc.TriggerServiceStub(channel)
    customers = customer_pb2_grpc.CustomerServiceStub(channel)
    instances = instance_pb2_grpc.InstanceServiceStub(channel)
    auth = tenant.auth
    graph = flow_pb2.FlowGraph(
        nodes=[
            flow_pb2.GraphNode(id="entry", type="event_entry", config=dict_to_struct({"event_type": "deep"})),
            flow_pb2.GraphNode(id="done", type="exit", config=dict_to_struct({})),
        ],
        edges=[flow_pb2.GraphEdge(id="e1", source="entry", target="done")],
    )
    flow = flows.CreateFlow(flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="deep"), graph=graph), metadata=auth)
    flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=flow.id), metadata=auth)

    def ingest(participant: str, data: dict[str, Any]) -> event_pb2.IngestEventRequest:
        return event_pb2.IngestEventRequest(participant_id=participant, event_type="deep", data=dict_to_struct(data))

    def refuse(deep: dict[str, Any]) -> None:
        assert set(_invalid(lambda: events.IngestEvent(ingest("refused", deep), metadata=auth))) == {"data"}
        batch = event_pb2.IngestEventsRequest(events=[ingest("refused", {}), ingest("refused", deep)])
        assert set(_invalid(lambda: events.IngestEvents(batch, metadata=auth))) == {"events[1].data"}
        start = trigger_pb2.TriggerFlowRequest(flow_id=flow.id, participant_id="p", context=dict_to_struct(deep))
        assert set(_invalid(lambda: triggers.TriggerFlow(start, metadata=auth))) == {"context"}
        upsert = customer_pb2.UpsertCustomerRequest(
            customer=customer_pb2.Customer(external_id="deep", attributes=dict_to_struct(deep))
        )
        assert set(_invalid(lambda: customers.UpsertCustomer(upsert, metadata=auth))) == {"attributes"}

    fingerprints = DatabaseFingerprints(suite.database_url)
    try:
        before = fingerprints.settled()
        for levels, arrays in ((21, False), (21, True), (33, False)):
            refuse(nested(levels, arrays=arrays))
        assert changed_tables(before, fingerprints.take()) == {}
    finally:
        fingerprints.close()

    # At the limit, and sent together so that they share RouteEachEvent calls: each is routed and starts its run.
    at_limit = nested(MAX_JSON_NESTING)
    pending = [events.IngestEvent.future(ingest(f"deep-{n}", at_limit), metadata=auth) for n in range(16)]
    assert [(answer.result().started, answer.result().deduplicated) for answer in pending] == [(1, False)] * 16
    listed = instances.ListInstances(
        instance_pb2.ListInstancesRequest(flow_id=flow.id, participant_id="deep-0"), metadata=auth
    ).instances
    assert len(listed) == 1
    assert struct_to_dict(listed[0].context)["event"] == at_limit
