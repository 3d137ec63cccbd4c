"""`kalcifer.v1.EventService`: store participant events, then have the engine route them.

Store first, route second: the stored row is the event's durable record, and the engine routes each event id once
(it marks the row routed in the routing transaction). A request_id seen before is answered `deduplicated=true`
with zero counts when its event was routed; when it was stored but never routed (the first call failed after
storing: engine unavailable, deadline), the retry routes it now and answers with the real counts, so no event is
lost to a failed call.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer.v1 import event_pb2, event_pb2_grpc
from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.rpc.auth import current_tenant_id
from kalcifer_common.rpc.errors import map_errors
from kalcifer_common.structs import dict_to_struct, struct_to_dict
from kalcifer_common.timestamps import timestamp_in_request, to_timestamp

from kalcifer_api.domain.events import (
    NewEvent,
    StoredEvent,
    batch_size_violations,
    event_type_violations,
)
from kalcifer_api.domain.instances import participant_id_violations, request_id_violations
from kalcifer_api.domain.payloads import payload_violations
from kalcifer_api.engine_batches import RouteBatches
from kalcifer_api.repo.events import EventRepository


def _occurred_at(
    request: event_pb2.IngestEventRequest, field: str, violations: list[FieldViolation]
) -> datetime | None:
    if not request.HasField("occurred_at"):
        return None
    return timestamp_in_request(request.occurred_at, field, violations)


def new_event(request: event_pb2.IngestEventRequest, prefix: str, violations: list[FieldViolation]) -> NewEvent:
    """Wire -> domain, recording every problem (fields named `prefix + field`) instead of stopping at the first."""
    data = struct_to_dict(request.data)
    violations += participant_id_violations(request.participant_id, f"{prefix}participant_id")
    violations += event_type_violations(request.event_type, f"{prefix}event_type")
    violations += payload_violations(request.data, f"{prefix}data", converted=data)
    violations += request_id_violations(request.request_id, f"{prefix}request_id")
    occurred_at = _occurred_at(request, f"{prefix}occurred_at", violations)
    return NewEvent(
        participant_id=request.participant_id,
        event_type=request.event_type,
        data=data,
        occurred_at=occurred_at,
        request_id=request.request_id or None,
    )


def _route_request(tenant_id: str, stored: StoredEvent, data: struct_pb2.Struct | None) -> engine_pb2.RouteEventRequest:
    occurred_at: Timestamp | None = to_timestamp(stored.occurred_at)
    return engine_pb2.RouteEventRequest(
        tenant_id=tenant_id,
        event_id=str(stored.id),
        participant_id=stored.participant_id,
        event_type=stored.event_type,
        # The caller's own Struct when it is what was stored; a replay routes the stored data.
        data=data if data is not None else dict_to_struct(stored.data),
        occurred_at=occurred_at,
    )


def _counts(stored: StoredEvent, routed: engine_pb2.RouteEventResponse) -> event_pb2.IngestEventResponse:
    return event_pb2.IngestEventResponse(event_id=str(stored.id), resumed=routed.resumed, started=routed.started)


def _deduplicated(stored: StoredEvent) -> event_pb2.IngestEventResponse:
    return event_pb2.IngestEventResponse(event_id=str(stored.id), deduplicated=True)


@map_errors
class EventServicer(event_pb2_grpc.EventServiceServicer):
    """IngestEvent and IngestEvents."""

    def __init__(
        self, events: EventRepository, engine: engine_pb2_grpc.EngineServiceAsyncStub, routes: RouteBatches
    ) -> None:
        self._events = events
        self._engine = engine
        self._routes = routes

    async def IngestEvent(self, request: event_pb2.IngestEventRequest, context: Any) -> event_pb2.IngestEventResponse:
        violations: list[FieldViolation] = []
        event = new_event(request, "", violations)
        if violations:
            raise InvalidArgument(violations)
        (stored,) = await self._events.store([event], field_prefix="")
        if not stored.needs_routing:
            return _deduplicated(stored)
        data = None if stored.deduplicated else request.data
        return _counts(stored, await self._routes(_route_request(str(current_tenant_id()), stored, data)))

    async def IngestEvents(
        self, request: event_pb2.IngestEventsRequest, context: Any
    ) -> event_pb2.IngestEventsResponse:
        violations = batch_size_violations(len(request.events), "events")
        if violations:
            raise InvalidArgument(violations)
        events = [new_event(item, f"events[{index}].", violations) for index, item in enumerate(request.events)]
        if violations:
            raise InvalidArgument(violations)
        stored = await self._events.store(events, field_prefix="events[{index}].")
        # Each event that needs routing is routed once, at its first position in the batch; the batch's other
        # positions of the same event (and events routed before) are deduplicated.
        first_position: dict[uuid.UUID, int] = {}
        to_route: list[engine_pb2.RouteEventRequest] = []
        tenant_id = str(current_tenant_id())
        for item, original in zip(stored, request.events, strict=True):
            if item.needs_routing and item.id not in first_position:
                first_position[item.id] = len(to_route)
                to_route.append(_route_request(tenant_id, item, None if item.deduplicated else original.data))
        routed = await self._route_batch(to_route)
        results: list[event_pb2.IngestEventResponse] = []
        seen: set[uuid.UUID] = set()
        for item in stored:
            if item.id in first_position and item.id not in seen:
                seen.add(item.id)
                results.append(_counts(item, routed[first_position[item.id]]))
            else:
                results.append(_deduplicated(item))
        return event_pb2.IngestEventsResponse(results=results)

    async def _route_batch(
        self, requests: list[engine_pb2.RouteEventRequest]
    ) -> Sequence[engine_pb2.RouteEventResponse]:
        """One RouteEvents call for the batch's events that need routing, in request order (none: no call)."""
        if not requests:
            return []
        response = await self._engine.RouteEvents(engine_pb2.RouteEventsRequest(events=requests))
        if len(response.results) != len(requests):
            raise RuntimeError(f"the engine answered {len(response.results)} results for {len(requests)} events")
        return list(response.results)
