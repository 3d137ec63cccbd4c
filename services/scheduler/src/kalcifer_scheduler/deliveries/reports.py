"""Providers' status reports (SPEC 7), applied by the scheduler: the one writer of delivery statuses.

The API relays `DeliveryService.ReportDeliveryStatus` here rather than writing the status itself, so the sender
(pending -> sending -> sent / failed) and the reports (-> sent / delivered / bounced / failed) are one writer
under one rule: statuses only move forward, and delivered, bounced and failed are final. The sender's own
statements are conditional on `sending`, so a report that overtook a send is never undone by it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from kalcifer_common.errors import FailedPrecondition, NotFound
from kalcifer_common.statuses import DeliveryStatus
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

INVALID_TRANSITION: Final = "INVALID_TRANSITION"
REPORTABLE: Final = frozenset(
    {DeliveryStatus.SENT, DeliveryStatus.DELIVERED, DeliveryStatus.BOUNCED, DeliveryStatus.FAILED}
)
FINAL: Final = frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.BOUNCED, DeliveryStatus.FAILED})
# Forward is up this ladder; the final statuses share its top rung.
_RANK: Final = {
    DeliveryStatus.PENDING: 0,
    DeliveryStatus.SENDING: 1,
    DeliveryStatus.SENT: 2,
    DeliveryStatus.DELIVERED: 3,
    DeliveryStatus.BOUNCED: 3,
    DeliveryStatus.FAILED: 3,
}

_LOCK = text("SELECT status, attempts FROM deliveries WHERE tenant_id = :tenant AND id = :id FOR UPDATE")

_APPLY = text(
    """
    UPDATE deliveries SET status = :status, update_time = now(),
        provider_message_id = coalesce(provider_message_id, nullif(:message_id, '')),
        sent_time = CASE WHEN :status = 'sent' THEN coalesce(sent_time, :occurred_at) ELSE sent_time END,
        final_time = CASE WHEN :status IN ('delivered', 'bounced', 'failed') THEN :occurred_at ELSE final_time END,
        last_error = CASE WHEN :status IN ('bounced', 'failed') THEN coalesce(nullif(:reason, ''), last_error)
                          ELSE last_error END,
        send_after = NULL
    WHERE tenant_id = :tenant AND id = :id
    """
)


@dataclass(frozen=True, slots=True)
class StatusReport:
    """A provider's report about one delivery of one tenant, checked by the API."""

    tenant_id: uuid.UUID
    delivery_id: uuid.UUID
    status: DeliveryStatus
    provider_message_id: str
    occurred_at: datetime
    reason: str


def refusal(current: DeliveryStatus, reported: DeliveryStatus, attempts: int) -> str | None:
    """Why a delivery in `current` (after `attempts` send attempts) cannot take `reported`; None when it can.

    Forward only; the status it already has is accepted (as a no-op, by the caller); a pending delivery takes a
    report only once a send was attempted (a provider may have taken it although the attempt failed).
    """
    if reported == current:
        return None
    if current in FINAL:
        return f"the delivery is {current}, a final status"
    if _RANK[reported] <= _RANK[current]:
        return f"the delivery is {current}; a report cannot take it back to {reported}"
    if current == DeliveryStatus.PENDING and attempts == 0:
        return "the delivery was never handed to a provider"
    return None


class StatusReports:
    """Applies reports, one transaction each, the delivery's row locked for it."""

    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def apply(self, report: StatusReport) -> tuple[DeliveryStatus, bool]:
        """(the status after the report, whether it changed). Raises `NotFound` (no such delivery of the tenant)
        and `FailedPrecondition` INVALID_TRANSITION (see `refusal`)."""
        key = {"tenant": report.tenant_id, "id": report.delivery_id}
        async with self._db.begin() as connection:
            row = (await connection.execute(_LOCK, key)).first()
            if row is None:
                raise NotFound("delivery", str(report.delivery_id))
            current = DeliveryStatus(row.status)
            why = refusal(current, report.status, row.attempts)
            if why is not None:
                raise FailedPrecondition(
                    INVALID_TRANSITION,
                    f"cannot report delivery {report.delivery_id} {report.status}: {why}",
                    metadata={"delivery_id": str(report.delivery_id), "from": current, "to": report.status},
                )
            if current == report.status:
                return current, False
            await connection.execute(
                _APPLY,
                key
                | {
                    "status": report.status.value,
                    "message_id": report.provider_message_id,
                    "occurred_at": report.occurred_at,
                    "reason": report.reason[:2000],
                },
            )
        return report.status, True
