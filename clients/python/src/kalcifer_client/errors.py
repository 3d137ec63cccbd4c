"""The SDK's one exception hierarchy: a failed call becomes a `KalciferError` subclass chosen by its gRPC status
code, carrying what the server's `google.rpc` details say (`ErrorInfo` reason, `BadRequest` field violations,
`PreconditionFailure`, `RetryInfo`, `ResourceInfo`).

Callers catch what they can act on (`NotFound`, `InvalidArgument` and its `.violations`, `RateLimited` and its
`.retry_after`) and let the rest rise as `KalciferError`. The client has already retried `Unavailable` and
`RateLimited` as its `RetryPolicy` allows before either reaches the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
RATE_LIMITED = "RATE_LIMITED"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One problem with one field of a request (`google.rpc.BadRequest`), e.g. `graph.nodes[2].config.duration`."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class PreconditionViolation:
    """One unmet precondition (`google.rpc.PreconditionFailure`)."""

    type: str
    subject: str
    description: str


class KalciferError(Exception):
    """Root of every error the SDK raises for a failed call; also raised as is for codes without a subclass.

    `code` is the gRPC status code, `message` the server's text, `reason` and `metadata` the `ErrorInfo` (empty
    when the server sent none), `retry_after` the `RetryInfo` delay in seconds (None when absent).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        violations: Iterable[FieldViolation] = (),
        precondition_violations: Iterable[PreconditionViolation] = (),
        resource_type: str = "",
        resource_name: str = "",
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after
        self.violations = tuple(violations)
        self.precondition_violations = tuple(precondition_violations)
        self.resource_type = resource_type
        self.resource_name = resource_name

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later unchanged (the client's RetryPolicy retries these)."""
        return False


class InvalidArgument(KalciferError):
    """INVALID_ARGUMENT: the request is malformed; `violations` names every offending field at once."""


class NotFound(KalciferError):
    """NOT_FOUND: no such resource, or it belongs to another tenant; `resource_type`/`resource_name` say which."""


class AlreadyExists(KalciferError):
    """ALREADY_EXISTS: e.g. the participant already has a live instance of the flow (`reason` ALREADY_IN_FLOW)."""


class FailedPrecondition(KalciferError):
    """FAILED_PRECONDITION: the resource's state refuses the call; `reason` says why (e.g. FLOW_NOT_ACTIVE)."""


class Aborted(KalciferError):
    """ABORTED: a concurrent change won (a stale etag); read the resource again and retry."""


class ResourceExhausted(KalciferError):
    """RESOURCE_EXHAUSTED: a quota or size limit refused the call."""


class RateLimited(ResourceExhausted):
    """RESOURCE_EXHAUSTED with reason RATE_LIMITED: the tenant is over its budget; retry after `retry_after`."""

    @property
    def retryable(self) -> bool:
        """A token comes back after `retry_after`."""
        return True


class Unauthenticated(KalciferError):
    """UNAUTHENTICATED: the API key (or admin token) is missing, malformed, unknown or revoked."""


class PermissionDenied(KalciferError):
    """PERMISSION_DENIED: the credential is valid but may not make this call."""


class Unavailable(KalciferError):
    """UNAVAILABLE: the API or something it depends on cannot answer right now."""

    @property
    def retryable(self) -> bool:
        """Transient by definition."""
        return True


class DeadlineExceeded(KalciferError):
    """DEADLINE_EXCEEDED: the call's deadline passed (retries included) before an answer came."""


class Unimplemented(KalciferError):
    """UNIMPLEMENTED: the server does not offer this method (an older server?)."""


class Internal(KalciferError):
    """INTERNAL, UNKNOWN or DATA_LOSS: a bug on the server's side, not the caller's."""


_CLASSES: dict[grpc.StatusCode, type[KalciferError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNKNOWN: Internal,
    grpc.StatusCode.DATA_LOSS: Internal,
}


def _status_details(trailing_metadata: Any) -> status_pb2.Status | None:
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # noqa: BLE001 - details we cannot read leave the code and message, which suffice
                return None
    return None


def error_from_status(code: grpc.StatusCode, message: str, trailing_metadata: Any = ()) -> KalciferError:
    """The typed error of a status: its class from `code`, its fields from the `google.rpc` details."""
    fields: dict[str, Any] = {}
    violations: list[FieldViolation] = []
    preconditions: list[PreconditionViolation] = []
    status = _status_details(trailing_metadata)
    for packed in status.details if status is not None else ():
        info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        retry, failure = error_details_pb2.RetryInfo(), error_details_pb2.PreconditionFailure()
        resource = error_details_pb2.ResourceInfo()
        if packed.Unpack(info):
            fields["reason"], fields["metadata"] = info.reason, dict(info.metadata)
        elif packed.Unpack(bad_request):
            violations += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
        elif packed.Unpack(retry):
            fields["retry_after"] = retry.retry_delay.ToTimedelta().total_seconds()
        elif packed.Unpack(failure):
            preconditions += [PreconditionViolation(v.type, v.subject, v.description) for v in failure.violations]
        elif packed.Unpack(resource):
            fields["resource_type"], fields["resource_name"] = resource.resource_type, resource.resource_name
    cls = _CLASSES.get(code, KalciferError)
    if cls is ResourceExhausted and fields.get("reason") == RATE_LIMITED:
        cls = RateLimited
    return cls(code, message, violations=violations, precondition_violations=preconditions, **fields)


def error_from_rpc(error: grpc.RpcError) -> KalciferError:
    """The typed error of a failed call (sync `grpc.Call` or `grpc.aio.AioRpcError`)."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error_from_status(error.code(), error.details() or "", error.trailing_metadata())
    if isinstance(error, grpc.Call):
        return error_from_status(error.code(), error.details() or "", error.trailing_metadata())
    return KalciferError(grpc.StatusCode.UNKNOWN, str(error))
