"""Group commit (runtime/group_commit.py): single StartInstance and RouteEvent calls that arrive together share a
transaction, and each caller still gets its own answer, whatever the others' fate."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from kalcifer_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.events import EventToRoute, grouped_routes
from kalcifer_engine.runtime.starts import StartRequest, grouped_starts
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.engine.support import create_flow, create_tenant, graph, make_runtime, store_event

ENTRY = ("start", "event_entry", {"event_type": "go"})
WAITING = graph([ENTRY, ("w", "wait_for_event", {"event_type": "ping", "timeout": "7d"})], [("start", "w")])


@pytest.fixture
async def rt(engine_role_db: AsyncEngine, database_url: str) -> AsyncIterator[Runtime]:
    runtime = make_runtime(engine_role_db, database_url)
    yield runtime
    await runtime.close()


async def _instances(db: AsyncEngine, flow: uuid.UUID) -> list[tuple[str, object, str]]:
    """(participant, enter_time, status) of the flow's instances."""
    async with db.connect() as conn:
        rows = await conn.execute(
            text("SELECT participant_id, enter_time, status FROM flow_instances WHERE flow_id = :f"), {"f": flow}
        )
        return [(row.participant_id, row.enter_time, row.status) for row in rows]


async def test_starts_arriving_together_share_one_transaction_and_refusals_answer_alone(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, WAITING)
    paused = await create_flow(db_engine, tenant, WAITING, status="paused")
    starts = grouped_starts(rt)
    requests = [StartRequest(tenant, flow, f"p{n}", {}) for n in range(12)]
    requests += [
        StartRequest(tenant, paused, "p0", {}),  # FLOW_NOT_ACTIVE
        StartRequest(tenant, uuid.uuid4(), "p0", {}),  # no such flow
        StartRequest(tenant, flow, "p3", {}),  # p3 again: already in the flow
    ]
    answers = await asyncio.gather(*(starts(request) for request in requests), return_exceptions=True)

    started = answers[:12]
    assert all(isinstance(answer, uuid.UUID) for answer in started), started
    assert isinstance(answers[12], FailedPrecondition)
    assert answers[12].reason == "FLOW_NOT_ACTIVE"
    assert isinstance(answers[13], NotFound)
    assert isinstance(answers[14], AlreadyExists)
    rows = await _instances(db_engine, flow)
    assert sorted(participant for participant, _, _ in rows) == sorted(f"p{n}" for n in range(12))
    assert {status for _, _, status in rows} == {"waiting"}
    # One transaction: one clock reading for every instance it started.
    assert len({enter_time for _, enter_time, _ in rows}) == 1
    assert await _instances(db_engine, paused) == []


async def test_a_start_that_fails_after_writing_rolls_the_group_back_and_every_start_runs_alone(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, WAITING)
    starts = grouped_starts(rt)
    requests = [StartRequest(tenant, flow, f"q{n}", {}) for n in range(6)]
    # Admitted (its row inserted), then refused: "w" is not a trigger node.
    requests.insert(3, StartRequest(tenant, flow, "bad", {}, entry_node_ids=("w",)))
    answers = await asyncio.gather(*(starts(request) for request in requests), return_exceptions=True)

    bad = answers.pop(3)
    assert isinstance(bad, InvalidArgument)
    assert [violation.field for violation in bad.violations] == ["entry_node_id"]
    assert all(isinstance(answer, uuid.UUID) for answer in answers), answers
    rows = await _instances(db_engine, flow)
    assert sorted(participant for participant, _, _ in rows) == sorted(f"q{n}" for n in range(6))
    # Each ran again in a transaction of its own.
    assert len({enter_time for _, enter_time, _ in rows}) == 6


async def test_events_routed_together_each_resume_their_own_wait(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, WAITING)
    starts = grouped_starts(rt)
    participants = [f"r{n}" for n in range(8)]
    await asyncio.gather(*(starts(StartRequest(tenant, flow, p, {})) for p in participants))
    event_ids = [await store_event(db_engine, tenant, p, "ping", {"n": n}) for n, p in enumerate(participants)]
    routes = grouped_routes(rt)
    unknown = uuid.uuid4()
    to_route = [EventToRoute(tenant, e, p, "ping", {}) for e, p in zip(event_ids, participants, strict=True)]
    to_route.append(EventToRoute(tenant, unknown, "r0", "ping", {}))
    results = await asyncio.gather(*(routes(event) for event in to_route), return_exceptions=True)

    assert isinstance(results[-1], NotFound)
    assert [getattr(result, "resumed", None) for result in results[:-1]] == [1] * 8
    rows = await _instances(db_engine, flow)
    assert sorted(status for _, _, status in rows) == ["completed"] * 8
    # Routed again (a retry of the same event ids): the stored answers, nothing resumed twice.
    again = await asyncio.gather(*(routes(event) for event in to_route[:-1]))
    assert [result.resumed for result in again] == [1] * 8
    async with db_engine.connect() as conn:
        fired = await conn.execute(
            text(
                "SELECT count(*) FROM waits w JOIN flow_instances i ON i.id = w.instance_id "
                "WHERE i.flow_id = :f AND w.status = 'fired'"
            ),
            {"f": flow},
        )
        assert fired.scalar_one() == 8


async def test_waits_armed_together_each_find_their_own_early_event_in_one_lookback(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    other_tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, WAITING)
    # Before any wait exists: two early pings for e0 (the older one resumes it), one for e2, a ping of e1 in
    # another tenant, and an event of another type for e1. Nothing routes them (no wait yet).
    await store_event(db_engine, tenant, "e0", "ping", {"n": "first"})
    await store_event(db_engine, tenant, "e0", "ping", {"n": "second"})
    await store_event(db_engine, tenant, "e2", "ping", {"n": "e2's"})
    await store_event(db_engine, other_tenant, "e1", "ping", {"n": "another tenant's"})
    await store_event(db_engine, tenant, "e1", "pong", {"n": "another type"})
    starts = grouped_starts(rt)
    answers = await asyncio.gather(*(starts(StartRequest(tenant, flow, f"e{n}", {})) for n in range(4)))

    assert all(isinstance(answer, uuid.UUID) for answer in answers), answers
    rows = await _instances(db_engine, flow)
    assert len({enter_time for _, enter_time, _ in rows}) == 1, "the four started in one transaction"
    async with db_engine.connect() as conn:
        outcome = {
            row.participant_id: (row.status, row.context.get("event"))
            for row in await conn.execute(
                text("SELECT participant_id, status, context FROM flow_instances WHERE flow_id = :f"), {"f": flow}
            )
        }
    assert outcome == {
        "e0": ("completed", {"n": "first"}),
        "e1": ("waiting", None),
        "e2": ("completed", {"n": "e2's"}),
        "e3": ("waiting", None),
    }
