"""Flow instances and their execution steps as the API shows them, and the rules for participant ids.

Instances are written only by the engine; the API reads them straight from PostgreSQL (tenant-scoped) and asks
the engine to change them (cancel). Statuses here are the database's lower-case words (`INSTANCE_STATUSES`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from kalcifer_common.errors import FieldViolation
from kalcifer_common.idempotency import MAX_REQUEST_ID_LENGTH

MAX_PARTICIPANT_ID_LENGTH = 256
MAX_EXIT_REASON_LENGTH = 500
# ListStuckInstances: a wait this far past its fire time was missed by the scheduler's sweep (1 s) and by the engine's
# own recovery (RECOVERY_OVERDUE_SECONDS, 30 s); a run this long without a commit outlived recovery's re-run
# (RECOVERY_RUNNING_SECONDS, 60 s) and is what the scheduler's STUCK_RUNNING_SECONDS counts.
DEFAULT_OVERDUE_THRESHOLD = timedelta(seconds=60)
DEFAULT_IDLE_THRESHOLD = timedelta(seconds=300)
MAX_STUCK_THRESHOLD = timedelta(days=3650)


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One participant's trip through one flow version."""

    id: uuid.UUID
    flow_id: uuid.UUID
    version_number: int
    participant_id: str
    status: str
    current_nodes: list[str]
    context: dict[str, Any]
    exit_reason: str
    enter_time: datetime
    end_time: datetime | None


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One execution of one node by one instance; `seq` is the global execution order."""

    id: uuid.UUID
    instance_id: uuid.UUID
    seq: int
    node_id: str
    node_type: str
    version_number: int
    status: str
    input: dict[str, Any]
    output: Any
    error: str
    branch: str
    start_time: datetime
    end_time: datetime | None


@dataclass(frozen=True, slots=True)
class InstanceFilter:
    """ListInstances filters; None means "any"."""

    flow_id: uuid.UUID | None = None
    status: str | None = None
    participant_id: str | None = None


class StuckReason(StrEnum):
    """Why ListStuckInstances lists an instance."""

    WAIT_OVERDUE = "wait_overdue"
    NO_PROGRESS = "no_progress"


@dataclass(frozen=True, slots=True)
class StuckFilter:
    """ListStuckInstances, parsed at the edge: which flow (None: all) and how late counts as stuck."""

    flow_id: uuid.UUID | None
    overdue: timedelta
    idle: timedelta


@dataclass(frozen=True, slots=True)
class StuckRecord:
    """A stuck instance, since when, and (WAIT_OVERDUE) the most overdue of its waits."""

    instance: InstanceRecord
    reason: StuckReason
    since: datetime
    wait_id: uuid.UUID | None
    node_id: str
    wait_kind: str


def stuck_threshold(
    seconds: int, nanos: int, field: str, default: timedelta, violations: list[FieldViolation]
) -> timedelta:
    """A threshold from a Duration's parts: zero means `default`; negative, malformed or beyond
    MAX_STUCK_THRESHOLD is a violation (reported with the request's others; `default` stands in meanwhile)."""
    if seconds < 0 or nanos < 0 or not nanos < 1_000_000_000:
        violations.append(FieldViolation(field, "must be a non-negative duration"))
        return default
    if seconds > MAX_STUCK_THRESHOLD.total_seconds():
        violations.append(FieldViolation(field, f"must be at most {MAX_STUCK_THRESHOLD.days} days"))
        return default
    if seconds == 0 and nanos == 0:
        return default
    return timedelta(seconds=seconds, microseconds=nanos // 1000)


def participant_id_violations(value: str, field: str, *, required: bool = True) -> list[FieldViolation]:
    """Participant ids are the tenant's own strings, kept exactly as given: so they must be non-blank, bounded and
    free of surrounding whitespace (" alice" and "alice" would otherwise be two people that look like one)."""
    if not value:
        return [FieldViolation(field, "is required")] if required else []
    if not value.strip():
        return [FieldViolation(field, "must not be blank")]
    if len(value) > MAX_PARTICIPANT_ID_LENGTH:
        return [FieldViolation(field, f"must be at most {MAX_PARTICIPANT_ID_LENGTH} characters")]
    if value != value.strip():
        return [FieldViolation(field, "must not start or end with whitespace")]
    return []


def exit_reason_violations(value: str, field: str) -> list[FieldViolation]:
    """A cancel reason is stored as the instance's exit_reason: free text, bounded."""
    if len(value) > MAX_EXIT_REASON_LENGTH:
        return [FieldViolation(field, f"must be at most {MAX_EXIT_REASON_LENGTH} characters")]
    return []


def current_node_ids(raw: Any) -> list[str]:
    """The node ids of an instance's `current_nodes` column (a JSON list of ids, or of path objects with a
    `node_id`), tolerating whatever shape the engine's paths take so a read never fails on a live instance."""
    if not isinstance(raw, list):
        return []
    ids: list[str] = []
    for item in raw:
        if isinstance(item, str):
            ids.append(item)
        elif isinstance(item, dict):
            node = item.get("node_id", item.get("id"))
            if isinstance(node, str):
                ids.append(node)
    return ids


def step_branch(output: Any) -> str:
    """The branch key a step returned, as the engine records it in the step's output (`{"branch": "true"}`);
    empty when the node completed without one."""
    if isinstance(output, dict):
        branch = output.get("branch")
        if isinstance(branch, str):
            return branch
    return ""


def id_or_violation(
    value: str, field: str, violations: list[FieldViolation], *, required: bool = True
) -> uuid.UUID | None:
    """Parse a UUID field, recording a violation instead of raising so a request's problems are reported at once."""
    if not value:
        if required:
            violations.append(FieldViolation(field, "is required"))
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        violations.append(FieldViolation(field, f"{value!r} is not a valid id (expected a UUID)"))
        return None


def request_id_violations(value: str, field: str) -> list[FieldViolation]:
    """A request_id is optional and bounded (the same bound `run_once` enforces)."""
    if len(value) > MAX_REQUEST_ID_LENGTH:
        return [FieldViolation(field, f"must be at most {MAX_REQUEST_ID_LENGTH} characters")]
    return []
