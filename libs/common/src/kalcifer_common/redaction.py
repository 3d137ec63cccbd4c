"""What logs never show (SPEC 10): secrets are replaced, contacts are masked, in every log line of every process.

`redact_event` is a structlog processor (installed by `logging.configure_logging`), so a value logged under a
sensitive key — a password, a token, an `authorization` header, an API key — is `[redacted]` wherever it sits in
the event (nested dicts and lists included), and an email address or phone number under a contact key keeps only
enough to recognise it (`a***@example.com`, `***4567`). Keys are matched case-insensitively, by name and by
fragment (`smtp_password`, `X-Api-Key`).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, Final

REDACTED: Final = "[redacted]"
_SECRET_FRAGMENTS: Final = ("password", "secret", "token", "authorization", "api_key", "apikey", "api-key", "cookie")
_SECRET_NAMES: Final = frozenset({"raw_key", "key_hash", "private_key", "signature", "x-kalcifer-signature"})
_CONTACT_NAMES: Final = frozenset({"email", "phone", "to", "reply_to", "from", "recipient"})
_UNTOUCHED: Final = frozenset({"event", "level", "logger", "timestamp", "service"})
_MAX_DEPTH: Final = 8


def _secret(key: str) -> bool:
    name = key.lower()
    return name in _SECRET_NAMES or any(fragment in name for fragment in _SECRET_FRAGMENTS)


def mask_contact(value: str) -> str:
    """`ada@example.com` -> `a***@example.com`; `+33612345678` -> `***5678`; anything else -> `***`."""
    local, at, domain = value.partition("@")
    if at and local and domain:
        return f"{local[0]}***@{domain}"
    digits = [c for c in value if c.isdigit()]
    return "***" + "".join(digits[-4:]) if len(digits) >= 6 else "***"


def redact(value: Any, key: str = "", depth: int = 0) -> Any:
    """`value` (logged under `key`) with every secret replaced and every contact masked; containers are copied."""
    if key and _secret(key):
        return REDACTED
    if depth >= _MAX_DEPTH:
        return "[nested too deep to log]"
    if isinstance(value, Mapping):
        return {k: redact(v, str(k), depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item, key, depth + 1) for item in value]
    if isinstance(value, str) and key.lower() in _CONTACT_NAMES:
        return mask_contact(value)
    return value


def redact_event(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: `redact` every field of the event but its message and bookkeeping."""
    for key in list(event):
        if key not in _UNTOUCHED:
            event[key] = redact(event[key], key)
    return event
