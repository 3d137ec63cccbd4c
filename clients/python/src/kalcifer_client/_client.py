"""`KalciferClient`: one channel to the public API and the resources on it."""

from __future__ import annotations

from types import TracebackType
from typing import Self, TypeVar

import grpc
from google.protobuf.message import Message

from kalcifer_client._customers import Customers
from kalcifer_client._events import Events, Triggers
from kalcifer_client._flows import Flows
from kalcifer_client._instances import Instances
from kalcifer_client._tenants import Tenants
from kalcifer_client._transport import DEFAULT_TIMEOUT_SECONDS, Transport
from kalcifer_client.retry import RetryPolicy

_Request = TypeVar("_Request", bound=Message)
_Response = TypeVar("_Response", bound=Message)


class KalciferClient:
    """An async client of Kalcifer's public API (`kalcifer.v1`), for one credential.

    `api_key` is a tenant's raw API key; for `tenants` (TenantService) it is the operator admin token instead.
    Every call carries it as `authorization: Bearer ...`, has a deadline (`timeout` seconds, retries included),
    is retried on `Unavailable` and `RateLimited` as `retry` allows (honouring the server's `RetryInfo`), and
    fails with a `kalcifer_client.errors.KalciferError` subclass. Use it as an async context manager, or `close()`
    it; create it inside the running event loop.

        async with KalciferClient("localhost:4500", api_key) as client:
            flow = await client.flows.create("welcome", graph={"nodes": [...], "edges": [...]})
    """

    def __init__(
        self,
        address: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
    ) -> None:
        """`tls` (or `root_certificates`, PEM) makes the channel TLS; plaintext otherwise."""
        if tls or root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            channel = grpc.aio.secure_channel(address, credentials)
        else:
            channel = grpc.aio.insecure_channel(address)
        self.address = address
        self._transport = Transport(channel, api_key, timeout=timeout, retry=retry or RetryPolicy())
        self.tenants = Tenants(self._transport)
        self.flows = Flows(self._transport)
        self.instances = Instances(self._transport)
        self.triggers = Triggers(self._transport)
        self.events = Events(self._transport)
        self.customers = Customers(self._transport)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel, for stubs of services the client has no resource for (call them through `call`)."""
        return self._transport.channel

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, named as grpc names it
        retry: RetryPolicy | None = None,
    ) -> _Response:
        """Any unary RPC of a stub on `channel`, with this client's credential, deadline, retries and errors.

        `request` gets a fresh `request_id` when it has an empty one (kept across retries).
        """
        return await self._transport.call(method, request, timeout=timeout, retry=retry)

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._transport.channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()
