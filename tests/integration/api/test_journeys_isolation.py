"""Tenant isolation of the marketing layer: tenant B's key, walked through every Journey, Customer and Segment
RPC against tenant A's resources, gets NOT_FOUND or an empty list, and A's resources are untouched."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import field_mask_pb2
from kalcifer.v1 import customer_pb2, journey_pb2, segment_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api.marketing import Stubs, flow_status, seed_flow
from tests.support.processes import Suite
from tests.support.rpc import rpc_error
from tests.support.tenants import new_tenant

C, J, S = customer_pb2, journey_pb2, segment_pb2


async def test_tenant_b_cannot_see_or_touch_tenant_a(
    suite: Suite, stubs: Stubs, sessions: async_sessionmaker[AsyncSession]
) -> None:
    a, b = new_tenant(suite, "tenant-a"), new_tenant(suite, "tenant-b")
    rule = S.SegmentRule(field="tags", operator="contains")
    rule.value.string_value = "vip"
    segment = stubs.segments.CreateSegment(
        S.CreateSegmentRequest(segment=S.Segment(name="a-vips", match=S.SEGMENT_MATCH_ALL, rules=[rule])),
        metadata=a.auth,
    )
    customer = stubs.customers.UpsertCustomer(
        C.UpsertCustomerRequest(customer=C.Customer(external_id="alice", email="alice@a.example", tags=["vip"])),
        metadata=a.auth,
    )
    flow_a = await seed_flow(sessions, a.id)
    draft = stubs.journeys.CreateJourney(
        J.CreateJourneyRequest(journey=J.Journey(name="a-draft", flow_id=str(flow_a), audience_segment_id=segment.id)),
        metadata=a.auth,
    )
    launched_flow = await seed_flow(sessions, a.id)
    active = stubs.journeys.CreateJourney(
        J.CreateJourneyRequest(journey=J.Journey(name="a-active", flow_id=str(launched_flow))), metadata=a.auth
    )
    active = stubs.journeys.LaunchJourney(J.LaunchJourneyRequest(id=active.id), metadata=a.auth)
    flow_b = await seed_flow(sessions, b.id)

    name_mask = field_mask_pb2.FieldMask(paths=["name"])
    auth = b.auth
    not_found: list[tuple[str, Callable[[], Any]]] = [
        ("GetJourney", functools.partial(stubs.journeys.GetJourney, J.GetJourneyRequest(id=draft.id), metadata=auth)),
        (
            "UpdateJourney",
            functools.partial(
                stubs.journeys.UpdateJourney,
                J.UpdateJourneyRequest(journey=J.Journey(id=draft.id, name="stolen"), update_mask=name_mask),
                metadata=auth,
            ),
        ),
        (
            "DeleteJourney",
            functools.partial(stubs.journeys.DeleteJourney, J.DeleteJourneyRequest(id=draft.id), metadata=auth),
        ),
        (
            "LaunchJourney",
            functools.partial(stubs.journeys.LaunchJourney, J.LaunchJourneyRequest(id=draft.id), metadata=auth),
        ),
        (
            "PauseJourney",
            functools.partial(stubs.journeys.PauseJourney, J.PauseJourneyRequest(id=active.id), metadata=auth),
        ),
        (
            "ResumeJourney",
            functools.partial(stubs.journeys.ResumeJourney, J.ResumeJourneyRequest(id=active.id), metadata=auth),
        ),
        (
            "ArchiveJourney",
            functools.partial(stubs.journeys.ArchiveJourney, J.ArchiveJourneyRequest(id=active.id), metadata=auth),
        ),
        (
            "CreateJourney on A's flow",
            functools.partial(
                stubs.journeys.CreateJourney,
                J.CreateJourneyRequest(journey=J.Journey(name="x", flow_id=str(flow_a))),
                metadata=auth,
            ),
        ),
        (
            "CreateJourney with A's segment",
            functools.partial(
                stubs.journeys.CreateJourney,
                J.CreateJourneyRequest(
                    journey=J.Journey(name="x", flow_id=str(flow_b), audience_segment_id=segment.id)
                ),
                metadata=auth,
            ),
        ),
        (
            "GetCustomer",
            functools.partial(stubs.customers.GetCustomer, C.GetCustomerRequest(external_id="alice"), metadata=auth),
        ),
        (
            "AddCustomerTags",
            functools.partial(
                stubs.customers.AddCustomerTags,
                C.AddCustomerTagsRequest(external_id="alice", tags=["stolen"]),
                metadata=auth,
            ),
        ),
        (
            "RemoveCustomerTags",
            functools.partial(
                stubs.customers.RemoveCustomerTags,
                C.RemoveCustomerTagsRequest(external_id="alice", tags=["vip"]),
                metadata=auth,
            ),
        ),
        (
            "SetCustomerPreferences",
            functools.partial(
                stubs.customers.SetCustomerPreferences,
                C.SetCustomerPreferencesRequest(external_id="alice", channels={"email": False}),
                metadata=auth,
            ),
        ),
        (
            "DeleteCustomer",
            functools.partial(
                stubs.customers.DeleteCustomer, C.DeleteCustomerRequest(external_id="alice"), metadata=auth
            ),
        ),
        ("GetSegment", functools.partial(stubs.segments.GetSegment, S.GetSegmentRequest(id=segment.id), metadata=auth)),
        (
            "UpdateSegment",
            functools.partial(
                stubs.segments.UpdateSegment,
                S.UpdateSegmentRequest(segment=S.Segment(id=segment.id, name="stolen"), update_mask=name_mask),
                metadata=auth,
            ),
        ),
        (
            "DeleteSegment",
            functools.partial(stubs.segments.DeleteSegment, S.DeleteSegmentRequest(id=segment.id), metadata=auth),
        ),
    ]
    for name, call in not_found:
        assert rpc_error(call).code() == grpc.StatusCode.NOT_FOUND, name

    assert not stubs.journeys.ListJourneys(J.ListJourneysRequest(), metadata=auth).journeys
    assert not stubs.customers.ListCustomers(C.ListCustomersRequest(), metadata=auth).customers
    assert not stubs.customers.ListCustomers(C.ListCustomersRequest(tag="vip"), metadata=auth).customers
    assert not stubs.segments.ListSegments(S.ListSegmentsRequest(), metadata=auth).segments

    # B upserting the same external id makes B's own profile; A's stays as it was.
    mine = stubs.customers.UpsertCustomer(
        C.UpsertCustomerRequest(customer=C.Customer(external_id="alice", email="bob@b.example")), metadata=auth
    )
    assert (mine.email, list(mine.tags)) == ("bob@b.example", [])

    assert stubs.journeys.GetJourney(J.GetJourneyRequest(id=draft.id), metadata=a.auth) == draft
    assert stubs.journeys.GetJourney(J.GetJourneyRequest(id=active.id), metadata=a.auth) == active
    assert await flow_status(sessions, launched_flow) == "active"
    assert await flow_status(sessions, flow_a) == "draft"
    assert stubs.customers.GetCustomer(C.GetCustomerRequest(external_id="alice"), metadata=a.auth) == customer
    assert stubs.segments.GetSegment(S.GetSegmentRequest(id=segment.id), metadata=a.auth) == segment
    assert [j.id for j in stubs.journeys.ListJourneys(J.ListJourneysRequest(), metadata=a.auth).journeys] == [
        active.id,
        draft.id,
    ]


def test_missing_or_bad_keys_are_unauthenticated(suite: Suite, stubs: Stubs) -> None:
    for metadata in [(), (("authorization", "Bearer kal_nope"),)]:
        for call in (
            functools.partial(stubs.journeys.ListJourneys, J.ListJourneysRequest(), metadata=metadata),
            functools.partial(stubs.customers.ListCustomers, C.ListCustomersRequest(), metadata=metadata),
            functools.partial(stubs.segments.ListSegments, S.ListSegmentsRequest(), metadata=metadata),
        ):
            assert rpc_error(call).code() == grpc.StatusCode.UNAUTHENTICATED
