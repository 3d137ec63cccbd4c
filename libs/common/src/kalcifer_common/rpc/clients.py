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


# Every replica behind an address gets calls: gRPC's default policy (pick_first) would send all of a process's
# calls to the first address a name resolves to, so a scaled-out engine or scheduler would idle but for one.
# With round_robin the channel connects to every address the name resolves to (`dns:///engine:4510`: each
# container of a compose service; `ipv4:127.0.0.1:4510,127.0.0.1:4511`: a fixed list) and spreads calls over those
# that answer, skipping a replica that is gone. Servers close connections after a while (`rpc.server`), so the name
# is resolved again and replicas added later get calls too.
LOAD_BALANCING_POLICY = "round_robin"


def internal_channel(
    address: str, *, token: str, timeout_seconds: float = 10.0, tls: TlsFiles | None = None
) -> grpc.aio.Channel:
    """An aio channel to another Kalcifer service (mutual TLS when `tls` is given), balanced over every replica
    `address` resolves to; create it inside the running event loop."""
    interceptors = cast(Any, [*tracing.client_interceptors(), _InternalTokenInterceptor(token, timeout_seconds)])
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.lb_policy_name", LOAD_BALANCING_POLICY),
    ]
    if tls is None:
        return grpc.aio.insecure_channel(address, interceptors=interceptors, options=options)
    return grpc.aio.secure_channel(address, tls.channel_credentials(), interceptors=interceptors, options=options)
