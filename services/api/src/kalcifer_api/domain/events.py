"""Participant events: what a valid event is, and what storing one (deduplicated by request_id) yields.

An event is stored first and routed second (resume waiting instances, start event-triggered flows): once the
row is committed it cannot be lost. The engine marks the row routed (`routed_time`) in the transaction that
routes it and routes each event id once, so a retry with the same request_id after a failed route routes the
stored event instead of dropping it, and a retry after a successful one is answered without routing anything.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kalcifer_common.errors import FieldViolation

MAX_EVENT_TYPE_LENGTH = 200
MAX_BATCH_EVENTS = 1000
# Event types are matched literally against `event_entry` / `wait_for_event` configs: no whitespace or control
# characters that would make two types look alike ("order_placed", "email.opened", "billing:invoice/paid").
EVENT_TYPE_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]*")


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A validated event to store; `occurred_at` None means "now" (server time)."""

    participant_id: str
    event_type: str
    data: dict[str, Any]
    occurred_at: datetime | None
    request_id: str | None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """The stored row an ingested event maps to.

    `deduplicated` is True when its request_id had been stored before (by an earlier call, or earlier in the same
    batch): the row is the first one and nothing was written now. `routed` is True once the engine has routed it.
    """

    id: uuid.UUID
    participant_id: str
    event_type: str
    data: dict[str, Any]
    occurred_at: datetime
    deduplicated: bool
    routed: bool

    @property
    def needs_routing(self) -> bool:
        """New events, and stored ones whose routing never completed (the first call failed after storing)."""
        return not (self.deduplicated and self.routed)


def event_type_violations(value: str, field: str) -> list[FieldViolation]:
    """Required, bounded, and a single token."""
    if not value:
        return [FieldViolation(field, "is required")]
    if len(value) > MAX_EVENT_TYPE_LENGTH:
        return [FieldViolation(field, f"must be at most {MAX_EVENT_TYPE_LENGTH} characters")]
    if not EVENT_TYPE_PATTERN.fullmatch(value):
        return [
            FieldViolation(
                field,
                f"{value!r} is not an event type (letters, digits and '_' '.' ':' '/' '-', starting with a letter, "
                "digit or '_')",
            )
        ]
    return []


def batch_size_violations(count: int, field: str) -> list[FieldViolation]:
    """A batch holds 1 to MAX_BATCH_EVENTS events."""
    if count == 0:
        return [FieldViolation(field, "must hold at least one event")]
    if count > MAX_BATCH_EVENTS:
        return [FieldViolation(field, f"holds {count} events; at most {MAX_BATCH_EVENTS} are allowed per batch")]
    return []


def same_event(stored: StoredEvent, new: NewEvent) -> bool:
    """Whether a retry carries the event its request_id first stored (the time is not compared: an unset
    `occurred_at` means "now", which differs on every retry)."""
    return (stored.participant_id, stored.event_type, stored.data) == (new.participant_id, new.event_type, new.data)
