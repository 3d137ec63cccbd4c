"""Providers a delivery is sent through (SPEC 7): `log` (default), `webhook` and `smtp` (email).

A provider gets the rendered message (`RenderedMessage`: the delivery's template rendered by the sender) and the
channel's settings, secrets opened. It answers the provider's message id, or raises `SendError`, whose
`retryable` says whether another attempt may succeed (a transient error: the sender retries with backoff) or not
(a permanent one: the delivery fails with the error as its reason).

Every provider receives the delivery's idempotency key and must treat a second send with the same key as the
first one (the webhook passes it as `Idempotency-Key`; SMTP derives the Message-ID from it; the log line carries
it): that is how a send repeated after a crash between "sent" and "marked sent" stays one message. Both network
providers go only where the outbound policy lets them (public addresses unless `OUTBOUND_ALLOWLIST` says
otherwise), to the address that was checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any, Final, Protocol

import aiosmtplib
import orjson
from kalcifer_common.logging import get_logger
from kalcifer_common.outbound_policy import OutboundError, OutboundPolicy, OutboundRefused
from kalcifer_common.templates import RenderedMessage

from kalcifer_scheduler.outbound.client import OutboundClient

_log = get_logger(__name__)

SIGNATURE_HEADER: Final = "X-Kalcifer-Signature"
TIMESTAMP_HEADER: Final = "X-Kalcifer-Timestamp"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
SMTP_IDEMPOTENCY_HEADER: Final = "X-Kalcifer-Idempotency-Key"
_SMTP_PORTS: Final = {"starttls": 587, "tls": 465, "none": 25}
_SMTP_DEFAULT_TIMEOUT_SECONDS: Final = 10.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send, as the provider sees it: who, on which channel, and the rendered template."""

    delivery_id: str
    tenant_id: str
    channel: str
    participant_id: str
    template_id: str | None
    # What the channel node asked for besides the template: the recipient's contact, its `data`, overrides.
    payload: Mapping[str, Any]
    idempotency_key: str
    attempt: int
    message: RenderedMessage


class SendError(Exception):
    """A send that did not go through; `retryable` says whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Provider(Protocol):
    """Sends one message; returns the provider's message id. Raises SendError."""

    name: str

    async def send(self, message: Outgoing, settings: Mapping[str, Any]) -> str: ...


def _key_digest(message: Outgoing, length: int) -> str:
    return hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:length]


class LogProvider:
    """Writes the message as one structured log line: the default provider, and the one development uses."""

    name = "log"

    async def send(self, message: Outgoing, settings: Mapping[str, Any]) -> str:
        """Log and succeed; the message id derives from the idempotency key, so a repeat has the same id."""
        message_id = "log-" + _key_digest(message, 24)
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
            subject=message.message.subject,
            body=message.message.body,
            html_body_bytes=len(message.message.html_body.encode()),
            payload=dict(message.payload),
        )
        return message_id


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """`X-Kalcifer-Signature`: "sha256=" + hex HMAC-SHA256 under `secret` over `<timestamp>.<body>` (SPEC 7).

    A receiver recomputes it, compares in constant time, and refuses a timestamp too far from its clock (a
    replayed request carries an old one, and the timestamp cannot be changed without the secret)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookProvider:
    """POSTs the message as JSON to `settings.url` (through `OutboundClient`: checked address, deadline, size cap),
    signed with a timestamped HMAC-SHA256 under `settings.secret`."""

    name = "webhook"

    def __init__(self, client: OutboundClient, *, timeout_seconds: float) -> None:
        self._client = client
        self._timeout = timeout_seconds

    async def send(self, message: Outgoing, settings: Mapping[str, Any]) -> str:
        """One POST; 2xx is sent, 429/5xx and network errors may be retried, other statuses are final."""
        url, secret = settings.get("url"), settings.get("secret")
        if not isinstance(url, str) or not url:
            raise SendError("webhook provider has no 'url' setting", retryable=False)
        if not isinstance(secret, str) or not secret:
            raise SendError("webhook provider has no 'secret' setting to sign with", retryable=False)
        body = orjson.dumps(
            {
                "delivery_id": message.delivery_id,
                "tenant_id": message.tenant_id,
                "channel": message.channel,
                "participant_id": message.participant_id,
                "template_id": message.template_id,
                "message": {
                    "subject": message.message.subject,
                    "body": message.message.body,
                    "html_body": message.message.html_body,
                },
                "payload": dict(message.payload),
                "idempotency_key": message.idempotency_key,
                "attempt": message.attempt,
            }
        )
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: webhook_signature(secret, timestamp, body),
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
        return answered[:512] or "webhook-" + _key_digest(message, 24)


class SmtpProvider:
    """Sends an email delivery through the tenant's SMTP server (aiosmtplib), TLS verified by default.

    Settings (`kalcifer_common.channels`): `host`, `from` (required), `port`, `from_name`, `username`/`password`,
    `tls` = starttls (default: STARTTLS is required, not opportunistic) | tls (implicit TLS) | none, `ca_cert` (PEM
    of a private CA to verify against instead of the system's), `timeout_seconds` (10). The server's certificate is
    always verified against `host`. The recipient is the payload's `to`, else the customer's `email`; the node's
    `from_name` and `reply_to` override. The Message-ID derives from the idempotency key (mail systems drop a
    repeated Message-ID), and the key also travels as `X-Kalcifer-Idempotency-Key`.
    """

    name = "smtp"

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy

    async def send(self, message: Outgoing, settings: Mapping[str, Any]) -> str:
        """One SMTP transaction; 4xx answers, timeouts and network errors may be retried; 5xx answers, an
        unverifiable certificate and a refused address are final."""
        host, sender = settings.get("host"), settings.get("from")
        if not isinstance(host, str) or not host or not isinstance(sender, str) or not sender:
            raise SendError("smtp provider needs 'host' and 'from' settings", retryable=False)
        recipient = message.payload.get("to") or message.payload.get("email")
        if not isinstance(recipient, str) or "@" not in recipient:
            raise SendError("email delivery has no recipient address ('to' or the customer's email)", retryable=False)
        mode = str(settings.get("tls") or "starttls")
        port = int(settings.get("port") or _SMTP_PORTS.get(mode, 587))
        timeout = float(settings.get("timeout_seconds") or _SMTP_DEFAULT_TIMEOUT_SECONDS)
        message_id = f"<{_key_digest(message, 32)}@kalcifer>"
        try:
            email = _email(message, settings, sender, recipient, message_id)
        except (ValueError, TypeError) as error:  # e.g. a line break in an address: the same data fails again
            raise SendError(f"the email cannot be built: {error}", retryable=False) from error
        try:
            tls_context = _tls_context(settings)
        except (ssl.SSLError, ValueError) as error:
            raise SendError(f"smtp ca_cert is not usable: {error}", retryable=False) from error
        try:
            async with asyncio.timeout(timeout):
                address = (await self._policy.addresses(host, port))[0]
                await self._transact(email, settings, host, address, port, mode, tls_context, timeout)
        except OutboundRefused as error:
            # Told like any unreachable host (no oracle of the private network); the reason is for the operator.
            _log.warning("smtp host refused by the outbound policy", host=host, reason=str(error))
            raise SendError(f"smtp server unreachable: no answer from {host}", retryable=True) from error
        except OutboundError as error:
            raise SendError(f"smtp host {host}: {error}", retryable=error.retryable) from error
        except TimeoutError as error:
            raise SendError(f"smtp server did not finish within {timeout:g}s", retryable=True) from error
        except ssl.SSLCertVerificationError as error:
            raise SendError(
                f"smtp server's TLS certificate is not trusted: {error.verify_message}", retryable=False
            ) from error
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refusal.code for refusal in error.recipients]
            retryable = all(400 <= code < 500 for code in codes)
            raise SendError(
                f"smtp refused the recipient ({', '.join(map(str, codes))})", retryable=retryable
            ) from error
        except aiosmtplib.SMTPResponseException as error:
            raise SendError(
                f"smtp answered {error.code} {error.message[:200]}", retryable=400 <= error.code < 500
            ) from error
        except aiosmtplib.SMTPNotSupported as error:
            raise SendError(f"smtp server: {error}", retryable=False) from error
        except (aiosmtplib.SMTPException, OSError) as error:
            raise SendError(f"smtp server unreachable: {error}", retryable=True) from error
        return message_id

    async def _transact(
        self,
        email: EmailMessage,
        settings: Mapping[str, Any],
        host: str,
        address: str,
        port: int,
        mode: str,
        tls_context: ssl.SSLContext,
        command_seconds: float,
    ) -> None:
        # Connect to the address the policy checked; TLS then verifies the certificate against `host`. Once the
        # client has the socket, its transport owns it and closes it (closing it here too could close a reused fd).
        sock = await _connected(address, port)
        try:
            client = aiosmtplib.SMTP(
                hostname=host,
                sock=sock,
                use_tls=mode == "tls",
                start_tls=mode == "starttls",
                tls_context=tls_context,
                timeout=command_seconds,
                local_hostname="kalcifer.localdomain",
            )
        except BaseException:
            sock.close()
            raise
        async with client:
            if settings.get("username"):
                await client.login(str(settings["username"]), str(settings.get("password") or ""))
            await client.send_message(email)


def _email(
    message: Outgoing, settings: Mapping[str, Any], sender: str, recipient: str, message_id: str
) -> EmailMessage:
    payload, rendered = message.payload, message.message
    email = EmailMessage()
    display_name = str(payload.get("from_name") or settings.get("from_name") or "")
    email["From"] = formataddr((display_name, sender)) if display_name else sender
    email["To"] = recipient
    email["Subject"] = rendered.subject
    email["Message-ID"] = message_id
    email[SMTP_IDEMPOTENCY_HEADER] = message.idempotency_key
    if payload.get("reply_to"):
        email["Reply-To"] = str(payload["reply_to"])
    if rendered.body or not rendered.html_body:
        email.set_content(rendered.body)
        if rendered.html_body:
            email.add_alternative(rendered.html_body, subtype="html")
    else:
        email.set_content(rendered.html_body, subtype="html")
    return email


def _tls_context(settings: Mapping[str, Any]) -> ssl.SSLContext:
    """Certificates and host names verified: against `ca_cert` when the tenant gave one, else the system's CAs."""
    ca_cert = settings.get("ca_cert")
    if isinstance(ca_cert, str) and ca_cert:
        return ssl.create_default_context(cadata=ca_cert)
    return ssl.create_default_context()


async def _connected(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock
