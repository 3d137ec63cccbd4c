"""`request_id` replay (AIP-155) of the engine's mutating RPCs, inside the transactions the runtime opens.

The servicer describes the call (`Replay`: the RPC, its request, its response type) and how to answer; the
runtime operation decides when the answer is remembered: in the transaction of the change it answers (StartInstance),
or after the last of several transactions (MigrateInstances). The records themselves are
`kalcifer_common.idempotency`'s, scoped by tenant.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message
from kalcifer_common.idempotency import run_once, stored_answer
from sqlalchemy.ext.asyncio import AsyncConnection

_R = TypeVar("_R", bound=Message)


@dataclass(frozen=True)
class Replay(Generic[_R]):
    """One call as its `request_id` record knows it: the full RPC method name, the request, the response type."""

    method: str
    request: Message
    response_type: type[_R]

    async def once(self, conn: AsyncConnection, scope: str, compute: Callable[[], Awaitable[_R]]) -> _R:
        """`compute()`'s answer, remembered in `conn`'s transaction; or the answer an earlier call remembered."""
        return await run_once(
            conn,
            scope=scope,
            method=self.method,
            request=self.request,
            response_type=self.response_type,
            compute=compute,
        )

    async def stored(self, conn: AsyncConnection, scope: str) -> _R | None:
        """The answer an earlier call with this `request_id` remembered, without reserving anything."""
        return await stored_answer(
            conn, scope=scope, method=self.method, request=self.request, response_type=self.response_type
        )
