"""Calling the services through the generated stubs, and reading `google.rpc` details off errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

_Detail = TypeVar("_Detail", bound=Any)


def bearer(token: str) -> tuple[tuple[str, str]]:
    """Call metadata with `authorization: Bearer <token>`."""
    return (("authorization", f"Bearer {token}"),)


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    """Run `call`, which must fail, and return its error."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded but was expected to fail")


def status_of(error: grpc.RpcError) -> status_pb2.Status:
    """The rich status (with details) carried by an error."""
    assert isinstance(error, grpc.Call)
    status: status_pb2.Status | None = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status on {error.code()}: {error.details()}"
    return status


def detail_of(error: grpc.RpcError, detail_type: type[_Detail]) -> _Detail:
    """The first detail of `detail_type` in the error's status."""
    for packed in status_of(error).details:
        detail: _Detail = detail_type()
        if packed.Unpack(detail):
            return detail
    raise AssertionError(f"no {detail_type.__name__} in the error details")


def field_violations(error: grpc.RpcError) -> dict[str, str]:
    """BadRequest field violations as {field: description}."""
    bad_request = detail_of(error, error_details_pb2.BadRequest)
    return {v.field: v.description for v in bad_request.field_violations}


def reason_of(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of an error."""
    return str(detail_of(error, error_details_pb2.ErrorInfo).reason)


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    """The status code a call ends with (OK when it succeeds)."""
    try:
        call()
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK
