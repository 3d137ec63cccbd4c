"""Sending one delivery exactly once: claim the row, render its template, send with its idempotency key, mark
the outcome.

The row moves `pending -> sending` in one conditional UPDATE, so of any number of workers and replicas only one
sends it. A row left `sending` by a crash between the send and the mark is claimed again once its lease has
passed and re-sent with the same idempotency key, which the provider deduplicates (see providers.py). Transient
failures go back to `pending` with `send_after` pushed out exponentially, until `max_attempts`, then `failed`;
a permanent one (a template that does not render, a refused address, a 5xx answer) fails the delivery at once
with its reason. Every mark is conditional on `sending`, so a provider's report that overtook the send
(`reports.py`) is never undone.

The template is the tenant's current one, rendered in the scheduler's own expression sandbox (tenant templates are
hostile: a time and memory budget, never this process) over the variables the channel node stored with the
delivery (`kalcifer_common.templates.send_variables`). The channel's provider settings come with their secrets
opened (`kalcifer_common.secrets`); neither is ever logged.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kalcifer_common.channels import secret_context
from kalcifer_common.logging import get_logger
from kalcifer_common.sandbox import ExpressionSandbox, SandboxUnavailable
from kalcifer_common.secrets import SecretBox, SecretKeyMissing, SecretUnreadable
from kalcifer_common.statuses import DeliveryStatus
from kalcifer_common.templates import VARIABLES_KEY, RenderedMessage, TemplateRenderError, render_message
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kalcifer_scheduler.deliveries.providers import LogProvider, Outgoing, Provider, SendError
from kalcifer_scheduler.stats import SchedulerStats

_log = get_logger(__name__)

_CLAIM = text(
    """
    WITH claimed AS (
        UPDATE deliveries d
        SET status = 'sending', attempts = d.attempts + 1, update_time = now()
        WHERE d.id = :id AND (
            (d.status = 'pending' AND (d.send_after IS NULL OR d.send_after <= now()))
            OR (d.status = 'sending' AND d.update_time < now() - make_interval(secs => :lease))
        )
        RETURNING d.id, d.tenant_id, d.channel, d.participant_id, d.template_id, d.payload, d.idempotency_key,
            d.attempts
    )
    SELECT c.*, p.provider, p.settings AS provider_settings, p.secrets AS provider_secrets,
        t.id IS NOT NULL AS template_found, t.channel AS template_channel, t.subject AS template_subject,
        t.body AS template_body, t.html_body AS template_html_body
    FROM claimed c
    LEFT JOIN provider_configs p ON p.tenant_id = c.tenant_id AND p.channel = c.channel
    LEFT JOIN templates t ON t.tenant_id = c.tenant_id AND t.id = c.template_id
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
    UPDATE deliveries SET status = 'failed', update_time = now(), final_time = now(), provider = :provider,
        last_error = :error
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
        templates: ExpressionSandbox,
        secrets: SecretBox,
        stats: SchedulerStats,
        lease_seconds: float,
        max_attempts: int,
        backoff_seconds: float,
    ) -> None:
        self._db = db
        self._providers = dict(providers)
        self._templates = templates
        self._secrets = secrets
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
        try:
            if provider is None:
                raise SendError(f"provider {provider_name!r} is not available in this scheduler", retryable=False)
            payload = dict(row.payload or {})
            variables = payload.pop(VARIABLES_KEY, None)
            message = Outgoing(
                delivery_id=str(row.id),
                tenant_id=str(row.tenant_id),
                channel=row.channel,
                participant_id=row.participant_id,
                template_id=row.template_id,
                payload=payload,
                idempotency_key=row.idempotency_key,
                attempt=row.attempts,
                message=await self._rendered(row, payload, variables),
            )
            message_id = await provider.send(message, self._settings(row))
        except SendError as error:
            return await self._failed(key, provider_name, row.attempts, error)
        async with self._db.begin() as connection:
            await connection.execute(_MARK_SENT, {"id": key, "provider": provider_name, "message_id": message_id})
        self._stats.delivery_sent(DeliveryStatus.SENT)
        return SendOutcome("sent", row.attempts)

    async def _failed(self, key: uuid.UUID, provider: str, attempt: int, error: SendError) -> SendOutcome:
        params = {"id": key, "provider": provider, "error": str(error)[:2000]}
        async with self._db.begin() as connection:
            if error.retryable and attempt < self._max_attempts:
                delay = self.backoff(attempt)
                retry_at = (await connection.execute(_MARK_RETRY, params | {"delay": delay})).scalar_one_or_none()
                self._stats.delivery_sent(DeliveryStatus.PENDING)
                _log.warning("delivery retry", delivery_id=str(key), attempt=attempt, retry_in=delay, error=str(error))
                return SendOutcome("retry", attempt, retry_at)
            await connection.execute(_MARK_FAILED, params)
        self._stats.delivery_sent(DeliveryStatus.FAILED)
        _log.error("delivery failed", delivery_id=str(key), attempt=attempt, error=str(error))
        return SendOutcome("failed", attempt)

    async def _rendered(self, row: Any, payload: Mapping[str, Any], variables: Any) -> RenderedMessage:
        """The delivery's template rendered over its variables (a node's `subject` overrides the template's)."""
        if row.template_id is None:
            # Not made by a channel node (they always name a template): its payload's text goes as it is.
            return RenderedMessage(
                subject=str(payload.get("subject") or ""),
                body=str(payload.get("text") or ""),
                html_body=str(payload.get("html") or ""),
            )
        if not row.template_found:
            raise SendError(f"template {row.template_id!r} does not exist (it was deleted)", retryable=False)
        if row.template_channel != row.channel:
            raise SendError(
                f"template {row.template_id!r} is for {row.template_channel}, not {row.channel}", retryable=False
            )
        if not isinstance(variables, Mapping):
            # A delivery from before templates were rendered: what its payload knows.
            variables = {"participant_id": row.participant_id, "data": payload.get("data") or {}, **payload}
        parts = {
            "subject": str(payload.get("subject") or row.template_subject),
            "body": row.template_body,
            "html_body": row.template_html_body,
        }
        try:
            return await render_message(self._templates, parts, variables)
        except TemplateRenderError as error:
            raise SendError(f"template {row.template_id!r} {error}", retryable=False) from error
        except SandboxUnavailable as error:
            raise SendError(f"templates cannot be rendered right now: {error}", retryable=True) from error

    def _settings(self, row: Any) -> dict[str, Any]:
        """The channel's provider settings with its secrets opened (a secret that does not open is worth retrying:
        the operator may be fixing KALCIFER_SECRET_KEY / KALCIFER_PREVIOUS_SECRET_KEYS)."""
        settings = dict(row.provider_settings or {})
        for name, sealed in (row.provider_secrets or {}).items():
            try:
                settings[name] = self._secrets.open(
                    str(sealed), context=secret_context(str(row.tenant_id), row.channel, name)
                )
            except (SecretKeyMissing, SecretUnreadable) as error:
                raise SendError(f"the provider's secret {name!r} cannot be opened: {error}", retryable=True) from error
        return settings

    def backoff(self, attempt: int) -> float:
        """Seconds before attempt `attempt + 1`: doubling from `backoff_seconds`, capped at one hour."""
        return float(min(self._backoff * 2 ** (attempt - 1), timedelta(hours=1).total_seconds()))
