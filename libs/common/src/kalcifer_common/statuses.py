"""The stored status values of every lifecycle, once: the database's CHECK constraints, the services' SQL and
the mappers to proto enums all name these members instead of repeating string literals.

Members are `StrEnum`s, so they compare equal to the stored text and bind as plain strings in SQL.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class FlowStatus(StrEnum):
    """flows.status (SPEC 6.8): DRAFT -> ACTIVE <-> PAUSED; ACTIVE or PAUSED -> ARCHIVED (final)."""

    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class FlowVersionStatus(StrEnum):
    """flow_versions.status: a published version that another replaced is SUPERSEDED (shown as ARCHIVED)."""

    DRAFT = "draft"
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    ARCHIVED = "archived"


class JourneyStatus(StrEnum):
    """journeys.status: the same lifecycle as a flow's."""

    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class InstanceStatus(StrEnum):
    """flow_instances.status: RUNNING, WAITING and PAUSED are live; the others are final."""

    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    EXITED = "exited"


LIVE_INSTANCE_STATUSES: Final = (InstanceStatus.RUNNING, InstanceStatus.WAITING, InstanceStatus.PAUSED)
FINAL_INSTANCE_STATUSES: Final = (InstanceStatus.COMPLETED, InstanceStatus.FAILED, InstanceStatus.EXITED)


class StepStatus(StrEnum):
    """execution_steps.status."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    WAITING = "waiting"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class WaitKind(StrEnum):
    """waits.kind: a timer fires at its time; an event wait is resumed by an event (or times out); a call wait is
    resumed with the answer of the outbound call the scheduler makes for it (SPEC 6.10)."""

    TIMER = "timer"
    EVENT = "event"
    CALL = "call"


class WaitStatus(StrEnum):
    """waits.status: PENDING until fired (resumed) or cancelled."""

    PENDING = "pending"
    FIRED = "fired"
    CANCELLED = "cancelled"


class DeliveryStatus(StrEnum):
    """deliveries.status."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"


# Why the engine ended an instance when the API archived its flow.
FLOW_ARCHIVED_EXIT_REASON: Final = "flow_archived"
