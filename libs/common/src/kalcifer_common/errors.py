"""The one error hierarchy of Kalcifer's domain.

Domain code raises these; `kalcifer_common.rpc.errors` maps each to a gRPC status with `google.rpc` details.
Nothing here knows about gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One problem with one field of a request, e.g. `nodes[3].config.duration`."""

    field: str
    description: str


class KalciferError(Exception):
    """Root of every error the domain raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(KalciferError):
    """The resource does not exist, or belongs to another tenant (never tell which)."""

    def __init__(self, resource_type: str, resource_name: str) -> None:
        super().__init__(f"{resource_type} {resource_name!r} not found")
        self.resource_type = resource_type
        self.resource_name = resource_name


class AlreadyExists(KalciferError):
    """The resource, or a live instance for this participant, already exists."""

    def __init__(self, message: str, *, reason: str = "ALREADY_EXISTS", metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = metadata or {}


class InvalidArgument(KalciferError):
    """The request is malformed; `violations` names every offending field at once."""

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        super().__init__(message or "; ".join(f"{v.field}: {v.description}" for v in violations) or "invalid argument")
        self.violations = violations

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgument:
        """The common case of one bad field."""
        return cls([FieldViolation(field, description)])


class FailedPrecondition(KalciferError):
    """The request is well formed but the resource is not in a state that allows it; `reason` is machine-readable."""

    def __init__(self, reason: str, message: str, *, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = metadata or {}


class EtagMismatch(KalciferError):
    """The caller's etag is stale: someone changed the resource since it was read."""

    def __init__(self, resource_type: str, resource_name: str) -> None:
        super().__init__(f"{resource_type} {resource_name!r} was modified; read it again and retry with the new etag")
        self.resource_type = resource_type
        self.resource_name = resource_name


class ResourceExhausted(KalciferError):
    """A quota, a rate limit or a frequency cap refused the request; `retry_after_seconds` (a rate limit) is when
    a retry may succeed, sent as `google.rpc.RetryInfo`."""

    def __init__(self, reason: str, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_seconds = retry_after_seconds


class Unauthenticated(KalciferError):
    """Missing, malformed, unknown or revoked credentials."""


class Unavailable(KalciferError):
    """A dependency (database, another service) cannot be reached right now; the caller may retry."""


class Relayed(KalciferError):
    """A status another Kalcifer service answered with, passed on to our caller unchanged (code, details)."""

    def __init__(self, code: int, message: str, details: bytes) -> None:
        super().__init__(message)
        self.code = code
        self.details = details
