"""EventService on the real API process: validation of single events and batches (a refused batch stores
nothing), and replays of request_ids whose event was already routed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from kalcifer.v1 import event_pb2, event_pb2_grpc, tenant_pb2, tenant_pb2_grpc
from kalcifer_common.db.models import Event
from kalcifer_common.structs import dict_to_struct
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.processes import Suite
from tests.support.rpc import bearer, field_violations, rpc_error


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    key: str

    @property
    def auth(self) -> tuple[tuple[str, str]]:
        return bearer(self.key)


def _tenant(suite: Suite, name: str) -> Tenant:
    with grpc.insecure_channel(suite.address("api")) as channel:
        created = tenant_pb2_grpc.TenantServiceStub(channel).CreateTenant(
            tenant_pb2.CreateTenantRequest(name=name), metadata=bearer(suite.admin_token)
        )
    return Tenant(uuid.UUID(created.tenant.id), created.raw_key)


@pytest.fixture(scope="module")
def tenant(suite: Suite) -> Tenant:
    return _tenant(suite, "events")


@pytest.fixture(scope="module")
def events(suite: Suite) -> Iterator[event_pb2_grpc.EventServiceStub]:
    with grpc.insecure_channel(suite.address("api")) as channel:
        yield event_pb2_grpc.EventServiceStub(channel)


async def _stored(sessions: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, participant_id: str) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).where(Event.tenant_id == tenant_id, Event.participant_id == participant_id)
        )
    return int(count or 0)


def _event(
    participant_id: str = "alice", event_type: str = "purchase", **fields: object
) -> event_pb2.IngestEventRequest:
    return event_pb2.IngestEventRequest(participant_id=participant_id, event_type=event_type, **fields)  # type: ignore[arg-type]


BIG_DATA = dict_to_struct({"blob": "x" * (64 * 1024 + 1)})


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        pytest.param(_event(participant_id=""), {"participant_id"}, id="no-participant"),
        pytest.param(_event(participant_id="  "), {"participant_id"}, id="blank-participant"),
        pytest.param(_event(participant_id="p" * 257), {"participant_id"}, id="long-participant"),
        pytest.param(_event(event_type=""), {"event_type"}, id="no-type"),
        pytest.param(_event(event_type="order placed"), {"event_type"}, id="type-with-space"),
        pytest.param(_event(event_type="-x"), {"event_type"}, id="type-leading-dash"),
        pytest.param(_event(event_type="t" * 201), {"event_type"}, id="long-type"),
        pytest.param(_event(data=BIG_DATA), {"data"}, id="big-data"),
        pytest.param(_event(request_id="r" * 201), {"request_id"}, id="long-request-id"),
        pytest.param(_event(occurred_at=Timestamp(seconds=10**12)), {"occurred_at"}, id="time-out-of-range"),
        pytest.param(
            _event(participant_id="", event_type="a b", request_id="r" * 201),
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
    batch = event_pb2.IngestEventsRequest(events=[_event(participant_id="bounded")] * count)
    error = rpc_error(lambda: events.IngestEvents(batch, metadata=tenant.auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"events"}


async def test_a_batch_with_one_bad_event_stores_nothing(
    events: event_pb2_grpc.EventServiceStub, tenant: Tenant, sessions: async_sessionmaker[AsyncSession]
) -> None:
    participant = f"batch-{uuid.uuid4()}"
    batch = event_pb2.IngestEventsRequest(
        events=[
            _event(participant_id=participant),
            _event(participant_id=participant, event_type="bad type"),
            _event(participant_id=participant, data=BIG_DATA),
            _event(participant_id=""),
        ]
    )
    error = rpc_error(lambda: events.IngestEvents(batch, metadata=tenant.auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"events[1].event_type", "events[2].data", "events[3].participant_id"}
    assert await _stored(sessions, tenant.id, participant) == 0


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
    request = _event(participant_id=participant, data=dict_to_struct({"amount": 3}), request_id="already-routed")
    replay = events.IngestEvent(request, metadata=tenant.auth)
    assert replay.event_id == str(event_id)
    assert replay.deduplicated
    assert (replay.resumed, replay.started) == (0, 0)
    batch = events.IngestEvents(event_pb2.IngestEventsRequest(events=[request, request]), metadata=tenant.auth)
    assert [(r.event_id, r.deduplicated) for r in batch.results] == [(str(event_id), True)] * 2
    assert await _stored(sessions, tenant.id, participant) == 1
