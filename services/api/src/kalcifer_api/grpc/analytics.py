"""`kalcifer.v1.AnalyticsService`: reports on a flow from the counters the engine keeps (no engine call).

Requests are checked at the edge, every problem at once; the figures come from `repo.analytics` and
`domain.analytics`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from kalcifer.v1 import analytics_pb2, analytics_pb2_grpc
from kalcifer_common.errors import FieldViolation, InvalidArgument
from kalcifer_common.rpc.errors import map_errors
from kalcifer_common.timestamps import timestamp_in_request

from kalcifer_api.domain.analytics import (
    AbVariantRecord,
    AnalyticsScope,
    NodeStatsRecord,
    funnel_node_violations,
    scope_violations,
)
from kalcifer_api.domain.instances import id_or_violation
from kalcifer_api.repo.analytics import AnalyticsRepository


class _ScopedRequest(Protocol):
    """What every AnalyticsService request carries."""

    flow_id: str
    version_number: int

    @property
    def start_time(self) -> Timestamp: ...

    @property
    def end_time(self) -> Timestamp: ...

    def HasField(self, field_name: Any) -> bool: ...  # the protobuf method, as generated


def _moment(request: _ScopedRequest, name: str, violations: list[FieldViolation]) -> datetime | None:
    if not request.HasField(name):
        return None
    stamp: Timestamp = getattr(request, name)
    return timestamp_in_request(stamp, name, violations)


def scope_of(request: _ScopedRequest, violations: list[FieldViolation] | None = None) -> AnalyticsScope:
    """The request's flow, version and days; INVALID_ARGUMENT with every problem (also those already in
    `violations`)."""
    found = violations if violations is not None else []
    flow_id = id_or_violation(request.flow_id, "flow_id", found)
    start, end = _moment(request, "start_time", found), _moment(request, "end_time", found)
    scope = scope_violations(flow_id, request.version_number, start, end, found)
    if scope is None:
        raise InvalidArgument(found)
    return scope


def _duration(elapsed: Any) -> Duration | None:
    if elapsed is None:
        return None
    duration = Duration()
    duration.FromTimedelta(elapsed)
    return duration


def node_stats_to_proto(record: NodeStatsRecord) -> analytics_pb2.NodeStats:
    """Domain -> wire."""
    return analytics_pb2.NodeStats(
        node_id=record.node_id,
        node_type=record.node_type,
        entered=record.entered,
        completed=record.completed,
        failed=record.failed,
        waiting=record.waiting,
        skipped=record.skipped,
        cancelled=record.cancelled,
        branches=record.branches,
        median_time=_duration(record.median_time),
        p95_time=_duration(record.p95_time),
    )


def ab_variant_to_proto(record: AbVariantRecord) -> analytics_pb2.AbVariantResult:
    """Domain -> wire."""
    result = analytics_pb2.AbVariantResult(
        key=record.key,
        participants=record.participants,
        conversions=record.conversions,
        conversion_rate=record.conversion_rate,
        revenue=float(record.revenue),
    )
    if record.p_value is not None:
        result.p_value = record.p_value
    return result


@map_errors
class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    """GetFlowSummary, GetNodeStats, GetFunnel and GetAbResults of the calling tenant's flows."""

    def __init__(self, analytics: AnalyticsRepository) -> None:
        self._analytics = analytics

    async def GetFlowSummary(
        self, request: analytics_pb2.GetFlowSummaryRequest, context: Any
    ) -> analytics_pb2.GetFlowSummaryResponse:
        summary = await self._analytics.flow_summary(scope_of(request))
        return analytics_pb2.GetFlowSummaryResponse(
            entered=summary.entered,
            running=summary.running,
            waiting=summary.waiting,
            paused=summary.paused,
            completed=summary.completed,
            failed=summary.failed,
            exited=summary.exited,
            converted=summary.converted,
            conversion_rate=summary.conversion_rate,
        )

    async def GetNodeStats(
        self, request: analytics_pb2.GetNodeStatsRequest, context: Any
    ) -> analytics_pb2.GetNodeStatsResponse:
        records = await self._analytics.node_stats(scope_of(request))
        return analytics_pb2.GetNodeStatsResponse(nodes=[node_stats_to_proto(record) for record in records])

    async def GetFunnel(self, request: analytics_pb2.GetFunnelRequest, context: Any) -> analytics_pb2.GetFunnelResponse:
        node_ids = list(request.node_ids)
        scope = scope_of(request, funnel_node_violations(node_ids))
        steps = await self._analytics.funnel(scope, node_ids)
        return analytics_pb2.GetFunnelResponse(
            steps=[
                analytics_pb2.FunnelStep(node_id=step.node_id, count=step.count, conversion_rate=step.conversion_rate)
                for step in steps
            ]
        )

    async def GetAbResults(
        self, request: analytics_pb2.GetAbResultsRequest, context: Any
    ) -> analytics_pb2.GetAbResultsResponse:
        violations = [] if request.node_id else [FieldViolation("node_id", "is required")]
        scope = scope_of(request, violations)
        variants = await self._analytics.ab_results(scope, request.node_id)
        return analytics_pb2.GetAbResultsResponse(
            node_id=request.node_id, variants=[ab_variant_to_proto(variant) for variant in variants]
        )
