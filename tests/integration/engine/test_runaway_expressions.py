"""A runaway CEL expression costs its own step, never the engine (SPEC 10), on real PostgreSQL and real workers.

The bombs below are stored straight into the database, as rows written before the write-time limits existed
would be: the runtime must survive them anyway. If a bomb reached the engine's own process, this test process
would die with it (a segfault cannot be caught), so every test here passing is itself the proof of isolation.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from kalcifer_engine.runtime import events, recovery
from kalcifer_engine.runtime.core import Runtime
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.engine.support import (
    create_flow,
    create_tenant,
    graph,
    instance,
    make_runtime,
    start,
    store_event,
)

CRASHING = "+".join(["1"] * 20_000)  # 40 KB: overflows the native evaluator's stack
TEN = "[1,2,3,4,5,6,7,8,9,10]"
ENDLESS = f"{TEN}.map(a,{TEN}.map(b,{TEN}.map(c,{TEN}.map(d,{TEN}.map(e,{TEN}.map(f,{TEN}))))))"
# Passes the write-time limits (two nested comprehensions) and is ruinous only for large data.
DATA_DEPENDENT = "items.map(a, items.map(b, items)).size()"
ENTRY = ("start", "event_entry", {"event_type": "go"})


@pytest.fixture
async def rt(engine_role_db: AsyncEngine, database_url: str) -> AsyncIterator[Runtime]:
    runtime = make_runtime(
        engine_role_db,
        database_url,
        cel_timeout_ms=1500,
        recovery_overdue_seconds=0.001,
        recovery_event_seconds=0.001,
    )
    yield runtime
    await runtime.close()


async def failed_step_error(db: AsyncEngine, instance_id: uuid.UUID) -> str:
    async with db.connect() as conn:
        error: str = (
            await conn.execute(
                text("SELECT error FROM execution_steps WHERE instance_id = :i AND status = 'failed'"),
                {"i": instance_id},
            )
        ).scalar_one()
    return error


def computing(expression: str) -> dict[str, Any]:
    return graph([ENTRY, ("calc", "custom_code", {"expression": expression})], [("start", "calc")])


@pytest.mark.parametrize(
    ("expression", "context", "reason"),
    [
        (CRASHING, {}, "crashed its evaluator (SIGSEGV)"),
        (ENDLESS, {}, "ran longer than its budget of 1500 ms"),
        (DATA_DEPENDENT, {"items": list(range(2_000))}, "ran longer than its budget of 1500 ms"),
    ],
    ids=["40KB-additions", "six-nested-maps", "data-dependent"],
)
async def test_a_runaway_custom_code_fails_only_its_step(
    rt: Runtime, db_engine: AsyncEngine, expression: str, context: dict[str, Any], reason: str
) -> None:
    tenant = await create_tenant(db_engine)
    bomb = await create_flow(db_engine, tenant, computing(expression))
    instance_id = await start(rt, tenant, bomb, "victim", context=context)
    row = await instance(db_engine, instance_id)
    assert row.status == "failed"
    assert row.exit_reason == f"node 'calc' (custom_code) failed: custom_code expression failed: {reason}"
    assert await failed_step_error(db_engine, instance_id) == f"custom_code expression failed: {reason}"


async def test_another_tenant_completes_while_a_bomb_runs(rt: Runtime, db_engine: AsyncEngine) -> None:
    attacker, bystander = await create_tenant(db_engine), await create_tenant(db_engine)
    bomb = await create_flow(db_engine, attacker, computing(ENDLESS))
    fine = await create_flow(db_engine, bystander, computing("n * 2"))
    bombing = asyncio.ensure_future(start(rt, attacker, bomb, "a"))
    finished = [await start(rt, bystander, fine, f"b{n}", context={"n": n}) for n in range(20)]
    rows = [await instance(db_engine, i) for i in finished]
    assert [(r.status, r.context["accumulated"]["calc"]["result"]) for r in rows] == [
        ("completed", 2 * n) for n in range(20)
    ]
    assert (await instance(db_engine, await bombing)).status == "failed"


async def test_a_bomb_after_a_wait_fails_once_and_recovery_never_loops_on_it(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(
        db_engine,
        tenant,
        graph(
            [ENTRY, ("w", "wait", {"duration": "1s"}), ("calc", "custom_code", {"expression": CRASHING})],
            [("start", "w"), ("w", "calc")],
        ),
    )
    instance_id = await start(rt, tenant, flow, "p")
    async with db_engine.begin() as conn:
        await conn.execute(
            text("UPDATE waits SET fire_time = now() - interval '1 minute' WHERE instance_id = :i"), {"i": instance_id}
        )
    assert await recovery.fire_overdue_waits(rt) >= 1
    row = await instance(db_engine, instance_id)
    assert row.status == "failed"
    assert "crashed its evaluator" in row.exit_reason
    passes = [await recovery.recover_once(rt) for _ in range(3)]
    assert all(p["overdue_waits"] == 0 for p in passes)
    assert (await instance(db_engine, instance_id)).status == "failed"


async def test_a_runaway_wait_filter_fails_the_instance_at_its_wait(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(
        db_engine,
        tenant,
        graph(
            [ENTRY, ("await", "wait_for_event", {"event_type": "paid", "timeout": "1d", "filter": ENDLESS})],
            [("start", "await")],
        ),
    )
    instance_id = await start(rt, tenant, flow, "buyer")
    assert (await instance(db_engine, instance_id)).status == "waiting"
    event_id = await store_event(db_engine, tenant, "buyer", "paid", {}, received_ago=timedelta(minutes=1))
    # Routed by recovery, as after a crash mid-route: the pass survives and the instance fails, once.
    assert (await recovery.recover_once(rt))["unrouted_events"] == 1
    row = await instance(db_engine, instance_id)
    assert row.status == "failed"
    assert row.exit_reason == (
        "node 'await' (wait_for_event) failed: its event filter ran longer than its budget of 1500 ms"
    )
    async with db_engine.connect() as conn:
        waits = (await conn.execute(text("SELECT status FROM waits WHERE instance_id = :i"), {"i": instance_id})).all()
        routed = (await conn.execute(text("SELECT routed_time FROM events WHERE id = :e"), {"e": event_id})).one()
    assert [w.status for w in waits] == ["fired"]
    assert routed.routed_time is not None
    assert (await recovery.recover_once(rt))["unrouted_events"] == 0


async def test_a_runaway_entry_filter_starts_nothing(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    await create_flow(
        db_engine,
        tenant,
        graph(
            [("go", "event_entry", {"event_type": "signup", "filter": CRASHING}), ("w", "wait", {"duration": "1d"})],
            [("go", "w")],
        ),
    )
    calm = await create_flow(
        db_engine,
        tenant,
        graph([("go", "event_entry", {"event_type": "signup"}), ("w", "wait", {"duration": "1d"})], [("go", "w")]),
    )
    event_id = await store_event(db_engine, tenant, "newbie", "signup", {}, received_ago=timedelta(minutes=1))
    result = await events.route_event(rt, events.EventToRoute(tenant, event_id, "newbie", "signup", {}))
    assert result.started == 1
    assert (await instance(db_engine, uuid.UUID(result.instance_ids[0]))).flow_id == calm
