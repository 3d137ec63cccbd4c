"""EventService and TriggerService: what moves participants into and through flows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kalcifer.v1 import event_pb2, event_pb2_grpc, trigger_pb2, trigger_pb2_grpc

from kalcifer_client._transport import Transport
from kalcifer_client.graphs import dict_to_struct, timestamp_of


@dataclass(frozen=True, slots=True)
class Event:
    """One participant event for `Events.send_many`."""

    participant_id: str
    event_type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    request_id: str = ""

    def to_proto(self) -> event_pb2.IngestEventRequest:
        """The wire form."""
        request = event_pb2.IngestEventRequest(
            participant_id=self.participant_id,
            event_type=self.event_type,
            data=dict_to_struct(self.data),
            request_id=self.request_id,
        )
        if self.occurred_at is not None:
            request.occurred_at.CopyFrom(timestamp_of(self.occurred_at))
        return request


class Events:
    """Ingests participant events: they resume waiting instances and start flows whose `event_entry` matches."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._stub = event_pb2_grpc.EventServiceStub(transport.channel)

    async def send(
        self,
        participant_id: str,
        event_type: str,
        data: Mapping[str, Any] | None = None,
        *,
        occurred_at: datetime | None = None,
        request_id: str = "",
    ) -> event_pb2.IngestEventResponse:
        """One event; the answer counts the instances it resumed and started."""
        event = Event(participant_id, event_type, data or {}, occurred_at, request_id)
        return await self._transport.call(self._stub.IngestEvent, event.to_proto())

    async def send_many(self, events: Iterable[Event]) -> Sequence[event_pb2.IngestEventResponse]:
        """A batch of events in one call; one answer per event, in order."""
        request = event_pb2.IngestEventsRequest(events=[event.to_proto() for event in events])
        response = await self._transport.call(self._stub.IngestEvents, request)
        return response.results


class Triggers:
    """Starts flows directly (TriggerFlow) or through their `webhook_entry` (TriggerWebhook)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._stub = trigger_pb2_grpc.TriggerServiceStub(transport.channel)

    async def trigger_flow(
        self,
        flow_id: str,
        participant_id: str,
        context: Mapping[str, Any] | None = None,
        *,
        entry_node_id: str = "",
        request_id: str = "",
    ) -> str:
        """Start an instance of an ACTIVE flow for the participant; returns its id."""
        request = trigger_pb2.TriggerFlowRequest(
            flow_id=flow_id,
            participant_id=participant_id,
            context=dict_to_struct(context),
            entry_node_id=entry_node_id,
            request_id=request_id,
        )
        response = await self._transport.call(self._stub.TriggerFlow, request)
        return response.instance_id

    async def trigger_webhook(
        self, webhook_path: str, participant_id: str, payload: Mapping[str, Any] | None = None, *, request_id: str = ""
    ) -> Sequence[str]:
        """Start every active flow whose `webhook_entry` has this path; returns the instances' ids."""
        request = trigger_pb2.TriggerWebhookRequest(
            webhook_path=webhook_path,
            participant_id=participant_id,
            payload=dict_to_struct(payload),
            request_id=request_id,
        )
        response = await self._transport.call(self._stub.TriggerWebhook, request)
        return list(response.instance_ids)
