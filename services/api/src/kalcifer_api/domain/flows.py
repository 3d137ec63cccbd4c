"""Flows and their versions as the API shows them, and the rules on what an operator may write.

Nothing here knows gRPC or SQL: the servicer converts the wire into these values, the repository stores them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from kalcifer_common.errors import FailedPrecondition, FieldViolation, InvalidArgument
from kalcifer_common.statuses import FlowStatus

from kalcifer_api.domain.marketing_common import check_etag as check_resource_etag
from kalcifer_api.domain.marketing_common import etag_of

MAX_NAME_LENGTH: Final = 200
MAX_DESCRIPTION_LENGTH: Final = 2000
MAX_CHANGELOG_LENGTH: Final = 2000
UPDATABLE_FIELDS: Final = ("name", "description", "re_entry")

FLOW_NOT_DRAFT: Final = "FLOW_NOT_DRAFT"
FLOW_NOT_ACTIVE: Final = "FLOW_NOT_ACTIVE"
SAME_VERSION: Final = "SAME_VERSION"
VERSION_NOT_PUBLISHABLE: Final = "VERSION_NOT_PUBLISHABLE"
FLOW_IN_USE: Final = "FLOW_IN_USE"


@dataclass(frozen=True, slots=True)
class FlowRecord:
    """A flow row plus the number of its newest version."""

    id: uuid.UUID
    name: str
    description: str
    status: str
    active_version_number: int
    latest_version_number: int
    re_entry: str
    revision: int
    create_time: datetime
    update_time: datetime

    @property
    def etag(self) -> str:
        """Changes whenever the flow row changes (`flows.revision` is bumped by every UPDATE)."""
        return etag_of(self.revision)


@dataclass(frozen=True, slots=True)
class FlowVersionRecord:
    """One version of a flow's graph (stored in its JSON form)."""

    flow_id: uuid.UUID
    version_number: int
    status: str
    graph: dict[str, Any]
    changelog: str
    create_time: datetime
    publish_time: datetime | None


@dataclass(frozen=True, slots=True)
class VersionCount:
    """Live instances of one version, by status."""

    version_number: int
    running: int = 0
    waiting: int = 0
    paused: int = 0

    @property
    def total_live(self) -> int:
        """running + waiting + paused."""
        return self.running + self.waiting + self.paused


def check_etag(given: str, revision: int, flow_id: uuid.UUID) -> None:
    """ABORTED when a non-empty etag does not match the flow's current one (same etag form as every resource)."""
    check_resource_etag(given, revision, resource_type="flow", resource_name=str(flow_id))


def require_draft(status: str, flow_id: uuid.UUID, action: str) -> None:
    """FAILED_PRECONDITION FLOW_NOT_DRAFT unless the flow is a draft."""
    if status != FlowStatus.DRAFT:
        raise FailedPrecondition(
            FLOW_NOT_DRAFT,
            f"cannot {action} flow {flow_id} in status {status.upper()}; only a DRAFT flow can be",
            metadata={"flow_id": str(flow_id), "status": status.upper()},
        )


def require_published_flow(status: str, flow_id: uuid.UUID) -> None:
    """FAILED_PRECONDITION FLOW_NOT_ACTIVE unless the flow is ACTIVE or PAUSED (it has an active version)."""
    if status not in (FlowStatus.ACTIVE, FlowStatus.PAUSED):
        raise FailedPrecondition(
            FLOW_NOT_ACTIVE,
            f"flow {flow_id} is {status.upper()}; only an ACTIVE or PAUSED flow can change its active version",
            metadata={"flow_id": str(flow_id), "status": status.upper()},
        )


def name_violations(value: str, path: str) -> list[FieldViolation]:
    """A flow name: 1 to 200 characters once trimmed."""
    name = value.strip()
    if not name:
        return [FieldViolation(path, "is required")]
    if len(name) > MAX_NAME_LENGTH:
        return [FieldViolation(path, f"must be at most {MAX_NAME_LENGTH} characters")]
    return []


def text_violations(value: str, path: str, limit: int) -> list[FieldViolation]:
    """Free text bounded by `limit` characters."""
    return [FieldViolation(path, f"must be at most {limit} characters")] if len(value) > limit else []


def update_fields(paths: list[str]) -> tuple[str, ...]:
    """The fields an update mask names (empty mask = every updatable field); INVALID_ARGUMENT on others."""
    if not paths:
        return UPDATABLE_FIELDS
    violations = [
        FieldViolation(f"update_mask.paths[{i}]", f"{path!r} cannot be updated; allowed: {', '.join(UPDATABLE_FIELDS)}")
        for i, path in enumerate(paths)
        if path not in UPDATABLE_FIELDS
    ]
    if violations:
        raise InvalidArgument(violations)
    return tuple(dict.fromkeys(paths))


def require_version_number(value: int, path: str = "version_number") -> int:
    """Version numbers start at 1."""
    if value < 1:
        raise InvalidArgument.single(path, "must be 1 or more")
    return value
