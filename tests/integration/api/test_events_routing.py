"""EventService with the engine routing: request_id deduplication (one row, the same event_id), duplicates in a
batch, events resuming waits and starting flows, and no event lost when routing fails."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from kalcifer.v1 import event_pb2, event_pb2_grpc
from kalcifer_common.db.models import Event, Flow, FlowInstance, FlowVersion, Wait
from kalcifer_common.structs import dict_to_struct
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api.support import event_request, stored_events
from tests.support.eventually import eventually
from tests.support.processes import Suite
from tests.support.rpc import field_violations, rpc_error
from tests.support.tenants import Tenant, new_tenant


async def test_a_request_id_reused_for_another_event_is_refused(
    events: event_pb2_grpc.EventServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    participant = f"reuse-{uuid.uuid4()}"
    first = events.IngestEvent(event_request(participant_id=participant, request_id="r-1"), metadata=tenant.auth)
    other = event_request(participant_id=participant, event_type="refund", request_id="r-1")
    error = rpc_error(lambda: events.IngestEvent(other, metadata=tenant.auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"request_id"}
    batch = event_pb2.IngestEventsRequest(events=[event_request(participant_id=participant), other])
    error = rpc_error(lambda: events.IngestEvents(batch, metadata=tenant.auth))
    assert set(field_violations(error)) == {"events[1].request_id"}
    # The refused batch's valid first event was rolled back with it.
    assert await stored_events(sessions, tenant.id, participant) == 1
    assert first.event_id


async def test_a_replayed_request_id_returns_the_same_event_and_stores_one_row(
    events: event_pb2_grpc.EventServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    participant = f"replay-{uuid.uuid4()}"
    request = event_request(participant_id=participant, data=dict_to_struct({"amount": 12}), request_id="purchase-1")
    first = events.IngestEvent(request, metadata=tenant.auth)
    again = events.IngestEvent(request, metadata=tenant.auth)
    assert not first.deduplicated
    assert again.deduplicated
    assert again.event_id == first.event_id
    assert (again.resumed, again.started) == (0, 0)
    # The same request_id inside a later batch maps to the same row too.
    batch = events.IngestEvents(
        event_pb2.IngestEventsRequest(events=[request, event_request(participant_id=participant)]), metadata=tenant.auth
    )
    assert batch.results[0].event_id == first.event_id
    assert batch.results[0].deduplicated
    assert not batch.results[1].deduplicated
    assert await stored_events(sessions, tenant.id, participant) == 2


async def test_duplicates_within_one_batch_store_one_row(
    events: event_pb2_grpc.EventServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    participant = f"dup-batch-{uuid.uuid4()}"
    request = event_request(participant_id=participant, request_id="twice")
    results = events.IngestEvents(
        event_pb2.IngestEventsRequest(events=[request, event_request(participant_id=participant), request]),
        metadata=tenant.auth,
    ).results
    assert [r.deduplicated for r in results] == [False, False, True]
    assert results[2].event_id == results[0].event_id
    assert len({r.event_id for r in results}) == 2
    assert await stored_events(sessions, tenant.id, participant) == 2


async def _routed(sessions: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, participant_id: str) -> bool:
    async with sessions() as session:
        routed_time = await session.scalar(
            select(Event.routed_time).where(Event.tenant_id == tenant_id, Event.participant_id == participant_id)
        )
    return routed_time is not None


async def test_an_event_whose_routing_failed_is_kept_and_routed_on_retry(
    suite: Suite, events: event_pb2_grpc.EventServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    participant = f"lost-{uuid.uuid4()}"
    request = event_request(participant_id=participant, request_id="survives")
    suite.stop("engine")
    try:
        error = rpc_error(lambda: events.IngestEvent(request, metadata=tenant.auth))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        # Stored before routing: the failed call did not lose it, and nothing has routed it yet.
        assert await stored_events(sessions, tenant.id, participant) == 1
        assert not await _routed(sessions, tenant.id, participant)
    finally:
        suite.start("engine")

    def retry() -> event_pb2.IngestEventResponse | grpc.RpcError:
        try:
            return events.IngestEvent(request, metadata=tenant.auth)
        except grpc.RpcError as failure:
            if failure.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return failure  # the API's channel reconnects to the restarted engine with backoff

    retried = await eventually(
        retry,
        until=lambda answer: isinstance(answer, event_pb2.IngestEventResponse),
        within=20,
        interval=0.2,
        what="the retried IngestEvent answered",
    )
    assert isinstance(retried, event_pb2.IngestEventResponse)
    assert await stored_events(sessions, tenant.id, participant) == 1
    assert await _routed(sessions, tenant.id, participant)
    async with sessions() as session:
        stored_id = await session.scalar(
            select(Event.id).where(Event.tenant_id == tenant.id, Event.participant_id == participant)
        )
    assert retried.event_id == str(stored_id)


# The entry node runs without a behaviour of its own, so a started instance completes at once.
SIGNUP: dict[str, Any] = {
    "nodes": [{"id": "entry", "type": "event_entry", "config": {"event_type": "signup"}}],
    "edges": [],
}
WAIT_FOR_PURCHASE: dict[str, Any] = {
    "nodes": [
        {"id": "entry", "type": "webhook_entry", "config": {"webhook_path": "start"}},
        {"id": "wait", "type": "wait_for_event", "config": {"event_type": "purchase", "timeout": "1h"}},
    ],
    "edges": [{"source": "entry", "target": "wait"}],
}


async def _active_flow(sessions: async_sessionmaker[AsyncSession], tenant: Tenant, graph: dict[str, Any]) -> uuid.UUID:
    async with sessions.begin() as session:
        flow = Flow(id=uuid.uuid4(), tenant_id=tenant.id, name="f", status="active", active_version_number=1)
        session.add(flow)
        await session.flush()
        session.add(FlowVersion(tenant_id=tenant.id, flow_id=flow.id, version_number=1, status="active", graph=graph))
    return flow.id


async def _waiting_for_purchase(
    sessions: async_sessionmaker[AsyncSession], tenant: Tenant, flow_id: uuid.UUID, participant: str
) -> uuid.UUID:
    """An instance parked on the flow's wait_for_event, with its pending event wait, as the engine leaves one."""
    instance_id = uuid.uuid4()
    async with sessions.begin() as session:
        session.add(
            FlowInstance(
                id=instance_id,
                tenant_id=tenant.id,
                flow_id=flow_id,
                version_number=1,
                participant_id=participant,
                status="waiting",
                current_nodes=["wait"],
            )
        )
        await session.flush()
        session.add(
            Wait(
                id=uuid.uuid4(),
                tenant_id=tenant.id,
                instance_id=instance_id,
                node_id="wait",
                kind="event",
                event_type="purchase",
                participant_id=participant,
            )
        )
    return instance_id


async def _wait_status(sessions: async_sessionmaker[AsyncSession], instance_id: uuid.UUID) -> str:
    async with sessions() as session:
        return str(await session.scalar(select(Wait.status).where(Wait.instance_id == instance_id)))


async def test_events_start_event_entry_flows_singly_and_in_batches(
    events: event_pb2_grpc.EventServiceStub, sessions: async_sessionmaker[AsyncSession], suite: Suite
) -> None:
    # A tenant of its own: its only flow is this one, so the counts are exact.
    tenant = new_tenant(suite, "starting")
    await _active_flow(sessions, tenant, SIGNUP)
    signup = events.IngestEvent(event_request(participant_id="amy", event_type="signup"), metadata=tenant.auth)
    assert (signup.resumed, signup.started) == (0, 1)
    batch = events.IngestEvents(
        event_pb2.IngestEventsRequest(
            events=[
                event_request(participant_id="bo", event_type="signup"),
                event_request(participant_id="cy", event_type="signup"),
                event_request(participant_id="cy", event_type="purchase"),
            ]
        ),
        metadata=tenant.auth,
    )
    assert [(r.resumed, r.started) for r in batch.results] == [(0, 1), (0, 1), (0, 0)]
    assert len({r.event_id for r in batch.results}) == 3


async def test_an_event_resumes_only_its_own_tenants_waiting_participant(
    events: event_pb2_grpc.EventServiceStub, sessions: async_sessionmaker[AsyncSession], suite: Suite
) -> None:
    owner, stranger = new_tenant(suite, "owner"), new_tenant(suite, "stranger")
    flow_id = await _active_flow(sessions, owner, WAIT_FOR_PURCHASE)
    single = await _waiting_for_purchase(sessions, owner, flow_id, "dee")
    batched = await _waiting_for_purchase(sessions, owner, flow_id, "eli")

    foreign = events.IngestEvent(event_request(participant_id="dee", event_type="purchase"), metadata=stranger.auth)
    assert (foreign.resumed, foreign.started) == (0, 0)
    other_type = events.IngestEvent(event_request(participant_id="dee", event_type="refund"), metadata=owner.auth)
    assert (other_type.resumed, other_type.started) == (0, 0)
    assert await _wait_status(sessions, single) == "pending"

    resumed = events.IngestEvent(event_request(participant_id="dee", event_type="purchase"), metadata=owner.auth)
    assert (resumed.resumed, resumed.started) == (1, 0)
    assert await _wait_status(sessions, single) == "fired"

    batch = events.IngestEvents(
        event_pb2.IngestEventsRequest(
            events=[
                event_request(participant_id="eli", event_type="purchase"),
                event_request(participant_id="eli", event_type="purchase"),
            ]
        ),
        metadata=owner.auth,
    )
    # The first purchase takes the wait; the second finds nothing left waiting for it.
    assert [(r.resumed, r.started) for r in batch.results] == [(1, 0), (0, 0)]
    assert await _wait_status(sessions, batched) == "fired"
