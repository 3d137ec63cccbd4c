"""`request_id`: the same call again replays the first answer and changes nothing, even when retries race."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from kalcifer.v1 import tenant_pb2
from kalcifer_common.errors import InvalidArgument
from kalcifer_common.idempotency import run_once
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.eventually import eventually


async def _blocked_on_a_request_id(sessions: async_sessionmaker[AsyncSession]) -> int:
    """How many connections to this database wait for a lock on an idempotency record (a retry whose request id
    another, uncommitted call holds)."""
    async with sessions() as session:
        count = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query ILIKE '%idempotency_records%'"
            )
        )
    return int(count or 0)


async def _call(
    sessions: async_sessionmaker[AsyncSession],
    request: tenant_pb2.CreateTenantRequest,
    calls: list[str],
    *,
    racing: int = 0,
) -> tenant_pb2.Tenant:
    async def compute() -> tenant_pb2.Tenant:
        calls.append(request.name)
        if racing:
            # The work holds its transaction open until the `racing` other retries wait on its request id: they
            # did race it, rather than arriving after it committed.
            await eventually(
                lambda: _blocked_on_a_request_id(sessions),
                until=lambda blocked: blocked >= racing,
                what=f"{racing} racing retries blocked on the request id",
            )
        return tenant_pb2.Tenant(id=str(uuid.uuid4()), name=request.name)

    async with sessions.begin() as session:
        return await run_once(
            session,
            scope="test",
            method="CreateThing",
            request=request,
            request_id=request.name + "-" + str(id(calls)),
            response_type=tenant_pb2.Tenant,
            compute=compute,
        )


async def test_a_retry_replays_the_first_response(sessions: async_sessionmaker[AsyncSession]) -> None:
    calls: list[str] = []
    first = await _call(sessions, tenant_pb2.CreateTenantRequest(name="a"), calls)
    again = await _call(sessions, tenant_pb2.CreateTenantRequest(name="a"), calls)
    assert again == first
    assert calls == ["a"]


async def test_racing_retries_run_the_work_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    calls: list[str] = []
    results = await asyncio.gather(
        *[_call(sessions, tenant_pb2.CreateTenantRequest(name="b"), calls, racing=4) for _ in range(5)]
    )
    assert len({r.id for r in results}) == 1
    assert calls == ["b"]


async def test_a_rolled_back_call_leaves_no_trace(sessions: async_sessionmaker[AsyncSession]) -> None:
    calls: list[str] = []
    request = tenant_pb2.CreateTenantRequest(name="c")

    async def failing() -> tenant_pb2.Tenant:
        calls.append("failed")
        raise InvalidArgument.single("name", "refused")

    with pytest.raises(InvalidArgument):
        async with sessions.begin() as session:
            await run_once(
                session,
                scope="test",
                method="CreateThing",
                request=request,
                request_id="rollback",
                response_type=tenant_pb2.Tenant,
                compute=failing,
            )
    async with sessions.begin() as session:
        result = await run_once(
            session,
            scope="test",
            method="CreateThing",
            request=request,
            request_id="rollback",
            response_type=tenant_pb2.Tenant,
            compute=lambda: _tenant("c"),
        )
    assert result.name == "c"
    assert calls == ["failed"]


async def _tenant(name: str) -> tenant_pb2.Tenant:
    return tenant_pb2.Tenant(id=str(uuid.uuid4()), name=name)


async def test_the_same_id_for_another_request_is_invalid(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        await run_once(
            session,
            scope="test",
            method="CreateThing",
            request=tenant_pb2.CreateTenantRequest(name="d"),
            request_id="reused",
            response_type=tenant_pb2.Tenant,
            compute=lambda: _tenant("d"),
        )
    with pytest.raises(InvalidArgument) as raised:
        async with sessions.begin() as session:
            await run_once(
                session,
                scope="test",
                method="CreateThing",
                request=tenant_pb2.CreateTenantRequest(name="other"),
                request_id="reused",
                response_type=tenant_pb2.Tenant,
                compute=lambda: _tenant("other"),
            )
    assert raised.value.violations[0].field == "request_id"


async def test_no_request_id_means_no_deduplication(sessions: async_sessionmaker[AsyncSession]) -> None:
    calls: list[str] = []

    async def compute() -> tenant_pb2.Tenant:
        calls.append("x")
        return await _tenant("e")

    for _ in range(2):
        async with sessions.begin() as session:
            await run_once(
                session,
                scope="test",
                method="CreateThing",
                request=tenant_pb2.CreateTenantRequest(name="e"),
                request_id="",
                response_type=tenant_pb2.Tenant,
                compute=compute,
            )
    assert calls == ["x", "x"]
