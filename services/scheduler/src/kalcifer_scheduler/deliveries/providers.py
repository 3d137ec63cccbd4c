"""Providers a delivery is sent through (SPEC 7): `log` (default), `webhook` and `smtp` (email).

Every provider receives the delivery's idempotency key and must treat a second send with the same key as the
first one (the webhook passes it as `Idempotency-Key`; the log line carries it): that is how a send repeated
after a crash between "sent" and "marked sent" stays one message.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import smtplib
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

import orjson
from kalcifer_common.logging import get_logger
from kalcifer_common.outbound_policy import OutboundError

from kalcifer_scheduler.outbound.client import OutboundClient

_log = get_logger(__name__)

SIGNATURE_HEADER = "X-Kalcifer-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send, as the provider sees it."""

    delivery_id: str
    tenant_id: str
    channel: str
    participant_id: str
    template_id: str | None
    payload: Mapping[str, Any]
    idempotency_key: str
    attempt: int


class SendError(Exception):
    """A send that did not go through; `retryable` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Provider(Protocol):
    """Sends one message; returns the provider's message id. Raises SendError."""

    name: str

    async def send(self, message: Outgoing, settings: Mapping[str, Any]) -> str: ...


class LogProvider:
    """Writes the message as one structured log line: the default provider, and the one development uses."""

    name = "log"

    async def send(self, message: Outgoing, settings: Mapping[str, Any]) -> str:
        """Log and succeed; the message id derives from the idempotency key, so a repeat has the same id."""
        message_id = "log-" + hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:24]
        _log.info(
            "delivery sent",
            provider=self.name,
            delivery_id=message.delivery_id,
            tenant_id=message.tenant_id,
            channel=message.channel,
            participant_id=message.participant_id,
            template_id=message.template_id,
            idempotency_key=message.idempotency_key,
            attempt=message.attempt,
            provider_message_id=message_id,
            payload=dict(message.payload),
        )
        return message_id


class WebhookProvider:
    """POSTs the message as JSON to `settings.url` (through `OutboundClient`: checked address, deadline, size cap),
    signed with HMAC-SHA256 of the body under `settings.secret`."""

    name = "webhook"

    def __init__(self, client: OutboundClient, *, timeout_seconds: float) -> None:
        self._client = client
        self._timeout = timeout_seconds

    async def send(self, message: Outgoing, settings: Mapping[str, Any]) -> str:
        """One POST; 2xx is sent, 429/5xx and network errors may be retried, other statuses are final."""
        url = settings.get("url")
        if not isinstance(url, str) or not url:
            raise SendError("webhook provider has no 'url' setting", retryable=False)
        body = orjson.dumps(
            {
                "delivery_id": message.delivery_id,
                "tenant_id": message.tenant_id,
                "channel": message.channel,
                "participant_id": message.participant_id,
                "template_id": message.template_id,
                "payload": dict(message.payload),
                "idempotency_key": message.idempotency_key,
            }
        )
        secret = str(settings.get("secret", ""))
        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: f"sha256={signature}",
            IDEMPOTENCY_HEADER: message.idempotency_key,
        }
        try:
            response = await self._client.request(
                "POST", url, headers=headers, content=body, timeout_seconds=self._timeout
            )
        except OutboundError as error:
            raise SendError(f"webhook unreachable: {error}", retryable=error.retryable) from error
        if response.status == 429 or response.status >= 500:
            raise SendError(f"webhook answered {response.status}", retryable=True)
        if response.status >= 300:
            raise SendError(f"webhook answered {response.status}", retryable=False)
        answered = response.headers.get("x-message-id", "")
        return answered or "webhook-" + hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:24]


class SmtpProvider:
    """Sends an email delivery through the tenant's SMTP server.

    Settings: `host`, `port` (25), `from` (required), `username`/`password` (optional), `starttls` (false),
    `timeout_seconds` (10). Payload: `to` (else `email`), `subject` (else the template id), `text` and/or `html`,
    `reply_to`. The Message-ID derives from the idempotency key (mail systems drop a repeated Message-ID), and
    the key also travels as `X-Kalcifer-Idempotency-Key`. smtplib blocks, so the send runs in a worker thread.
    """

    name = "smtp"

    async def send(self, message: Outgoing, settings: Mapping[str, Any]) -> str:
        """One SMTP transaction; 4xx answers and network errors may be retried, 5xx answers are final."""
        host, sender = settings.get("host"), settings.get("from")
        if not isinstance(host, str) or not host or not isinstance(sender, str) or not sender:
            raise SendError("smtp provider needs 'host' and 'from' settings", retryable=False)
        payload = message.payload
        recipient = payload.get("to") or payload.get("email")
        if not isinstance(recipient, str) or "@" not in recipient:
            raise SendError("email delivery has no 'to' address in its payload", retryable=False)
        message_id = f"<{hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:32]}@kalcifer>"
        email = EmailMessage()
        email["From"] = sender
        email["To"] = recipient
        email["Subject"] = str(payload.get("subject") or message.template_id or "")
        email["Message-ID"] = message_id
        email["X-Kalcifer-Idempotency-Key"] = message.idempotency_key
        if payload.get("reply_to"):
            email["Reply-To"] = str(payload["reply_to"])
        email.set_content(str(payload.get("text") or ""))
        if payload.get("html"):
            email.add_alternative(str(payload["html"]), subtype="html")
        try:
            await asyncio.to_thread(_smtp_send, email, dict(settings), host)
        except smtplib.SMTPResponseException as error:
            raise SendError(f"smtp answered {error.smtp_code}", retryable=400 <= error.smtp_code < 500) from error
        except smtplib.SMTPRecipientsRefused as error:
            raise SendError(f"smtp refused the recipient: {error.recipients}", retryable=False) from error
        except (smtplib.SMTPException, OSError) as error:
            raise SendError(f"smtp unreachable: {error}", retryable=True) from error
        return message_id


def _smtp_send(email: EmailMessage, settings: dict[str, Any], host: str) -> None:
    port = int(settings.get("port", 25))
    timeout = float(settings.get("timeout_seconds", 10))
    with smtplib.SMTP(host, port, timeout=timeout) as client:
        if settings.get("starttls"):
            client.starttls()
        if settings.get("username"):
            client.login(str(settings["username"]), str(settings.get("password", "")))
        client.send_message(email)
