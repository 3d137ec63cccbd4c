"""Providers a delivery is sent through (SPEC 7): `log` (default) and `webhook`.

Every provider receives the delivery's idempotency key and must treat a second send with the same key as the
first one (the webhook passes it as `Idempotency-Key`; the log line carries it): that is how a send repeated
after a crash between "sent" and "marked sent" stays one message.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson
from kalcifer_common.logging import get_logger

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
    """POSTs the message as JSON to `settings.url`, signed with HMAC-SHA256 of the body under `settings.secret`."""

    name = "webhook"

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

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
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise SendError(f"webhook unreachable: {error}", retryable=True) from error
        if response.status_code == 429 or response.status_code >= 500:
            raise SendError(f"webhook answered {response.status_code}", retryable=True)
        if response.status_code >= 300:
            raise SendError(f"webhook answered {response.status_code}", retryable=False)
        answered = response.headers.get("x-message-id", "")
        return answered or "webhook-" + hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:24]
