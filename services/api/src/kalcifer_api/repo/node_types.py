"""Node type calls need no table of the API's own (the engine stores them); this gives them `request_id` replay.

The idempotency record is written in a short transaction of the API's once the engine has answered (none is
open while the engine is asked), so a retry after a lost answer may reach the engine again; that is harmless
because the engine's operations are idempotent in effect (re-registering a key stores the same definition; a
second delete of the same key finds nothing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message

from kalcifer_api.repo.marketing_base import IdempotentRepository, Reply

_Response = TypeVar("_Response", bound=Message)


class NodeTypeCalls(IdempotentRepository):
    """Runs a call to the engine once per `request_id` of the calling tenant."""

    async def once(
        self, method: str, request: Message, response_type: type[_Response], call: Callable[[], Awaitable[_Response]]
    ) -> _Response:
        """`call()`'s answer, or the stored answer of an earlier request with the same `request_id` (see
        `IdempotentRepository._call_once`: no transaction is open while the engine is asked)."""
        reply: Reply[_Response, _Response] = Reply(
            method=method, request=request, response_type=response_type, present=lambda answer: answer
        )
        return await self._call_once(reply, call)
