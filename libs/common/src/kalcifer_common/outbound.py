"""The outbound-call contract between the engine and the scheduler (SPEC 6.10).

A node that calls out (`call_webhook`, a tenant's webhook node type) never does so inside its run: it parks on a
wait of kind `call` whose metadata holds a `CallSpec` (what to send). The scheduler claims the wait, makes the
call (with the wait id as `Idempotency-Key`, retries with backoff, a total deadline and a response size cap) and
resumes the wait with trigger `call` and a `CallAnswer` (what came back) as the resume's data. Both sides read
and write these shapes only through this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

# The resume trigger of a call wait, and the key of its spec in the wait's metadata.
CALL_TRIGGER: Final = "call"
SPEC_KEY: Final = "call"
METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
# The longest total deadline a call may ask for (every attempt and backoff included).
MAX_DEADLINE_SECONDS: Final = 30.0


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One HTTP call to make: `body` is JSON (None sends no body); `https_only` (webhook node types) refuses plain
    http unless the destination is in OUTBOUND_ALLOWLIST."""

    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    deadline_seconds: float = 10.0
    https_only: bool = False

    def to_json(self) -> dict[str, Any]:
        """As stored in the wait's metadata."""
        return {
            "url": self.url,
            "method": self.method,
            "headers": dict(self.headers),
            "body": self.body,
            "deadline_seconds": self.deadline_seconds,
            "https_only": self.https_only,
        }

    @classmethod
    def from_json(cls, value: object) -> CallSpec:
        """Read a stored spec; raises `ValueError` saying what is wrong with it."""
        if not isinstance(value, Mapping):
            raise ValueError("the call spec is not an object")
        url, method, headers = value.get("url"), value.get("method", "POST"), value.get("headers") or {}
        deadline = value.get("deadline_seconds", 10.0)
        if not isinstance(url, str) or not url:
            raise ValueError("the call spec has no url")
        if method not in METHODS:
            raise ValueError(f"the call spec's method {method!r} is not one of {', '.join(METHODS)}")
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("the call spec's headers must map strings to strings")
        if not isinstance(deadline, int | float) or not 0 < deadline <= MAX_DEADLINE_SECONDS:
            raise ValueError(f"the call spec's deadline must be in (0, {MAX_DEADLINE_SECONDS:g}] seconds")
        return cls(url, method, dict(headers), value.get("body"), float(deadline), value.get("https_only") is True)


@dataclass(frozen=True, slots=True)
class CallAnswer:
    """What a call came to: a 2xx answer (`ok`, its status and raw body) or, after every attempt, why it failed."""

    ok: bool
    status: int = 0
    body: bytes = b""
    error: str = ""
    attempts: int = 1

    def to_data(self) -> dict[str, Any]:
        """The resume's `data` (a protobuf Struct: the body travels as text so its numbers stay exact)."""
        return {
            "ok": self.ok,
            "status": self.status,
            "body_text": self.body.decode("utf-8", errors="replace"),
            "error": self.error,
            "attempts": self.attempts,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> CallAnswer:
        """Read a resume's `data` back (missing fields are a failed call)."""
        status, attempts = data.get("status", 0), data.get("attempts", 1)
        return cls(
            ok=data.get("ok") is True,
            status=int(status) if isinstance(status, int | float) else 0,
            body=str(data.get("body_text", "")).encode(),
            error=str(data.get("error") or ""),
            attempts=int(attempts) if isinstance(attempts, int | float) else 1,
        )

    def json_body(self) -> Any:
        """The body as JSON (None when empty); raises `ValueError` when it is not JSON."""
        if not self.body.strip():
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"the answer is not JSON: {error}") from error
