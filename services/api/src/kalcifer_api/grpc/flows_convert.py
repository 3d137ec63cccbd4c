"""FlowService's wire <-> domain conversions: statuses, re-entry policies, flows and versions."""

from __future__ import annotations

from typing import Final

from kalcifer.v1 import common_pb2, flow_pb2
from kalcifer_common.errors import InvalidArgument
from kalcifer_common.graphs import graph_from_json
from kalcifer_common.statuses import FlowStatus, FlowVersionStatus
from kalcifer_common.timestamps import to_timestamp

from kalcifer_api.domain.flows import FlowRecord, FlowVersionRecord

FLOW_STATUS_TO_PROTO: Final[dict[str, flow_pb2.FlowStatus.ValueType]] = {
    FlowStatus.DRAFT: flow_pb2.FLOW_STATUS_DRAFT,
    FlowStatus.ACTIVE: flow_pb2.FLOW_STATUS_ACTIVE,
    FlowStatus.PAUSED: flow_pb2.FLOW_STATUS_PAUSED,
    FlowStatus.ARCHIVED: flow_pb2.FLOW_STATUS_ARCHIVED,
}
FLOW_STATUS_FROM_PROTO: Final[dict[int, str]] = {int(v): k for k, v in FLOW_STATUS_TO_PROTO.items()}

# A version that was published and then replaced is "superseded" in the database and ARCHIVED on the wire.
VERSION_STATUS_TO_PROTO: Final[dict[str, flow_pb2.FlowVersionStatus.ValueType]] = {
    FlowVersionStatus.DRAFT: flow_pb2.FLOW_VERSION_STATUS_DRAFT,
    FlowVersionStatus.ACTIVE: flow_pb2.FLOW_VERSION_STATUS_ACTIVE,
    FlowVersionStatus.SUPERSEDED: flow_pb2.FLOW_VERSION_STATUS_ARCHIVED,
    FlowVersionStatus.ARCHIVED: flow_pb2.FLOW_VERSION_STATUS_ARCHIVED,
}

RE_ENTRY_TO_PROTO: Final[dict[str, common_pb2.ReEntryPolicy.ValueType]] = {
    "after_exit": common_pb2.RE_ENTRY_POLICY_AFTER_EXIT,
    "never": common_pb2.RE_ENTRY_POLICY_NEVER,
    "always": common_pb2.RE_ENTRY_POLICY_ALWAYS,
}
RE_ENTRY_FROM_PROTO: Final[dict[int, str]] = {int(v): k for k, v in RE_ENTRY_TO_PROTO.items()} | {
    int(common_pb2.RE_ENTRY_POLICY_UNSPECIFIED): "after_exit"
}


def re_entry_of(value: int, path: str) -> str:
    """Wire re-entry policy -> stored value (unspecified = after_exit); INVALID_ARGUMENT for unknown numbers."""
    policy = RE_ENTRY_FROM_PROTO.get(value)
    if policy is None:
        raise InvalidArgument.single(path, f"unknown re-entry policy {value}")
    return policy


def status_filter_of(value: int) -> str | None:
    """ListFlows' status filter (unspecified = any); INVALID_ARGUMENT for unknown numbers."""
    if value == flow_pb2.FLOW_STATUS_UNSPECIFIED:
        return None
    status = FLOW_STATUS_FROM_PROTO.get(value)
    if status is None:
        raise InvalidArgument.single("status", f"unknown flow status {value}")
    return status


def flow_to_proto(flow: FlowRecord) -> flow_pb2.Flow:
    """Domain -> wire."""
    return flow_pb2.Flow(
        id=str(flow.id),
        name=flow.name,
        description=flow.description,
        status=FLOW_STATUS_TO_PROTO[flow.status],
        active_version_number=flow.active_version_number,
        etag=flow.etag,
        create_time=to_timestamp(flow.create_time),
        update_time=to_timestamp(flow.update_time),
        re_entry=RE_ENTRY_TO_PROTO[flow.re_entry],
        latest_version_number=flow.latest_version_number,
    )


def version_to_proto(version: FlowVersionRecord) -> flow_pb2.FlowVersion:
    """Domain -> wire."""
    return flow_pb2.FlowVersion(
        flow_id=str(version.flow_id),
        version_number=version.version_number,
        status=VERSION_STATUS_TO_PROTO[version.status],
        graph=graph_from_json(version.graph),
        changelog=version.changelog,
        create_time=to_timestamp(version.create_time),
        publish_time=to_timestamp(version.publish_time),
    )
