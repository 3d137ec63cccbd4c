"""Deliveries as the API shows them, and what a provider's status report must look like (SPEC 7).

The scheduler is the one writer of a delivery's status (it sends; it applies reports relayed to it): the API only
reads deliveries and checks a report's shape before relaying it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from kalcifer_common.errors import FieldViolation
from kalcifer_common.statuses import DeliveryStatus

# What a provider may report: the statuses after the hand-over to it.
REPORTABLE: Final = (DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.BOUNCED, DeliveryStatus.FAILED)
MAX_PROVIDER_MESSAGE_ID_LENGTH: Final = 512
MAX_REASON_LENGTH: Final = 2000
# How far ahead of our clock a provider's clock may be.
MAX_CLOCK_SKEW: Final = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A stored delivery."""

    id: uuid.UUID
    instance_id: uuid.UUID | None
    node_id: str
    participant_id: str
    channel: str
    template_id: str
    status: str
    provider: str
    provider_message_id: str
    attempts: int
    reason: str
    idempotency_key: str
    send_after: datetime | None
    create_time: datetime
    update_time: datetime
    sent_time: datetime | None
    final_time: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """ListDeliveries' filters, parsed (at least one of instance_id and participant_id)."""

    instance_id: uuid.UUID | None
    participant_id: str | None
    status: str | None
    channel: str | None


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """A provider's report, checked at the edge."""

    delivery_id: uuid.UUID
    status: DeliveryStatus
    provider_message_id: str
    occurred_at: datetime
    reason: str


def report_violations(
    *, status: str | None, provider_message_id: str, occurred_at: datetime, reason: str, now: datetime
) -> list[FieldViolation]:
    """Every problem of a report's fields (besides its delivery id)."""
    found: list[FieldViolation] = []
    if status not in REPORTABLE:
        allowed = ", ".join(f"DELIVERY_STATUS_{value.upper()}" for value in REPORTABLE)
        found.append(FieldViolation("status", f"must be one of {allowed}"))
    if len(provider_message_id) > MAX_PROVIDER_MESSAGE_ID_LENGTH:
        found.append(
            FieldViolation("provider_message_id", f"must be at most {MAX_PROVIDER_MESSAGE_ID_LENGTH} characters")
        )
    elif any(ch in provider_message_id for ch in "\r\n\x00"):
        found.append(FieldViolation("provider_message_id", "must be one line"))
    if len(reason) > MAX_REASON_LENGTH:
        found.append(FieldViolation("reason", f"must be at most {MAX_REASON_LENGTH} characters"))
    if occurred_at > now + MAX_CLOCK_SKEW:
        found.append(FieldViolation("occurred_at", "is more than 5 minutes in the future"))
    return found
