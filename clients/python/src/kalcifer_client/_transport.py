"""The one path every call takes: credentials, a deadline, an idempotency key, retries and typed errors."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from kalcifer_client.errors import DeadlineExceeded, KalciferError, error_from_rpc
from kalcifer_client.retry import RetryPolicy

_Request = TypeVar("_Request", bound=Message)
_Response = TypeVar("_Response", bound=Message)

DEFAULT_TIMEOUT_SECONDS = 30.0


class Transport:
    """Calls unary RPCs on one channel as one caller (the bearer token in every call's metadata)."""

    def __init__(self, channel: grpc.aio.Channel, token: str, *, timeout: float, retry: RetryPolicy) -> None:
        self.channel = channel
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.retry = retry

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline, named as grpc names it
        retry: RetryPolicy | None = None,
    ) -> _Response:
        """Call `method` with `request` and return its answer, or raise the `KalciferError` it ended with.

        `timeout` (seconds, default the client's) bounds the whole call, retries and their waits included. A
        request with an empty `request_id` gets a fresh one first, the same for every attempt, so a retry of a
        call whose answer was lost is recognised by the server and applied once.
        """
        policy = retry or self.retry
        _fill_request_id(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeadlineExceeded(grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed")
            try:
                response: _Response = await method(request, metadata=self._metadata, timeout=remaining)
                return response
            except grpc.RpcError as rpc_error:
                error: KalciferError = error_from_rpc(rpc_error)
                cause: BaseException = rpc_error
            if not error.retryable or attempt >= policy.max_attempts:
                raise error from cause
            delay = policy.delay(attempt, error.retry_after)
            if loop.time() + delay >= deadline:
                raise error from cause
            await asyncio.sleep(delay)


def _fill_request_id(request: Any) -> None:
    """Give a request that has a `request_id` (and batches' items) one, unless the caller chose it."""
    fields = request.DESCRIPTOR.fields_by_name
    if "request_id" in fields and not request.request_id:
        request.request_id = str(uuid.uuid4())
    if "events" in fields and fields["events"].message_type is not None:
        for item in request.events:
            _fill_request_id(item)
