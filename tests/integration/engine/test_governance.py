"""Delivery governance at run time (SPEC 7), on real PostgreSQL, with the runs' clock under the test's control:
quiet hours across a daylight saving change, one frequency cap counted across journeys, opted-out and
unreachable customers, and journeys' exit criteria and goals applied as events are routed."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kalcifer_engine.runtime import events
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

SEND_THEN_EXIT = graph(
    [("go", "event_entry", {"event_type": "go"}), ("mail", "send_email", {"template_id": "t1"}), ("end", "exit", {})],
    [("go", "mail"), ("mail", "end")],
)
WAIT_AN_HOUR = graph(
    [("go", "event_entry", {"event_type": "go"}), ("hold", "wait", {"duration": "1h"}), ("end", "exit", {})],
    [("go", "hold"), ("hold", "end")],
)


@pytest.fixture
async def rt(engine_role_db: AsyncEngine, database_url: str) -> AsyncIterator[Runtime]:
    runtime = make_runtime(engine_role_db, database_url)
    yield runtime
    await runtime.close()


def at(moment: datetime) -> Any:
    """A run clock stopped at `moment`."""
    return lambda: moment


async def customer(db: AsyncEngine, tenant: uuid.UUID, participant: str, **fields: Any) -> None:
    async with db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO customers (tenant_id, external_id, email, phone, timezone, preferences) "
                "VALUES (:t, :p, :email, :phone, :tz, CAST(:prefs AS jsonb))"
            ),
            {
                "t": tenant,
                "p": participant,
                "email": fields.get("email"),
                "phone": fields.get("phone"),
                "tz": fields.get("timezone"),
                "prefs": json.dumps(fields.get("preferences", {})),
            },
        )


async def journey(db: AsyncEngine, tenant: uuid.UUID, flow: uuid.UUID, **settings: Any) -> uuid.UUID:
    """An active journey wrapping `flow` with `settings` (frequency_cap, quiet_hours, exit_criteria, goals)."""
    async with db.begin() as conn:
        journey_id: uuid.UUID = (
            await conn.execute(
                text(
                    "INSERT INTO journeys (tenant_id, flow_id, name, status, frequency_cap, quiet_hours, "
                    "exit_criteria, goals) VALUES (:t, :f, 'j', 'active', CAST(:cap AS jsonb), CAST(:quiet AS jsonb), "
                    "CAST(:exits AS jsonb), CAST(:goals AS jsonb)) RETURNING id"
                ),
                {
                    "t": tenant,
                    "f": flow,
                    "cap": json.dumps(settings.get("frequency_cap")),
                    "quiet": json.dumps(settings.get("quiet_hours")),
                    "exits": json.dumps(settings.get("exit_criteria", [])),
                    "goals": json.dumps(settings.get("goals", [])),
                },
            )
        ).scalar_one()
    return journey_id


async def step_of(db: AsyncEngine, instance_id: uuid.UUID, node_id: str) -> Any:
    async with db.connect() as conn:
        return (
            await conn.execute(
                text("SELECT status, output FROM execution_steps WHERE instance_id = :i AND node_id = :n"),
                {"i": instance_id, "n": node_id},
            )
        ).one()


async def deliveries_of(db: AsyncEngine, instance_id: uuid.UUID) -> list[Any]:
    async with db.connect() as conn:
        return list(
            await conn.execute(
                text("SELECT channel, send_after FROM deliveries WHERE instance_id = :i"), {"i": instance_id}
            )
        )


@pytest.mark.parametrize(
    ("now", "deferred_to"),
    [
        # 01:30 in Berlin the night before the change (UTC+1): 08:00 is 07:00 UTC.
        (datetime(2027, 3, 27, 0, 30, tzinfo=UTC), datetime(2027, 3, 27, 7, 0, tzinfo=UTC)),
        # 01:30 in Berlin on the last Sunday of March, still UTC+1; 08:00 that day is summer time, 06:00 UTC.
        (datetime(2027, 3, 28, 0, 30, tzinfo=UTC), datetime(2027, 3, 28, 6, 0, tzinfo=UTC)),
    ],
)
async def test_a_send_in_quiet_hours_is_deferred_to_their_end_across_the_dst_change(
    rt: Runtime, db_engine: AsyncEngine, now: datetime, deferred_to: datetime
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, SEND_THEN_EXIT)
    await journey(db_engine, tenant, flow, quiet_hours={"start": "22:00", "end": "08:00", "timezone": "Europe/Berlin"})
    await customer(db_engine, tenant, "ada", email="ada@example.com")
    rt.now = at(now)  # type: ignore[method-assign]

    instance_id = await start(rt, tenant, flow, "ada")

    assert [(d.channel, d.send_after) for d in await deliveries_of(db_engine, instance_id)] == [("email", deferred_to)]
    step = await step_of(db_engine, instance_id, "mail")
    assert (step.status, step.output["deferred_until"]) == ("completed", deferred_to.isoformat())
    assert (await instance(db_engine, instance_id)).status == "completed"


async def test_quiet_hours_follow_the_customers_timezone_when_the_window_has_none(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, SEND_THEN_EXIT)
    await journey(db_engine, tenant, flow, quiet_hours={"start": "20:00", "end": "08:00"})
    await customer(db_engine, tenant, "kenji", email="kenji@example.com", timezone="Asia/Tokyo")
    await customer(db_engine, tenant, "lea", email="lea@example.com")  # no timezone: UTC
    rt.now = at(datetime(2027, 1, 15, 12, 0, tzinfo=UTC))  # type: ignore[method-assign]  # 21:00 in Tokyo

    kenji, lea = await start(rt, tenant, flow, "kenji"), await start(rt, tenant, flow, "lea")

    assert [d.send_after for d in await deliveries_of(db_engine, kenji)] == [datetime(2027, 1, 15, 23, 0, tzinfo=UTC)]
    assert [d.send_after for d in await deliveries_of(db_engine, lea)] == [None]


async def test_one_cap_counts_across_three_journeys_and_the_capped_path_goes_on(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    await customer(db_engine, tenant, "ada", email="ada@example.com")
    flows = [await create_flow(db_engine, tenant, SEND_THEN_EXIT) for _ in range(3)]
    for flow in flows:
        await journey(
            db_engine, tenant, flow, frequency_cap={"max_messages": 2, "time_window": "1d", "channel": "email"}
        )

    started = [await start(rt, tenant, flow, "ada") for flow in flows]

    assert [len(await deliveries_of(db_engine, i)) for i in started] == [1, 1, 0]
    capped = await step_of(db_engine, started[2], "mail")
    assert (capped.status, capped.output) == ("skipped", {"skipped": "FREQUENCY_CAPPED", "count": 2, "max_messages": 2})
    assert (await step_of(db_engine, started[2], "end")).status == "completed"
    assert [(await instance(db_engine, i)).status for i in started] == ["completed"] * 3


async def test_an_opted_out_or_unreachable_customer_is_skipped_with_the_reason(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, SEND_THEN_EXIT)
    await customer(db_engine, tenant, "out", email="out@example.com", preferences={"email": False})
    await customer(db_engine, tenant, "nomail", phone="+33600000000")

    opted_out, unreachable = await start(rt, tenant, flow, "out"), await start(rt, tenant, flow, "nomail")

    assert (await step_of(db_engine, opted_out, "mail")).output == {"skipped": "PREFERENCE_OFF", "channel": "email"}
    assert (await step_of(db_engine, unreachable, "mail")).output == {
        "skipped": "NO_CONTACT",
        "channel": "email",
        "missing": "email",
    }
    assert await deliveries_of(db_engine, opted_out) == []
    assert (await instance(db_engine, unreachable)).status == "completed"


async def route(rt: Runtime, tenant: uuid.UUID, participant: str, event_type: str, data: dict[str, Any]) -> None:
    event_id = await store_event(rt.db, tenant, participant, event_type, data)
    await events.route_event(rt, events.EventToRoute(tenant, event_id, participant, event_type, data))


async def test_an_exit_criterion_event_exits_the_journeys_live_instances_and_cancels_their_waits(
    rt: Runtime, db_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(db_engine)
    flow, other_flow = (
        await create_flow(db_engine, tenant, WAIT_AN_HOUR),
        await create_flow(db_engine, tenant, WAIT_AN_HOUR),
    )
    await journey(
        db_engine, tenant, flow, exit_criteria=[{"event_type": "unsubscribed", "filter": "event.list == 'all'"}]
    )
    inside, elsewhere = await start(rt, tenant, flow, "ada"), await start(rt, tenant, other_flow, "ada")
    bystander = await start(rt, tenant, flow, "bob")

    await route(rt, tenant, "ada", "unsubscribed", {"list": "weekly"})  # the filter does not pass
    assert (await instance(db_engine, inside)).status == "waiting"
    await route(rt, tenant, "ada", "unsubscribed", {"list": "all"})

    exited = await instance(db_engine, inside)
    assert (exited.status, exited.exit_reason) == ("exited", "exit_criterion:unsubscribed")
    assert (await step_of(db_engine, inside, "hold")).status == "cancelled"
    async with db_engine.connect() as conn:
        pending = (
            await conn.execute(
                text("SELECT count(*) FROM waits WHERE instance_id = :i AND status = 'pending'"), {"i": inside}
            )
        ).scalar_one()
    assert pending == 0
    assert (await instance(db_engine, elsewhere)).status == "waiting"  # not the journey's flow
    assert (await instance(db_engine, bystander)).status == "waiting"  # not the event's participant


async def test_a_goal_event_records_one_conversion_per_instance(rt: Runtime, db_engine: AsyncEngine) -> None:
    tenant = await create_tenant(db_engine)
    flow = await create_flow(db_engine, tenant, WAIT_AN_HOUR)
    await journey(
        db_engine, tenant, flow, goals=[{"name": "big_order", "event_type": "order", "filter": "event.total > 10"}]
    )
    instance_id = await start(rt, tenant, flow, "ada")

    await route(rt, tenant, "ada", "order", {"total": 5})  # below the filter
    await route(rt, tenant, "ada", "order", {"total": 50, "revenue": 49.5})
    await route(rt, tenant, "ada", "order", {"total": 70, "revenue": 70})  # the goal was already reached

    async with db_engine.connect() as conn:
        rows = list(
            await conn.execute(
                text("SELECT name, kind, revenue FROM conversions WHERE instance_id = :i"), {"i": instance_id}
            )
        )
    assert [(row.name, row.kind, float(row.revenue)) for row in rows] == [("big_order", "goal", 49.5)]
    assert (await instance(db_engine, instance_id)).status == "waiting"  # a goal records; it does not end the instance
