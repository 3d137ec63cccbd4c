"""Journeys: a flow plus marketing settings, with their own lifecycle that drives the flow's.

DRAFT -> ACTIVE (launch) <-> PAUSED (pause / resume); ACTIVE or PAUSED -> ARCHIVED (archive, final). Only a
DRAFT journey is edited or deleted. Launching a non-draft is JOURNEY_NOT_DRAFT (as journey.proto says); every
other illegal move is INVALID_TRANSITION.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Final

from kalcifer_common.errors import FailedPrecondition, FieldViolation, InvalidArgument
from kalcifer_common.statuses import JourneyStatus

from kalcifer_api.domain.marketing_settings import MarketingSettings, settings_violations
from kalcifer_api.domain.segments import description_violations, name_violations

JOURNEY_NOT_DRAFT: Final = "JOURNEY_NOT_DRAFT"
INVALID_TRANSITION: Final = "INVALID_TRANSITION"
FLOW_NOT_ACTIVE: Final = "FLOW_NOT_ACTIVE"
# What UpdateJourney may change (the update_mask paths); flow_id too, as long as the journey is a draft.
MUTABLE_FIELDS: Final = (
    "name",
    "description",
    "flow_id",
    "audience_segment_id",
    "entry_schedule",
    "goals",
    "exit_criteria",
    "frequency_cap",
    "quiet_hours",
    "re_entry",
)


class Transition(Enum):
    """A lifecycle RPC: the statuses it starts from and the status it leads to."""

    LAUNCH = ("launch", (JourneyStatus.DRAFT,), JourneyStatus.ACTIVE)
    PAUSE = ("pause", (JourneyStatus.ACTIVE,), JourneyStatus.PAUSED)
    RESUME = ("resume", (JourneyStatus.PAUSED,), JourneyStatus.ACTIVE)
    ARCHIVE = ("archive", (JourneyStatus.ACTIVE, JourneyStatus.PAUSED), JourneyStatus.ARCHIVED)

    def __init__(self, verb: str, sources: tuple[str, ...], target: str) -> None:
        self.verb = verb
        self.sources = sources
        self.target = target


@dataclass(frozen=True, slots=True)
class JourneyDraft:
    """The user-editable part of a journey, validated."""

    name: str
    description: str
    flow_id: uuid.UUID | None
    settings: MarketingSettings


@dataclass(frozen=True, slots=True)
class JourneyRecord:
    """A stored journey."""

    id: uuid.UUID
    name: str
    description: str
    flow_id: uuid.UUID
    status: str
    settings: MarketingSettings
    revision: int
    create_time: datetime
    update_time: datetime


def validated_draft(
    *,
    name: str,
    description: str,
    flow_id: uuid.UUID | None,
    settings: MarketingSettings,
    fields: frozenset[str] | None = None,
    violations: list[FieldViolation] | None = None,
) -> JourneyDraft:
    """Check the fields being written (all by default) plus any violations the wire mapper already found."""
    found = list(violations or [])
    checked = frozenset(MUTABLE_FIELDS) if fields is None else fields
    if "name" in checked:
        found += name_violations(name)
    if "description" in checked:
        found += description_violations(description)
    if "flow_id" in checked and flow_id is None and not any(v.field == "flow_id" for v in found):
        found.append(FieldViolation("flow_id", "is required"))
    found += settings_violations(settings, checked)
    if found:
        raise InvalidArgument(found)
    return JourneyDraft(name=name.strip(), description=description, flow_id=flow_id, settings=settings)


def require_draft(journey_id: uuid.UUID, status: str, action: str) -> None:
    """FAILED_PRECONDITION JOURNEY_NOT_DRAFT unless the journey is still a draft."""
    if status != JourneyStatus.DRAFT:
        raise FailedPrecondition(
            JOURNEY_NOT_DRAFT,
            f"cannot {action} journey {journey_id} in status {status.upper()}; only a DRAFT journey can be",
            metadata={"journey_id": str(journey_id), "status": status.upper()},
        )


def require_transition(journey_id: uuid.UUID, status: str, transition: Transition) -> None:
    """FAILED_PRECONDITION when `transition` cannot start from `status` (JOURNEY_NOT_DRAFT for a launch)."""
    if status in transition.sources:
        return
    if transition is Transition.LAUNCH:
        require_draft(journey_id, status, "launch")
    allowed = " or ".join(source.upper() for source in transition.sources)
    raise FailedPrecondition(
        INVALID_TRANSITION,
        f"cannot {transition.verb} journey {journey_id} in status {status.upper()}; only a {allowed} journey can be",
        metadata={"journey_id": str(journey_id), "status": status.upper()},
    )
