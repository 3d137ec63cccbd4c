"""`kalcifer.v1.JourneyService`: journeys (a flow plus marketing settings) and their lifecycle."""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf.empty_pb2 import Empty
from kalcifer.v1 import common_pb2, journey_pb2, journey_pb2_grpc
from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.ids import parse_id
from kalcifer_common.pagination import PageCursor, decode_page_token, encode_page_token, page_size_of, time_key
from kalcifer_common.rpc.auth import current_tenant_id
from kalcifer_common.rpc.errors import map_errors
from kalcifer_common.statuses import JourneyStatus
from kalcifer_common.timestamps import to_timestamp

from kalcifer_api.domain.journeys import MUTABLE_FIELDS, JourneyDraft, JourneyRecord, Transition, validated_draft
from kalcifer_api.domain.marketing_common import etag_of, masked_fields
from kalcifer_api.domain.marketing_settings import MarketingSettings
from kalcifer_api.engine_client import EngineClient
from kalcifer_api.repo.journeys import JourneyRepository
from kalcifer_api.repo.marketing_base import Reply

_STATUS_TO_PROTO: dict[str, journey_pb2.JourneyStatus.ValueType] = {
    JourneyStatus.DRAFT: journey_pb2.JOURNEY_STATUS_DRAFT,
    JourneyStatus.ACTIVE: journey_pb2.JOURNEY_STATUS_ACTIVE,
    JourneyStatus.PAUSED: journey_pb2.JOURNEY_STATUS_PAUSED,
    JourneyStatus.ARCHIVED: journey_pb2.JOURNEY_STATUS_ARCHIVED,
}
_STATUS_TO_DOMAIN = {value: name for name, value in _STATUS_TO_PROTO.items()}
_RE_ENTRY_TO_PROTO = {
    "after_exit": common_pb2.RE_ENTRY_POLICY_AFTER_EXIT,
    "never": common_pb2.RE_ENTRY_POLICY_NEVER,
    "always": common_pb2.RE_ENTRY_POLICY_ALWAYS,
}
_RE_ENTRY_TO_DOMAIN = {value: name for name, value in _RE_ENTRY_TO_PROTO.items()} | {
    common_pb2.RE_ENTRY_POLICY_UNSPECIFIED: "after_exit"
}


def _optional_id(value: str, path: str, violations: list[FieldViolation]) -> uuid.UUID | None:
    """An optional UUID field: empty is None; a malformed one is recorded as a violation."""
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        violations.append(FieldViolation(path, f"{value!r} is not a valid id (expected a UUID)"))
        return None


def settings_of(journey: journey_pb2.Journey, violations: list[FieldViolation]) -> MarketingSettings:
    """The marketing settings carried by a wire journey, as plain JSON-able values (unset messages are None)."""
    schedule = journey.entry_schedule
    cap = journey.frequency_cap
    quiet = journey.quiet_hours
    return MarketingSettings(
        audience_segment_id=_optional_id(journey.audience_segment_id, "audience_segment_id", violations),
        entry_schedule={"cron": schedule.cron, "timezone": schedule.timezone}
        if journey.HasField("entry_schedule")
        else None,
        goals=[{"name": g.name, "event_type": g.event_type, "filter": g.filter} for g in journey.goals],
        exit_criteria=[{"event_type": c.event_type, "filter": c.filter} for c in journey.exit_criteria],
        frequency_cap={"max_messages": cap.max_messages, "time_window": cap.time_window, "channel": cap.channel}
        if journey.HasField("frequency_cap")
        else None,
        quiet_hours={"start": quiet.start, "end": quiet.end, "timezone": quiet.timezone}
        if journey.HasField("quiet_hours")
        else None,
        re_entry=_RE_ENTRY_TO_DOMAIN.get(journey.re_entry, f"unknown ({journey.re_entry})"),
    )


def draft_of(journey: journey_pb2.Journey, fields: frozenset[str] | None = None) -> JourneyDraft:
    """The validated draft carried by a wire journey (only `fields` are checked and used when given)."""
    violations: list[FieldViolation] = []
    settings = settings_of(journey, violations)
    if fields is not None:
        violations = [v for v in violations if v.field.split(".")[0] in fields]
    flow_id = None
    if fields is None or "flow_id" in fields:
        flow_id = _optional_id(journey.flow_id, "flow_id", violations)
    return validated_draft(
        name=journey.name,
        description=journey.description,
        flow_id=flow_id,
        settings=settings,
        fields=fields,
        violations=violations,
    )


def journey_to_proto(journey: JourneyRecord) -> journey_pb2.Journey:
    """Domain -> wire."""
    settings = journey.settings
    proto = journey_pb2.Journey(
        id=str(journey.id),
        name=journey.name,
        description=journey.description,
        flow_id=str(journey.flow_id),
        status=_STATUS_TO_PROTO.get(journey.status, journey_pb2.JOURNEY_STATUS_UNSPECIFIED),
        audience_segment_id=str(settings.audience_segment_id) if settings.audience_segment_id else "",
        goals=[journey_pb2.Goal(**goal) for goal in settings.goals],
        exit_criteria=[journey_pb2.ExitCriterion(**criterion) for criterion in settings.exit_criteria],
        re_entry=_RE_ENTRY_TO_PROTO.get(settings.re_entry, common_pb2.RE_ENTRY_POLICY_UNSPECIFIED),
        etag=etag_of(journey.revision),
        create_time=to_timestamp(journey.create_time),
        update_time=to_timestamp(journey.update_time),
    )
    if settings.entry_schedule is not None:
        proto.entry_schedule.CopyFrom(journey_pb2.EntrySchedule(**settings.entry_schedule))
    if settings.frequency_cap is not None:
        proto.frequency_cap.CopyFrom(journey_pb2.FrequencyCap(**settings.frequency_cap))
    if settings.quiet_hours is not None:
        proto.quiet_hours.CopyFrom(journey_pb2.QuietHours(**settings.quiet_hours))
    return proto


def _empty(_: None) -> Empty:
    return Empty()


@map_errors
class JourneyServicer(journey_pb2_grpc.JourneyServiceServicer):
    """Journeys wrap an existing flow; their lifecycle RPCs move the flow too, in the same transaction."""

    def __init__(self, journeys: JourneyRepository, engine: EngineClient) -> None:
        self._journeys = journeys
        self._engine = engine

    async def _move(
        self, journey_id: uuid.UUID, transition: Transition, reply: Reply[JourneyRecord, journey_pb2.Journey]
    ) -> journey_pb2.Journey:
        """A lifecycle move: a launch's graph is validated by the engine before the transaction; the flow's new
        status is carried to its instances by the engine after it."""
        tenant_id = current_tenant_id()
        validated: list[int] = []

        async def prepare() -> None:
            if transition is Transition.LAUNCH:
                found = await self._journeys.flow_to_launch(journey_id)
                if found is not None:
                    await self._engine.require_valid_graph(tenant_id, found[1])
                    validated.append(found[0])

        answer, moved = await self._journeys.move(
            journey_id, transition, reply, validated_version=validated, prepare=prepare
        )
        for flow_id, status in moved:
            await self._engine.carry_to_instances(tenant_id, flow_id, status)
        return answer

    def _reply(self, method: str, request: Any) -> Reply[JourneyRecord, journey_pb2.Journey]:
        return Reply(method, request, journey_pb2.Journey, journey_to_proto)

    async def CreateJourney(self, request: journey_pb2.CreateJourneyRequest, context: Any) -> journey_pb2.Journey:
        return await self._journeys.create(draft_of(request.journey), self._reply("CreateJourney", request))

    async def GetJourney(self, request: journey_pb2.GetJourneyRequest, context: Any) -> journey_pb2.Journey:
        return journey_to_proto(await self._journeys.get(parse_id(request.id, "id")))

    async def ListJourneys(
        self, request: journey_pb2.ListJourneysRequest, context: Any
    ) -> journey_pb2.ListJourneysResponse:
        limit = page_size_of(request.page_size)
        status = ""
        if request.status != journey_pb2.JOURNEY_STATUS_UNSPECIFIED:
            if request.status not in _STATUS_TO_DOMAIN:
                raise InvalidArgument.single("status", f"{request.status} is not a journey status")
            status = _STATUS_TO_DOMAIN[request.status]
        query = {"list": "journeys", "status": status}
        rows = await self._journeys.list_page(
            status=status, limit=limit, after=decode_page_token(request.page_token, query=query)
        )
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = encode_page_token(PageCursor(time_key(last.create_time), str(last.id)), query=query)
        return journey_pb2.ListJourneysResponse(
            journeys=[journey_to_proto(journey) for journey in rows[:limit]], next_page_token=token
        )

    async def UpdateJourney(self, request: journey_pb2.UpdateJourneyRequest, context: Any) -> journey_pb2.Journey:
        journey_id = parse_id(request.journey.id, "journey.id")
        fields = masked_fields(list(request.update_mask.paths), MUTABLE_FIELDS)
        draft = draft_of(request.journey, fields)
        return await self._journeys.update(
            journey_id, draft, fields, request.journey.etag, self._reply("UpdateJourney", request)
        )

    async def DeleteJourney(self, request: journey_pb2.DeleteJourneyRequest, context: Any) -> Empty:
        journey_id = parse_id(request.id, "id")
        return await self._journeys.delete(journey_id, request.etag, Reply("DeleteJourney", request, Empty, _empty))

    async def LaunchJourney(self, request: journey_pb2.LaunchJourneyRequest, context: Any) -> journey_pb2.Journey:
        return await self._move(parse_id(request.id, "id"), Transition.LAUNCH, self._reply("LaunchJourney", request))

    async def PauseJourney(self, request: journey_pb2.PauseJourneyRequest, context: Any) -> journey_pb2.Journey:
        return await self._move(parse_id(request.id, "id"), Transition.PAUSE, self._reply("PauseJourney", request))

    async def ResumeJourney(self, request: journey_pb2.ResumeJourneyRequest, context: Any) -> journey_pb2.Journey:
        return await self._move(parse_id(request.id, "id"), Transition.RESUME, self._reply("ResumeJourney", request))

    async def ArchiveJourney(self, request: journey_pb2.ArchiveJourneyRequest, context: Any) -> journey_pb2.Journey:
        return await self._move(parse_id(request.id, "id"), Transition.ARCHIVE, self._reply("ArchiveJourney", request))
