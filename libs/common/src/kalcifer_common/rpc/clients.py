"""Channels between Kalcifer services: every call carries the internal token, a deadline and, when tracing, the
caller's trace context (`tracing`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import grpc

from kalcifer_common import tracing
from kalcifer_common.rpc.tls import TlsFiles

if TYPE_CHECKING:
    _ClientInterceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
else:  # the runtime class is not generic
    _ClientInterceptor = grpc.aio.UnaryUnaryClientInterceptor


class _InternalTokenInterceptor(_ClientInterceptor):
    """Adds `authorization: Bearer <internal token>` and a default deadline to every unary call."""

    def __init__(self, token: str, timeout_seconds: float) -> None:
        self._metadata = ("authorization", f"Bearer {token}")
        self._timeout = timeout_seconds

    async def intercept_unary_unary(
        self, continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        metadata = list(client_call_details.metadata or [])
        metadata.append(self._metadata)
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=client_call_details.timeout if client_call_details.timeout is not None else self._timeout,
            metadata=grpc.aio.Metadata(*metadata),
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


def internal_channel(
    address: str, *, token: str, timeout_seconds: float = 10.0, tls: TlsFiles | None = None
) -> grpc.aio.Channel:
    """An aio channel to another Kalcifer service (mutual TLS when `tls` is given); create it inside the running
    event loop."""
    interceptors = cast(Any, [*tracing.client_interceptors(), _InternalTokenInterceptor(token, timeout_seconds)])
    options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
    if tls is None:
        return grpc.aio.insecure_channel(address, interceptors=interceptors, options=options)
    return grpc.aio.secure_channel(address, tls.channel_credentials(), interceptors=interceptors, options=options)
