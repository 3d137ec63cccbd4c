"""Channels and the providers that send on them (SPEC 7): which settings each provider takes, and which are secret.

One definition for the API, which validates `ChannelService.SetChannelProvider` against it and seals the secret
settings (`kalcifer_common.secrets`), and for the scheduler, which sends with the settings as stored. A secret
setting is write-only: it is stored sealed in `provider_configs.secrets`, never returned and never logged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from kalcifer_common.errors import FieldViolation

# What a delivery, a template or a provider configuration may name as its channel.
CHANNELS: Final = ("email", "sms", "push", "whatsapp", "in_app", "webhook")
# Providers a channel may send through; a channel nobody configured sends through `log`.
PROVIDERS: Final = ("log", "webhook", "smtp")
DEFAULT_PROVIDER: Final = "log"

MAX_SETTING_LENGTH: Final = 2048
MAX_CERTIFICATE_LENGTH: Final = 64 * 1024
MIN_WEBHOOK_SECRET_LENGTH: Final = 16
SMTP_TLS_MODES: Final = ("starttls", "tls", "none")

_EMAIL = re.compile(r"[^@\s<>]+@[^@\s<>]+")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of a provider: its JSON kind, whether it is required, whether it is secret (write-only)."""

    name: str
    kind: Literal["string", "integer", "number"]
    description: str
    required: bool = False
    secret: bool = False
    max_length: int = MAX_SETTING_LENGTH
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProviderDefinition:
    """A provider: the channels it can send on and the settings it takes."""

    name: str
    channels: tuple[str, ...]
    settings: tuple[Setting, ...]

    def setting(self, name: str) -> Setting | None:
        """The setting called `name`, if the provider has one."""
        return next((setting for setting in self.settings if setting.name == name), None)

    @property
    def secret_names(self) -> frozenset[str]:
        """Names of the write-only settings."""
        return frozenset(setting.name for setting in self.settings if setting.secret)


PROVIDER_DEFINITIONS: Final[Mapping[str, ProviderDefinition]] = {
    "log": ProviderDefinition("log", CHANNELS, ()),
    "webhook": ProviderDefinition(
        "webhook",
        CHANNELS,
        (
            Setting("url", "string", "The http(s) URL each message is POSTed to as JSON.", required=True),
            Setting(
                "secret",
                "string",
                f"The HMAC-SHA256 key of X-Kalcifer-Signature; at least {MIN_WEBHOOK_SECRET_LENGTH} characters.",
                required=True,
                secret=True,
            ),
        ),
    ),
    "smtp": ProviderDefinition(
        "smtp",
        ("email",),
        (
            Setting("host", "string", "The SMTP server's host name (its TLS certificate must name it).", required=True),
            Setting(
                "port",
                "integer",
                "The SMTP port: 587 (starttls), 465 (tls) or 25 (none) by default.",
                minimum=1,
                maximum=65535,
            ),
            Setting("from", "string", "The sender's address.", required=True),
            Setting("from_name", "string", "The sender's display name (a send_email node may override it)."),
            Setting("username", "string", "The login, when the server requires one."),
            Setting("password", "string", "The password of `username`.", secret=True),
            Setting(
                "tls",
                "string",
                "starttls (default), tls (implicit TLS) or none (only to a relay on a trusted network); the "
                "server's certificate is always verified.",
                choices=SMTP_TLS_MODES,
            ),
            Setting(
                "ca_cert",
                "string",
                "PEM certificate(s) of the CA to verify the server against, instead of the system's CAs.",
                max_length=MAX_CERTIFICATE_LENGTH,
            ),
            Setting(
                "timeout_seconds", "number", "Deadline of one SMTP transaction (default 10).", minimum=1, maximum=60
            ),
        ),
    ),
}


def provider_violations(
    channel: str, provider: str, settings: Mapping[str, Any], *, stored_secrets: frozenset[str] = frozenset()
) -> list[FieldViolation]:
    """Every problem of a provider configuration, each naming its field (`settings.url`, ...).

    A required secret may be left out when it is among `stored_secrets` (the secrets kept from the stored
    configuration of the same provider).
    """
    found: list[FieldViolation] = []
    if channel not in CHANNELS:
        found.append(FieldViolation("channel", f"{channel!r} is not a channel (one of {', '.join(CHANNELS)})"))
    definition = PROVIDER_DEFINITIONS.get(provider)
    if definition is None:
        found.append(FieldViolation("provider", f"{provider!r} is not a provider (one of {', '.join(PROVIDERS)})"))
        return found
    if channel in CHANNELS and channel not in definition.channels:
        found.append(
            FieldViolation("provider", f"{provider} sends on {', '.join(definition.channels)} only, not {channel}")
        )
    for name, value in settings.items():
        setting = definition.setting(name)
        if setting is None:
            known = ", ".join(s.name for s in definition.settings) or "none"
            found.append(FieldViolation(f"settings.{name}", f"is not a setting of {provider} (its settings: {known})"))
            continue
        if value is None and setting.secret:
            continue  # null removes a stored secret
        problem = _value_problem(setting, value)
        if problem:
            found.append(FieldViolation(f"settings.{name}", problem))
    for setting in definition.settings:
        given = settings.get(setting.name)
        kept = setting.secret and setting.name in stored_secrets and setting.name not in settings
        if setting.required and given in (None, "") and not kept:
            found.append(FieldViolation(f"settings.{setting.name}", f"is required by {provider}"))
    found.extend(_cross_field_violations(provider, settings, stored_secrets))
    return found


def _value_problem(setting: Setting, value: Any) -> str | None:
    if setting.kind == "string":
        if not isinstance(value, str):
            return "must be a string"
        if len(value) > setting.max_length:
            return f"must be at most {setting.max_length} characters"
        if setting.choices and value not in setting.choices:
            return f"must be one of {', '.join(setting.choices)}"
        return _string_problem(setting.name, value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a {setting.kind}"
    if setting.kind == "integer" and value != int(value):
        return "must be a whole number"
    if setting.minimum is not None and value < setting.minimum:
        return f"must be at least {setting.minimum:g}"
    if setting.maximum is not None and value > setting.maximum:
        return f"must be at most {setting.maximum:g}"
    return None


def _string_problem(name: str, value: str) -> str | None:
    if any(ch in value for ch in "\r\n\x00") and name != "ca_cert":
        return "must be one line"
    if name == "url":
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            return "is not a URL"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "must be an http:// or https:// URL"
    if name == "secret" and len(value) < MIN_WEBHOOK_SECRET_LENGTH:
        return f"must be at least {MIN_WEBHOOK_SECRET_LENGTH} characters"
    if name == "host" and not _HOST.fullmatch(value):
        return "is not a host name or address"
    if name == "from" and not _EMAIL.fullmatch(value):
        return "is not an email address"
    if name == "ca_cert" and "-----BEGIN CERTIFICATE-----" not in value:
        return "must hold PEM certificates (-----BEGIN CERTIFICATE-----)"
    return None


def _cross_field_violations(
    provider: str, settings: Mapping[str, Any], stored_secrets: frozenset[str]
) -> list[FieldViolation]:
    if provider != "smtp" or settings.get("tls") != "none":
        return []
    has_password = settings.get("password") not in (None, "") or (
        "password" in stored_secrets and "password" not in settings
    )
    if settings.get("username") or has_password:
        return [FieldViolation("settings.tls", "none would send the login in clear text; use starttls or tls")]
    return []


def split_secrets(provider: str, settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str | None]]:
    """(the plain settings, the secret ones) of a validated configuration; a secret set to null is None."""
    secret_names = PROVIDER_DEFINITIONS[provider].secret_names
    plain = {name: value for name, value in settings.items() if name not in secret_names}
    secrets = {
        name: (None if value is None else str(value)) for name, value in settings.items() if name in secret_names
    }
    return plain, secrets


def secret_context(tenant_id: str, channel: str, name: str) -> str:
    """What a sealed secret is bound to (AES-GCM associated data): moved to another row or name, it does not open."""
    return f"provider_configs/{tenant_id}/{channel}/{name}"
