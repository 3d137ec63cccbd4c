"""One transaction per mutating call, with `request_id` replay: the shape every marketing-layer write takes.

`run_once` must see the response inside the transaction that holds the write, so the repository opens the
transaction, runs the domain work on its session, and lets the servicer's `Reply.present` turn the domain result
into the response message before the commit. Servicers never see a session; repositories never import a
`*_pb2` module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message
from kalcifer_common.idempotency import run_once, stored_answer
from sqlalchemy.ext.asyncio import AsyncSession

from kalcifer_api.repo.scoped import TenantScopedRepository

_Result = TypeVar("_Result")
_Response = TypeVar("_Response", bound=Message)


@dataclass(frozen=True, slots=True)
class Reply(Generic[_Result, _Response]):
    """How a mutating RPC answers: its method name and request (the idempotency key's parts), the response type
    (to replay a stored answer) and the mapper from the domain result to the response."""

    method: str
    request: Message
    response_type: type[_Response]
    present: Callable[[_Result], _Response]
    # What the idempotency record keeps of the answer (default: all of it); a secret shown once, such as a raw
    # API key, is left out, and a replay answers without it.
    remembered: Callable[[_Response], _Response] | None = None


class IdempotentRepository(TenantScopedRepository):
    """A tenant-scoped repository whose writes run through `_mutate`."""

    async def _mutate(
        self, reply: Reply[_Result, _Response], work: Callable[[AsyncSession], Awaitable[_Result]]
    ) -> _Response:
        """Run `work` in one transaction and answer `reply.present(result)`; a repeated `request_id` replays the
        first answer without running `work` again."""
        async with self._sessions.begin() as session:

            async def compute() -> _Response:
                return reply.present(await work(session))

            return await run_once(
                session,
                scope=self.idempotency_scope,
                method=reply.method,
                request=reply.request,
                response_type=reply.response_type,
                compute=compute,
                stored=reply.remembered,
            )

    async def _replayed(self, reply: Reply[_Result, _Response]) -> _Response | None:
        """The stored answer of this request's `request_id`, if it completed before (see `stored_answer`)."""
        async with self._sessions() as session:
            return await stored_answer(
                session,
                scope=self.idempotency_scope,
                method=reply.method,
                request=reply.request,
                response_type=reply.response_type,
            )

    async def _mutate_prepared(
        self,
        reply: Reply[_Result, _Response],
        work: Callable[[AsyncSession], Awaitable[_Result]],
        prepare: Callable[[], Awaitable[None]] | None,
    ) -> _Response:
        """`_mutate`, after `prepare()` ran outside any transaction (asking the engine to validate a graph, say);
        a request whose answer is already stored replays it without preparing."""
        if prepare is not None:
            replayed = await self._replayed(reply)
            if replayed is not None:
                return replayed
            await prepare()
        return await self._mutate(reply, work)

    async def _call_once(
        self, reply: Reply[_Response, _Response], call: Callable[[], Awaitable[_Response]]
    ) -> _Response:
        """Another service's answer to `call()`, once per `request_id`, with no transaction open while it runs
        (SPEC 10: no transaction is held across an RPC): a stored answer is replayed; otherwise the call is made,
        then its answer remembered in a short transaction (a twin that finished first has its answer replayed).
        Without a `request_id` this is just `await call()`. A retry after a lost answer reaches the other service
        again, so `call` must be idempotent in effect there."""
        if not getattr(reply.request, "request_id", ""):
            return await call()
        replayed = await self._replayed(reply)
        if replayed is not None:
            return replayed
        answer = await call()

        async def remembered(session: AsyncSession) -> _Response:
            return answer

        return await self._mutate(reply, remembered)
