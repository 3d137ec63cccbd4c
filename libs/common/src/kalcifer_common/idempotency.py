"""`request_id` idempotency for mutating calls (AIP-155), inside the call's own transaction.

The first call with a request id reserves the key with `INSERT .. ON CONFLICT DO NOTHING` and stores its
response before its transaction commits. A retry with the same id finds the row and gets the stored response;
a concurrent retry blocks on the unique key until the first transaction ends, then replays its answer (or, if
the first rolled back, runs itself). The same id with a different request is `INVALID_ARGUMENT`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast

from google.protobuf.message import Message
from sqlalchemy import Table, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from kalcifer_common.db.models import IdempotencyRecord
from kalcifer_common.errors import InvalidArgument

RETENTION = timedelta(hours=24)
MAX_REQUEST_ID_LENGTH = 200

_T = TypeVar("_T", bound=Message)
_table = cast(Table, IdempotencyRecord.__table__)


def request_hash(request: Message) -> str:
    """SHA-256 of the request's deterministic serialization, without its `request_id` field."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def checked_request_id(request_id: str, field: str = "request_id") -> str:
    """The request id, or INVALID_ARGUMENT when it is too long (empty means: not idempotent)."""
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidArgument.single(field, f"must be at most {MAX_REQUEST_ID_LENGTH} characters")
    return request_id


async def run_once(
    db: AsyncSession | AsyncConnection,
    *,
    scope: str,
    method: str,
    request: Message,
    response_type: type[_T],
    compute: Callable[[], Awaitable[_T]],
    request_id: str | None = None,
    stored: Callable[[_T], _T] | None = None,
) -> _T:
    """Run `compute` once per (scope, method, request id) and replay its response afterwards.

    `db` must be inside an open transaction that also holds `compute`'s writes, so the response is remembered
    exactly when the change commits. Without a request id this is just `await compute()`. `stored`, when given,
    is what is remembered of the response (a secret shown once, such as a raw API key, is left out of it).
    """
    rid = checked_request_id(request_id if request_id is not None else getattr(request, "request_id", ""))
    if not rid:
        return await compute()
    digest = request_hash(request)
    now = datetime.now(UTC)
    reserved = await db.execute(
        insert(_table)
        .values(
            scope=scope,
            method=method,
            request_id=rid,
            request_hash=digest,
            response=b"",
            status_code=-1,
            create_time=now,
            expire_time=now + RETENTION,
        )
        .on_conflict_do_nothing()
        .returning(_table.c.request_id)
    )
    if reserved.first() is None:
        row = (
            await db.execute(
                select(_table.c.request_hash, _table.c.response).where(
                    _table.c.scope == scope, _table.c.method == method, _table.c.request_id == rid
                )
            )
        ).one()
        if row.request_hash != digest:
            raise InvalidArgument.single("request_id", "was already used for a different request")
        return response_type.FromString(row.response)
    response = await compute()
    await db.execute(
        update(_table)
        .where(_table.c.scope == scope, _table.c.method == method, _table.c.request_id == rid)
        .values(
            response=(stored(response) if stored is not None else response).SerializeToString(deterministic=True),
            status_code=0,
        )
    )
    return response


async def stored_answer(
    db: AsyncSession | AsyncConnection,
    *,
    scope: str,
    method: str,
    request: Message,
    response_type: type[_T],
) -> _T | None:
    """The answer already stored for this request's `request_id`, without reserving anything; None when there is
    no request id or no completed answer yet. Lets a call skip work it would do before its transaction (asking
    another service) when the transaction would only replay. The same id with a different request is
    `INVALID_ARGUMENT`."""
    rid = checked_request_id(getattr(request, "request_id", ""))
    if not rid:
        return None
    row = (
        await db.execute(
            select(_table.c.request_hash, _table.c.response).where(
                _table.c.scope == scope,
                _table.c.method == method,
                _table.c.request_id == rid,
                _table.c.status_code == 0,
            )
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != request_hash(request):
        raise InvalidArgument.single("request_id", "was already used for a different request")
    return response_type.FromString(row.response)
