"""`WaitClaims` as the scheduler runs it, on its own role: one claim per due wait, leases in `wait_claims`, and the
moment a wait fell due, from which lateness is measured."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from kalcifer_scheduler.maintenance import Maintenance
from kalcifer_scheduler.timers.claims import WaitClaims
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.scheduler.support import Seeder, utc_now


async def test_a_wait_due_in_the_past_is_due_from_its_creation_not_years_late(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, seeder: Seeder
) -> None:
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    [(_, past), (_, recent)] = await seeder.waits([long_ago, utc_now() - timedelta(seconds=5)])
    async with sched_db.begin() as conn:  # `recent` was created a minute before it fell due, as a `wait` is
        await conn.execute(
            text("UPDATE waits SET create_time = fire_time - interval '1 minute' WHERE id = :w"), {"w": recent}
        )
    claims = WaitClaims(scheduler_role_db, lease_seconds=60)

    due, not_due = await claims.claim([past, recent])

    by_id = {wait.wait_id: wait for wait in due}
    assert set(by_id) == {past, recent}
    assert not_due == []
    assert by_id[past].fire_time == long_ago
    assert utc_now() - by_id[past].due_time < timedelta(minutes=1), "due from its creation: a wait_until in the past"
    assert by_id[recent].due_time == by_id[recent].fire_time, "a wait created before its fire time is due then"


async def test_racing_claimers_take_each_due_wait_once_and_a_released_wait_can_be_taken_again(
    scheduler_role_db: AsyncEngine, seeder: Seeder
) -> None:
    pairs = await seeder.waits([utc_now() - timedelta(seconds=1)] * 50)
    ids = [wait for _, wait in pairs]
    replicas = [WaitClaims(scheduler_role_db, lease_seconds=60) for _ in range(4)]

    taken = await asyncio.gather(*(replica.claim(ids) for replica in replicas))

    claimed = [wait.wait_id for due, _ in taken for wait in due]
    assert sorted(claimed) == sorted(ids), "every due wait claimed, none twice"
    assert (await replicas[0].claim(ids))[0] == [], "a live lease is not taken again"
    await replicas[0].release(ids[:5])
    assert sorted(w.wait_id for w in (await replicas[1].claim(ids))[0]) == sorted(ids[:5])


async def test_maintenance_drops_the_claims_of_resolved_waits(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, seeder: Seeder
) -> None:
    [(_, resolved), (_, pending)] = await seeder.waits([utc_now() - timedelta(seconds=1)] * 2)
    await WaitClaims(scheduler_role_db, lease_seconds=60).claim([resolved, pending])
    async with sched_db.begin() as conn:  # the engine fires one of them
        await conn.execute(text("UPDATE waits SET status = 'fired' WHERE id = :w"), {"w": resolved})

    report = await Maintenance(scheduler_role_db, stuck_seconds=300).run_once()

    async with sched_db.connect() as conn:
        left = {str(row.wait_id) for row in await conn.execute(text("SELECT wait_id FROM wait_claims"))}
    assert report.dropped_claims >= 1
    assert resolved not in left
    assert pending in left
