"""Sending one delivery exactly once: claim the row, send with its idempotency key, mark the outcome.

The row moves `pending -> sending` in one conditional UPDATE, so of any number of workers and replicas only one
sends it. A row left `sending` by a crash between the send and the mark is claimed again once its lease has
passed and re-sent with the same idempotency key, which the provider deduplicates (see providers.py). Failures
go back to `pending` with `send_after` pushed out exponentially, until `max_attempts`, then `failed`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from kalcifer_common.logging import get_logger
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kalcifer_scheduler.deliveries.providers import LogProvider, Outgoing, Provider, SendError
from kalcifer_scheduler.stats import SchedulerStats

_log = get_logger(__name__)

_CLAIM = text(
    """
    UPDATE deliveries d
    SET status = 'sending', attempts = d.attempts + 1, update_time = now()
    WHERE d.id = :id AND (
        (d.status = 'pending' AND (d.send_after IS NULL OR d.send_after <= now()))
        OR (d.status = 'sending' AND d.update_time < now() - make_interval(secs => :lease))
    )
    RETURNING d.id, d.tenant_id, d.channel, d.participant_id, d.template_id, d.payload, d.idempotency_key,
        d.attempts,
        (SELECT p.provider FROM provider_configs p WHERE p.tenant_id = d.tenant_id AND p.channel = d.channel)
            AS provider,
        (SELECT p.settings FROM provider_configs p WHERE p.tenant_id = d.tenant_id AND p.channel = d.channel)
            AS provider_settings
    """
)

_MARK_SENT = text(
    """
    UPDATE deliveries SET status = 'sent', sent_time = now(), update_time = now(), provider = :provider,
        provider_message_id = :message_id, last_error = NULL
    WHERE id = :id AND status = 'sending'
    """
)

_MARK_RETRY = text(
    """
    UPDATE deliveries SET status = 'pending', update_time = now(), provider = :provider, last_error = :error,
        send_after = now() + make_interval(secs => :delay)
    WHERE id = :id AND status = 'sending'
    RETURNING send_after
    """
)

_MARK_FAILED = text(
    """
    UPDATE deliveries SET status = 'failed', update_time = now(), provider = :provider, last_error = :error
    WHERE id = :id AND status = 'sending'
    """
)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What one send attempt did; `retry_at` is set when the delivery goes back to pending for a later try."""

    status: str
    attempt: int = 0
    retry_at: datetime | None = None


class DeliverySender:
    """Claims, sends and marks one delivery."""

    def __init__(
        self,
        db: AsyncEngine,
        *,
        providers: Mapping[str, Provider],
        stats: SchedulerStats,
        lease_seconds: float,
        max_attempts: int,
        backoff_seconds: float,
    ) -> None:
        self._db = db
        self._providers = dict(providers)
        self._default = self._providers.get("log") or LogProvider()
        self._stats = stats
        self._lease = lease_seconds
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds

    async def send(self, delivery_id: str) -> SendOutcome:
        """Send the delivery if it is due and nobody else holds it; returns what happened."""
        try:
            key = uuid.UUID(delivery_id)
        except ValueError:
            return SendOutcome("skipped")
        async with self._db.begin() as connection:
            row = (await connection.execute(_CLAIM, {"id": key, "lease": self._lease})).first()
        if row is None:
            return SendOutcome("skipped")  # already sent, held by another worker, or not due yet
        provider_name = row.provider or self._default.name
        provider = self._providers.get(provider_name)
        message = Outgoing(
            delivery_id=str(row.id),
            tenant_id=str(row.tenant_id),
            channel=row.channel,
            participant_id=row.participant_id,
            template_id=row.template_id,
            payload=row.payload or {},
            idempotency_key=row.idempotency_key,
            attempt=row.attempts,
        )
        try:
            if provider is None:
                raise SendError(f"provider {provider_name!r} is not available in this scheduler", retryable=False)
            message_id = await provider.send(message, row.provider_settings or {})
        except SendError as error:
            return await self._failed(key, provider_name, row.attempts, error)
        async with self._db.begin() as connection:
            await connection.execute(_MARK_SENT, {"id": key, "provider": provider_name, "message_id": message_id})
        self._stats.deliveries_sent += 1
        return SendOutcome("sent", row.attempts)

    async def _failed(self, key: uuid.UUID, provider: str, attempt: int, error: SendError) -> SendOutcome:
        params = {"id": key, "provider": provider, "error": str(error)[:2000]}
        async with self._db.begin() as connection:
            if error.retryable and attempt < self._max_attempts:
                delay = self.backoff(attempt)
                retry_at = (await connection.execute(_MARK_RETRY, params | {"delay": delay})).scalar_one_or_none()
                self._stats.deliveries_retried += 1
                _log.warning("delivery retry", delivery_id=str(key), attempt=attempt, retry_in=delay, error=str(error))
                return SendOutcome("retry", attempt, retry_at)
            await connection.execute(_MARK_FAILED, params)
        self._stats.deliveries_failed += 1
        _log.error("delivery failed", delivery_id=str(key), attempt=attempt, error=str(error))
        return SendOutcome("failed", attempt)

    def backoff(self, attempt: int) -> float:
        """Seconds before attempt `attempt + 1`: doubling from `backoff_seconds`, capped at one hour."""
        return float(min(self._backoff * 2 ** (attempt - 1), timedelta(hours=1).total_seconds()))
