"""`kalcifer.v1.SegmentService`: rule sets over customer profiles (SPEC 7)."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.empty_pb2 import Empty
from kalcifer.v1 import segment_pb2, segment_pb2_grpc
from kalcifer_common.ids import parse_id
from kalcifer_common.pagination import PageCursor, decode_page_token, encode_page_token, page_size_of, time_key
from kalcifer_common.rpc.errors import map_errors
from kalcifer_common.segments import MATCH_ALL, MATCH_ANY
from kalcifer_common.structs import value_to_python
from kalcifer_common.timestamps import to_timestamp

from kalcifer_api.domain.marketing_common import etag_of, masked_fields
from kalcifer_api.domain.segments import SEGMENT_FIELDS, SegmentDefinition, SegmentRecord, validated_definition
from kalcifer_api.repo.marketing_base import Reply
from kalcifer_api.repo.segments import SegmentRepository

_MATCH_TO_DOMAIN = {segment_pb2.SEGMENT_MATCH_ALL: MATCH_ALL, segment_pb2.SEGMENT_MATCH_ANY: MATCH_ANY}
_MATCH_TO_PROTO = {name: value for value, name in _MATCH_TO_DOMAIN.items()}


def rule_to_dict(rule: segment_pb2.SegmentRule) -> dict[str, Any]:
    """Wire rule -> stored JSON; a rule whose value has no kind set has no "value" key (so it is reported)."""
    data: dict[str, Any] = {"field": rule.field, "operator": rule.operator}
    if rule.HasField("value") and rule.value.WhichOneof("kind") is not None:
        data["value"] = value_to_python(rule.value)
    return data


def rule_to_proto(rule: dict[str, Any]) -> segment_pb2.SegmentRule:
    """Stored JSON -> wire rule."""
    proto = segment_pb2.SegmentRule(field=str(rule.get("field", "")), operator=str(rule.get("operator", "")))
    value = rule.get("value")
    if value is None:
        proto.value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        proto.value.bool_value = value
    elif isinstance(value, int | float):
        proto.value.number_value = value
    elif isinstance(value, str):
        proto.value.string_value = value
    elif isinstance(value, list):
        proto.value.list_value.extend(value)
    return proto


def segment_to_proto(segment: SegmentRecord) -> segment_pb2.Segment:
    """Domain -> wire."""
    return segment_pb2.Segment(
        id=str(segment.id),
        name=segment.name,
        description=segment.description,
        match=_MATCH_TO_PROTO.get(segment.match, segment_pb2.SEGMENT_MATCH_UNSPECIFIED),
        rules=[rule_to_proto(rule) for rule in segment.rules],
        etag=etag_of(segment.revision),
        create_time=to_timestamp(segment.create_time),
        update_time=to_timestamp(segment.update_time),
    )


def definition_of(segment: segment_pb2.Segment, fields: frozenset[str] | None = None) -> SegmentDefinition:
    """The validated definition carried by a wire segment (only `fields` are checked when given)."""
    return validated_definition(
        name=segment.name,
        description=segment.description,
        match=_MATCH_TO_DOMAIN.get(segment.match, ""),
        rules=[rule_to_dict(rule) for rule in segment.rules],
        fields=fields,
    )


def _empty(_: None) -> Empty:
    return Empty()


@map_errors
class SegmentServicer(segment_pb2_grpc.SegmentServiceServicer):
    """Segments are definitions only; membership is evaluated on demand by `kalcifer_common.segments.matches`."""

    def __init__(self, segments: SegmentRepository) -> None:
        self._segments = segments

    def _reply(self, method: str, request: Any) -> Reply[SegmentRecord, segment_pb2.Segment]:
        return Reply(method, request, segment_pb2.Segment, segment_to_proto)

    async def CreateSegment(self, request: segment_pb2.CreateSegmentRequest, context: Any) -> segment_pb2.Segment:
        definition = definition_of(request.segment)
        return await self._segments.create(definition, self._reply("CreateSegment", request))

    async def GetSegment(self, request: segment_pb2.GetSegmentRequest, context: Any) -> segment_pb2.Segment:
        return segment_to_proto(await self._segments.get(parse_id(request.id, "id")))

    async def ListSegments(
        self, request: segment_pb2.ListSegmentsRequest, context: Any
    ) -> segment_pb2.ListSegmentsResponse:
        limit = page_size_of(request.page_size)
        query = {"list": "segments"}
        rows = await self._segments.list_page(limit=limit, after=decode_page_token(request.page_token, query=query))
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = encode_page_token(PageCursor(time_key(last.create_time), str(last.id)), query=query)
        return segment_pb2.ListSegmentsResponse(
            segments=[segment_to_proto(segment) for segment in rows[:limit]], next_page_token=token
        )

    async def UpdateSegment(self, request: segment_pb2.UpdateSegmentRequest, context: Any) -> segment_pb2.Segment:
        segment_id = parse_id(request.segment.id, "segment.id")
        fields = masked_fields(list(request.update_mask.paths), SEGMENT_FIELDS)
        definition = definition_of(request.segment, fields)
        return await self._segments.update(
            segment_id, definition, fields, request.segment.etag, self._reply("UpdateSegment", request)
        )

    async def DeleteSegment(self, request: segment_pb2.DeleteSegmentRequest, context: Any) -> Empty:
        segment_id = parse_id(request.id, "id")
        return await self._segments.delete(segment_id, request.etag, Reply("DeleteSegment", request, Empty, _empty))
