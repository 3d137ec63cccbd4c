"""EventService on the real API process: validation of single events and batches (a refused batch stores
nothing), and replays of request_ids whose event was already routed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from kalcifer.v1 import event_pb2, event_pb2_grpc
from kalcifer_common.db.models import Event
from kalcifer_common.structs import dict_to_struct
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api.support import event_request, stored_events
from tests.support.rpc import field_violations, rpc_error
from tests.support.tenants import Tenant

BIG_DATA = dict_to_struct({"blob": "x" * (64 * 1024 + 1)})


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        pytest.param(event_request(participant_id=""), {"participant_id"}, id="no-participant"),
        pytest.param(event_request(participant_id="  "), {"participant_id"}, id="blank-participant"),
        pytest.param(event_request(participant_id="p" * 257), {"participant_id"}, id="long-participant"),
        pytest.param(event_request(event_type=""), {"event_type"}, id="no-type"),
        pytest.param(event_request(event_type="order placed"), {"event_type"}, id="type-with-space"),
        pytest.param(event_request(event_type="-x"), {"event_type"}, id="type-leading-dash"),
        pytest.param(event_request(event_type="t" * 201), {"event_type"}, id="long-type"),
        pytest.param(event_request(data=BIG_DATA), {"data"}, id="big-data"),
        pytest.param(event_request(request_id="r" * 201), {"request_id"}, id="long-request-id"),
        pytest.param(event_request(occurred_at=Timestamp(seconds=10**12)), {"occurred_at"}, id="time-out-of-range"),
        pytest.param(
            event_request(participant_id="", event_type="a b", request_id="r" * 201),
            {"participant_id", "event_type", "request_id"},
            id="all-at-once",
        ),
    ],
)
def test_bad_event_is_a_field_violation(
    events: event_pb2_grpc.EventServiceStub,
    tenant: Tenant,
    request_: event_pb2.IngestEventRequest,
    fields: set[str],
) -> None:
    error = rpc_error(lambda: events.IngestEvent(request_, metadata=tenant.auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == fields


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_size_is_bounded(events: event_pb2_grpc.EventServiceStub, tenant: Tenant, count: int) -> None:
    batch = event_pb2.IngestEventsRequest(events=[event_request(participant_id="bounded")] * count)
    error = rpc_error(lambda: events.IngestEvents(batch, metadata=tenant.auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"events"}


async def test_a_batch_with_one_bad_event_stores_nothing(
    events: event_pb2_grpc.EventServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    participant = f"batch-{uuid.uuid4()}"
    batch = event_pb2.IngestEventsRequest(
        events=[
            event_request(participant_id=participant),
            event_request(participant_id=participant, event_type="bad type"),
            event_request(participant_id=participant, data=BIG_DATA),
            event_request(participant_id=""),
        ]
    )
    error = rpc_error(lambda: events.IngestEvents(batch, metadata=tenant.auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"events[1].event_type", "events[2].data", "events[3].participant_id"}
    assert await stored_events(sessions, tenant.id, participant) == 0


async def test_a_replay_of_a_routed_event_answers_deduplicated_without_storing(
    events: event_pb2_grpc.EventServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    participant = f"routed-{uuid.uuid4()}"
    event_id = uuid.uuid4()
    async with sessions.begin() as session:
        session.add(
            Event(
                id=event_id,
                tenant_id=tenant.id,
                participant_id=participant,
                event_type="purchase",
                data={"amount": 3},
                request_id="already-routed",
                routed_time=datetime.now(UTC),
                route_result={"resumed": 1, "started": 0},
            )
        )
    request = event_request(participant_id=participant, data=dict_to_struct({"amount": 3}), request_id="already-routed")
    replay = events.IngestEvent(request, metadata=tenant.auth)
    assert replay.event_id == str(event_id)
    assert replay.deduplicated
    assert (replay.resumed, replay.started) == (0, 0)
    batch = events.IngestEvents(event_pb2.IngestEventsRequest(events=[request, request]), metadata=tenant.auth)
    assert [(r.event_id, r.deduplicated) for r in batch.results] == [(str(event_id), True)] * 2
    assert await stored_events(sessions, tenant.id, participant) == 1
