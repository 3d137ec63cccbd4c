"""Maps the domain's error hierarchy to gRPC statuses with `google.rpc` details.

aio interceptors cannot see a handler's exceptions, so the mapping is applied by `map_errors` on every servicer
class: each RPC method is wrapped, and no exception can leave a handler as `UNKNOWN`. A database failure a retry
can get past (PostgreSQL down or restarting, `kalcifer_common.db.errors`) is `UNAVAILABLE`, not a bug.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, NoReturn, TypeVar, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from kalcifer_common import errors
from kalcifer_common.db.errors import database_unavailable
from kalcifer_common.logging import get_logger

ERROR_DOMAIN = "kalcifer.dev"
WRAPPED_MARKER = "__kalcifer_maps_errors__"

# A status travels in trailing metadata, which gRPC clients refuse over 8 KiB (the soft limit: some calls fail at
# random) or 16 KiB (all fail, and the caller learns nothing but RESOURCE_EXHAUSTED). Messages and violations often
# quote the request (an id that is no UUID, a tag too long), so what they carry is bounded here, whatever the input:
# grpc-message is percent-encoded (up to 3 characters per UTF-8 byte), grpc-status-details-bin is base64 (4/3).
MAX_STATUS_MESSAGE_BYTES = 512
MAX_DETAIL_TEXT_BYTES = 256
MAX_VIOLATIONS_BYTES = 3072

_log = get_logger(__name__)

_CODES: dict[type[errors.KalciferError], int] = {
    errors.NotFound: code_pb2.NOT_FOUND,
    errors.AlreadyExists: code_pb2.ALREADY_EXISTS,
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.EtagMismatch: code_pb2.ABORTED,
    errors.ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    errors.Unauthenticated: code_pb2.UNAUTHENTICATED,
    errors.Unavailable: code_pb2.UNAVAILABLE,
}


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _cut(text: str, limit: int = MAX_DETAIL_TEXT_BYTES) -> str:
    """`text` within `limit` UTF-8 bytes, marked with "..." when it was cut (never inside a character)."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "..."


def _bad_request(violations: list[errors.FieldViolation]) -> error_details_pb2.BadRequest:
    """The violations, each cut, as many as fit in MAX_VIOLATIONS_BYTES, then a count of the ones left out."""
    bad_request = error_details_pb2.BadRequest()
    for index, violation in enumerate(violations):
        item = error_details_pb2.BadRequest.FieldViolation(
            field=_cut(violation.field), description=_cut(violation.description)
        )
        if bad_request.ByteSize() + item.ByteSize() > MAX_VIOLATIONS_BYTES:
            left_out = len(violations) - index
            bad_request.field_violations.add(description=f"{left_out} more violations not shown")
            break
        bad_request.field_violations.append(item)
    return bad_request


def _code_of(error: errors.KalciferError) -> int:
    for cls in type(error).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return int(code_pb2.INTERNAL)


def _details_of(error: errors.KalciferError) -> list[any_pb2.Any]:
    if isinstance(error, errors.InvalidArgument):
        return [_pack(_bad_request(error.violations))]
    if isinstance(error, errors.FailedPrecondition | errors.AlreadyExists):
        metadata = {_cut(key): _cut(value) for key, value in error.metadata.items()}
        return [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata))]
    if isinstance(error, errors.ResourceExhausted):
        details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))]
        if error.retry_after_seconds is not None:
            delay = duration_pb2.Duration()
            delay.FromTimedelta(timedelta(seconds=max(error.retry_after_seconds, 0.001)))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        return details
    if isinstance(error, errors.NotFound | errors.EtagMismatch):
        info = error_details_pb2.ResourceInfo(
            resource_type=error.resource_type, resource_name=_cut(error.resource_name)
        )
        return [_pack(info)]
    if isinstance(error, errors.Unauthenticated):
        return [_pack(error_details_pb2.ErrorInfo(reason="UNAUTHENTICATED", domain=ERROR_DOMAIN))]
    return []


def status_for(error: BaseException) -> grpc.Status:
    """The gRPC status (code, message, `google.rpc` details) that answers `error`."""
    return rpc_status.to_status(status_proto_for(error))


def status_proto_for(error: BaseException) -> status_pb2.Status:
    """The `google.rpc.Status` that answers `error` (what `status_for` sends; a batch answers it per item)."""
    if isinstance(error, errors.Relayed):
        proto = status_pb2.Status.FromString(error.details) if error.details else status_pb2.Status()
        proto.code, proto.message = error.code, _cut(error.message, MAX_STATUS_MESSAGE_BYTES)
    elif isinstance(error, errors.KalciferError):
        proto = status_pb2.Status(
            code=_code_of(error), message=_cut(error.message, MAX_STATUS_MESSAGE_BYTES), details=_details_of(error)
        )
    elif isinstance(error, NotImplementedError):
        proto = status_pb2.Status(code=code_pb2.UNIMPLEMENTED, message="method not implemented yet")
    elif database_unavailable(error):
        proto = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="the database is unavailable right now; retry")
    else:
        # A bug, not bad input: say INTERNAL (never UNKNOWN) and keep the details in our logs, not in the answer.
        info = error_details_pb2.ErrorInfo(reason="INTERNAL_ERROR", domain=ERROR_DOMAIN)
        proto = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error", details=[_pack(info)])
    return proto


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> NoReturn:
    """End the call with the status that answers `error` (code, message and `google.rpc` details)."""
    status = status_for(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


# What a caller may be told when a service it depends on answers with one of these: passed on as is.
_RELAYED_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


def relayed(error: grpc.aio.AioRpcError) -> errors.KalciferError:
    """The domain error for a failed call to another Kalcifer service.

    Answers about the caller's request (bad argument, wrong state, not found, ...) are relayed with their details;
    an unreachable or overloaded dependency is `UNAVAILABLE` (retryable); anything else is a bug of ours.
    """
    details = b""
    for item in cast(Any, error.trailing_metadata()) or ():
        key, value = item
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            details = value
    return _relayed(error.code(), error.details() or "", details)


def relayed_status(serialized: bytes) -> errors.KalciferError:
    """The domain error for one item of a batch answer that failed: a serialized `google.rpc.Status`, judged as
    `relayed` judges a failed call."""
    proto = status_pb2.Status.FromString(serialized)
    code = _CODES_BY_VALUE.get(proto.code, grpc.StatusCode.UNKNOWN)
    return _relayed(code, proto.message, serialized)


_CODES_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def _relayed(code: grpc.StatusCode, message: str, details: bytes) -> errors.KalciferError:
    if code in _RELAYED_CODES:
        return errors.Relayed(code.value[0], message, details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return errors.Unavailable(f"a Kalcifer service is unavailable ({code.name}); retry later")
    return errors.KalciferError(f"internal call failed with {code.name}")


def answerable(error: Exception, method: str) -> BaseException:
    """What answers `error`, raised while serving `method` (a whole call, or one item of a batch): a failed call
    to another service is judged by `relayed`; an unavailable database is logged as a warning, and anything that
    is not a domain error (a bug) with its traceback."""
    if isinstance(error, grpc.aio.AioRpcError):
        return relayed(error)
    if database_unavailable(error):
        _log.warning("database unavailable", method=method, error=repr(error))
    elif not isinstance(error, errors.KalciferError | NotImplementedError):
        _log.error("unhandled error in rpc handler", method=method, exc_info=error)
    return error


_Handler = TypeVar("_Handler", bound=Callable[..., Awaitable[Any]])


def map_errors_of(method: _Handler) -> _Handler:
    """Wrap one unary servicer coroutine so every exception becomes a precise status."""
    if getattr(method, WRAPPED_MARKER, False):
        return method

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as error:  # noqa: BLE001 - the one place that turns any bug into a mapped status
            await abort_with(context, answerable(error, method.__qualname__))

    setattr(wrapper, WRAPPED_MARKER, True)
    return wrapper  # type: ignore[return-value]


_Servicer = TypeVar("_Servicer", bound=type)


def map_errors(cls: _Servicer) -> _Servicer:
    """Class decorator: map errors on every RPC method (names start upper-case), inherited ones included.

    Inherited methods are the generated base class's `UNIMPLEMENTED` stubs; wrapping them turns their
    `NotImplementedError` into a clean `UNIMPLEMENTED` status.
    """
    for name, member in inspect.getmembers(cls, predicate=inspect.isfunction):
        if name[:1].isupper():
            if inspect.iscoroutinefunction(member):
                setattr(cls, name, map_errors_of(member))
            else:
                setattr(cls, name, map_errors_of(_as_coroutine(member)))
    return cls


def _as_coroutine(method: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Any) -> Any:
        return method(self, request, context)

    return wrapper
