"""Maintenance and scheduled entries, run in-process against the real database (and the recording engine)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from kalcifer.engine.v1 import engine_pb2_grpc
from kalcifer_common.settings import SchedulerSettings
from kalcifer_scheduler.entries import ScheduledEntries
from kalcifer_scheduler.entries.segment_entry import CHANGED_CUSTOMERS
from kalcifer_scheduler.maintenance import Maintenance
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.scheduler.support import RecordingEngine, Seeder, SegmentFlow, seed_segment_flow, utc_now
from tests.support.processes import free_port


async def _exists(db: AsyncEngine, table: str, column: str, value: Any) -> bool:
    async with db.connect() as connection:
        found = await connection.execute(text(f"SELECT 1 FROM {table} WHERE {column} = :v"), {"v": value})
        return found.first() is not None


async def test_maintenance_expires_idempotency_records_and_leaves_instances_to_the_engine(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, seeder: Seeder
) -> None:
    async with sched_db.begin() as connection:
        for request_id, expires in (
            ("expired", utc_now() - timedelta(minutes=1)),
            ("fresh", utc_now() + timedelta(days=1)),
        ):
            await connection.execute(
                text(
                    "INSERT INTO idempotency_records (scope, method, request_id, request_hash, response, expire_time)"
                    " VALUES ('admin', 'M', :rid, :hash, '\\x00', :expires)"
                ),
                {"rid": request_id, "hash": "0" * 64, "expires": expires},
            )

    report = await Maintenance(scheduler_role_db, stuck_seconds=300).run_once()

    assert report.expired_idempotency_records >= 1
    assert not await _exists(sched_db, "idempotency_records", "request_id", "expired")
    assert await _exists(sched_db, "idempotency_records", "request_id", "fresh")


# As in production: SEGMENT_ENTRY_OVERLAP_SECONDS' default.
_OVERLAP = timedelta(seconds=SchedulerSettings.model_fields["segment_entry_overlap_seconds"].default)
_GOLD = [{"field": "attributes.tier", "operator": "eq", "value": "gold"}]


def _entries(
    channel: grpc.aio.Channel, db: AsyncEngine, *, max_starts: int = 10_000, max_customers_read: int = 100_000
) -> ScheduledEntries:
    return ScheduledEntries(
        db,
        engine_pb2_grpc.EngineServiceStub(channel),
        overlap=_OVERLAP,
        max_starts=max_starts,
        max_customers_read=max_customers_read,
    )


@dataclass
class CustomerReads:
    """The statements a run sent about one tenant's customers, and the customer rows they returned."""

    statements: int = 0
    rows: int = 0


@contextlib.contextmanager
def customer_reads(db: AsyncEngine, tenant: uuid.UUID | None = None) -> Iterator[CustomerReads]:
    """Count, through SQLAlchemy's cursor events on `db`, what is read from `customers` (for `tenant`, or for
    every tenant: the other tests' flows are followed too)."""
    reads = CustomerReads()

    def count(_conn: Any, cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "FROM customers" in statement and (tenant is None or str(tenant) in {str(v) for v in parameters or ()}):
            reads.statements += 1
            reads.rows += cursor.rowcount

    event.listen(db.sync_engine, "after_cursor_execute", count)
    try:
        yield reads
    finally:
        event.remove(db.sync_engine, "after_cursor_execute", count)


async def test_a_flow_becoming_active_enters_its_segments_members_once(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    seeded = await seed_segment_flow(
        sched_db, rules=_GOLD, customers={"ann": {"tier": "gold"}, "bob": {"tier": "silver"}, "cy": {"tier": "gold"}}
    )
    async with grpc.aio.insecure_channel(engine.address) as channel:
        entries = _entries(channel, scheduler_role_db)
        first = await entries.run_once()
        second = await entries.run_once()

    assert (first, second) == (2, 0)
    mine = [start for start in engine.starts if start.flow_id == str(seeded.flow)]
    assert sorted(start.participant_id for start in mine) == ["ann", "cy"]
    assert {start.entry_node_id for start in mine} == {"entry"}
    joins = await seeded.members()
    assert sorted(joins) == ["ann", "cy"]
    assert {start.request_id for start in mine} == {
        f"segment_entry:{seeded.flow}:{joins[start.participant_id]}" for start in mine
    }


async def test_a_customer_joining_the_segment_enters_once_and_staying_a_member_enters_no_more(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    seeded = await seed_segment_flow(sched_db, rules=_GOLD, customers={"bob": {"tier": "silver"}})
    async with grpc.aio.insecure_channel(engine.address) as channel:
        entries = _entries(channel, scheduler_role_db)
        at_activation = await entries.run_once()
        await seeded.set_attributes("bob", {"tier": "gold"})
        joined = await entries.run_once()
        await seeded.finish_instances()
        # Still a member: unchanged, then changed but still gold (read again, a member already).
        staying = [await entries.run_once(), await entries.run_once()]
        await seeded.set_attributes("bob", {"tier": "gold", "visits": 2})
        staying += [await entries.run_once(), await entries.run_once()]

    assert (at_activation, joined, staying) == (0, 1, [0, 0, 0, 0])
    assert seeded.starts(engine) == ["bob"]
    assert list(await seeded.members()) == ["bob"]


async def test_leaving_and_joining_again_enters_again(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    seeded = await seed_segment_flow(sched_db, rules=_GOLD, customers={"ann": {"tier": "gold"}})
    async with grpc.aio.insecure_channel(engine.address) as channel:
        entries = _entries(channel, scheduler_role_db)
        entered = await entries.run_once()
        first_join = (await seeded.members())["ann"]
        await seeded.finish_instances()
        await seeded.set_attributes("ann", {"tier": "silver"})
        left = await entries.run_once()
        members_after_leaving = await seeded.members()
        await seeded.set_attributes("ann", {"tier": "gold"})
        rejoined = await entries.run_once()
        again = await entries.run_once()

    assert (entered, left, rejoined, again) == (1, 0, 1, 0)
    assert members_after_leaving == {}
    second_join = (await seeded.members())["ann"]
    assert second_join != first_join
    assert [start.request_id for start in engine.starts if start.flow_id == str(seeded.flow)] == [
        f"segment_entry:{seeded.flow}:{first_join}",
        f"segment_entry:{seeded.flow}:{second_join}",
    ]


async def test_joining_again_does_not_enter_a_flow_whose_re_entry_policy_is_never(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    seeded = await seed_segment_flow(sched_db, re_entry="never", rules=_GOLD, customers={"ann": {"tier": "gold"}})
    async with grpc.aio.insecure_channel(engine.address) as channel:
        entries = _entries(channel, scheduler_role_db)
        entered = await entries.run_once()
        await seeded.finish_instances()
        await seeded.set_attributes("ann", {"tier": "silver"})
        left = await entries.run_once()
        await seeded.set_attributes("ann", {"tier": "gold"})
        rejoined = await entries.run_once()

    assert (entered, left, rejoined) == (1, 0, 0)
    assert seeded.starts(engine) == ["ann"], "the entry ledger answers; the engine is not even asked"
    assert list(await seeded.members()) == ["ann"]


async def test_segment_entry_never_starts_a_member_the_entry_ledger_knows_after_pruning(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    seeded = await seed_segment_flow(sched_db, re_entry="never", rules=[], customers={"dee": {}, "eve": {}})
    async with sched_db.begin() as connection:
        # dee entered long ago; her instance was pruned, the ledger row stays.
        await connection.execute(
            text(
                "INSERT INTO flow_entries (flow_id, participant_id, tenant_id, first_enter_time)"
                " VALUES (:flow, 'dee', :tenant, now() - interval '400 days')"
            ),
            {"flow": seeded.flow, "tenant": seeded.tenant},
        )
    async with grpc.aio.insecure_channel(engine.address) as channel:
        started = await _entries(channel, scheduler_role_db).run_once()

    assert started >= 1
    assert seeded.starts(engine) == ["eve"]


async def _examined_by_a_quiet_read(db: AsyncEngine, seeded: SegmentFlow) -> tuple[set[str], int]:
    """EXPLAIN ANALYZE of a run's read of the changed customers from where the cursor stands: the indexes it used
    on `customers`, and the most rows any of its plan nodes on `customers` went through."""
    async with db.connect() as connection:
        cursor = (
            await connection.execute(
                text("SELECT read_update_time, read_customer_id FROM segment_entry_cursors WHERE flow_id = :flow"),
                {"flow": seeded.flow},
            )
        ).one()
        [[plan]] = (
            await connection.execute(
                text(f"EXPLAIN (ANALYZE, FORMAT JSON) {CHANGED_CUSTOMERS.text}"),
                {
                    "flow": seeded.flow,
                    "node": "entry",
                    "tenant": seeded.tenant,
                    "after_time": cursor.read_update_time,
                    "after_id": cursor.read_customer_id,
                    "page": 500,
                },
            )
        ).all()
    indexes: set[str] = set()
    rows = 0
    nodes = [plan[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        nodes.extend(node.get("Plans", []))
        index = node.get("Index Name", "")
        if node.get("Relation Name") == "customers" or index.startswith("ix_customers"):
            indexes |= {index} if index else set()
            rows = max(rows, int(node["Actual Rows"]))
    return indexes, rows


async def test_ten_thousand_customers_that_do_not_change_cost_a_run_no_customer_row(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    seeded = await seed_segment_flow(
        sched_db,
        rules=_GOLD,
        customers={"ann": {"tier": "gold"}, "bob": {"tier": "gold"}},
        unchanged_for=timedelta(hours=1),
        crowd=9_998,
    )
    async with grpc.aio.insecure_channel(engine.address) as channel:
        entries = _entries(channel, scheduler_role_db)
        with customer_reads(scheduler_role_db, seeded.tenant) as activation:
            at_activation = await entries.run_once()
        quiet = []
        for _ in range(3):
            with customer_reads(scheduler_role_db, seeded.tenant) as reads:
                quiet.append((await entries.run_once(), reads.statements, reads.rows))
        examined = await _examined_by_a_quiet_read(sched_db, seeded)
        await seeded.set_attributes("crowd-7", {"tier": "gold"})
        with customer_reads(scheduler_role_db, seeded.tenant) as one_change:
            joined = await entries.run_once()
        # Changed within the overlap, crowd-7 is read again by the next run, and stays a member.
        with customer_reads(scheduler_role_db, seeded.tenant) as reread:
            again = await entries.run_once()

    # Activation reads everyone once, in pages of 500 (the 21st page comes back empty).
    assert (at_activation, activation.statements, activation.rows) == (2, 21, 10_000)
    # Then nothing changed: one read per run, which returns no row ...
    assert quiet == [(0, 1, 0)] * 3
    # ... and examines none: the index range after the cursor is empty.
    assert examined == ({"ix_customers_tenant_id_update_time_id"}, 0)
    assert (joined, one_change.rows) == (1, 1)
    assert (again, reread.rows) == (0, 1)
    assert sorted(seeded.starts(engine)) == ["ann", "bob", "crowd-7"]


async def test_a_run_reads_a_bounded_number_of_customers_and_the_next_run_goes_on(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    seeded = await seed_segment_flow(
        sched_db,
        rules=_GOLD,
        customers={"zed": {"tier": "gold"}},
        unchanged_for=timedelta(hours=1),
        crowd=9_999,
    )
    mine, everyone = [], []
    async with grpc.aio.insecure_channel(engine.address) as channel:
        entries = _entries(channel, scheduler_role_db, max_customers_read=4_000)
        for _ in range(4):
            with (
                customer_reads(scheduler_role_db, seeded.tenant) as reads,
                customer_reads(scheduler_role_db) as all_reads,
            ):
                await entries.run_once()
            mine.append(reads.rows)
            everyone.append(all_reads.rows)

    # The bound is per run, over every flow (the other tests' customers changed within the overlap are read again).
    assert max(everyone) <= 4_000
    # Each run went on where the last one stopped: every customer of this tenant read once, in three runs.
    assert (sum(mine[:3]), mine[3]) == (10_000, 0), mine
    assert seeded.starts(engine) == ["zed"]


async def test_a_tenant_with_a_huge_segment_does_not_starve_another_tenants_joins(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    huge = await seed_segment_flow(
        sched_db, rules=_GOLD, customers={f"g{n}": {"tier": "gold"} for n in range(400)}, unchanged_for=timedelta(0)
    )
    small = await seed_segment_flow(
        sched_db, rules=_GOLD, customers={"ann": {"tier": "gold"}, "bea": {"tier": "gold"}}, unchanged_for=timedelta(0)
    )
    async with grpc.aio.insecure_channel(engine.address) as channel:
        # A run may start 100 instances: the huge tenant alone would take all of them.
        await _entries(channel, scheduler_role_db, max_starts=100).run_once()

    try:
        assert sorted(small.starts(engine)) == ["ann", "bea"]  # the small tenant entered in the same run
        assert 0 < len(huge.starts(engine)) <= 100
    finally:  # the other tests count every flow's reads: leave no active flow behind
        async with sched_db.begin() as connection:
            await connection.execute(
                text("UPDATE flows SET status = 'archived' WHERE id = ANY(:flows)"), {"flows": [huge.flow, small.flow]}
            )


async def test_a_segment_definition_change_evaluates_every_customer_again(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    seeded = await seed_segment_flow(
        sched_db,
        rules=_GOLD,
        customers={"ann": {"tier": "gold"}, "bob": {"tier": "silver"}, "cy": {"tier": "bronze"}},
        unchanged_for=timedelta(hours=1),
    )
    async with grpc.aio.insecure_channel(engine.address) as channel:
        entries = _entries(channel, scheduler_role_db)
        before = await entries.run_once()
        await seeded.set_rules([{"field": "attributes.tier", "operator": "in", "value": ["silver", "bronze"]}])
        with customer_reads(scheduler_role_db, seeded.tenant) as reads:
            after = await entries.run_once()
        unchanged = await entries.run_once()

    assert (before, after, unchanged) == (1, 2, 0)
    assert reads.rows == 3, "none of them changed, every one was read again"
    first, *then = seeded.starts(engine)
    assert (first, sorted(then)) == ("ann", ["bob", "cy"])
    assert sorted(await seeded.members()) == ["bob", "cy"], "ann left the segment when its definition changed"


async def test_joins_the_engine_did_not_answer_enter_at_the_next_run(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    seeded = await seed_segment_flow(sched_db, rules=_GOLD, customers={"ann": {"tier": "gold"}})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as nobody:
        unanswered = await _entries(nobody, scheduler_role_db).run_once()
    owed = await seeded.members()
    async with grpc.aio.insecure_channel(engine.address) as channel:
        entries = _entries(channel, scheduler_role_db)
        answered = [await entries.run_once(), await entries.run_once()]

    assert (unanswered, answered) == (0, [1, 0])
    assert [start.request_id for start in engine.starts if start.flow_id == str(seeded.flow)] == [
        f"segment_entry:{seeded.flow}:{owed['ann']}"
    ]


async def _seed_journeys(
    sched_db: AsyncEngine, schedules: dict[str, dict[str, str]], re_entry: str = "after_exit"
) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
    """A tenant with one active flow, an audience of everyone (dee and eve) and one active journey per schedule;
    returns the flow's id and the journeys' ids by name."""
    tenant, flow, segment = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    journeys = {name: uuid.uuid4() for name in schedules}
    graph = {"nodes": [{"id": "go", "type": "event_entry", "config": {"event_type": "x"}}], "edges": []}
    async with sched_db.begin() as connection:
        await connection.execute(text("INSERT INTO tenants (id, name) VALUES (:id, 'journeys')"), {"id": tenant})
        await connection.execute(
            text(
                "INSERT INTO flows (id, tenant_id, name, status, active_version_number)"
                " VALUES (:id, :t, 'j', 'active', 1)"
            ),
            {"id": flow, "t": tenant},
        )
        await connection.execute(
            text(
                "INSERT INTO flow_versions (tenant_id, flow_id, version_number, status, graph)"
                " VALUES (:t, :f, 1, 'active', CAST(:g AS jsonb))"
            ),
            {"t": tenant, "f": flow, "g": json.dumps(graph)},
        )
        await connection.execute(
            text("INSERT INTO segments (id, tenant_id, name, match, rules) VALUES (:id, :t, 'all', 'all', '[]')"),
            {"id": segment, "t": tenant},
        )
        for external_id in ("dee", "eve"):
            await connection.execute(
                text("INSERT INTO customers (tenant_id, external_id) VALUES (:t, :e)"), {"t": tenant, "e": external_id}
            )
        for name, schedule in schedules.items():
            await connection.execute(
                text(
                    "INSERT INTO journeys"
                    " (id, tenant_id, flow_id, name, status, audience_segment_id, entry_schedule, re_entry)"
                    " VALUES (:id, :t, :f, :n, 'active', :s, CAST(:e AS jsonb), :r)"
                ),
                {
                    "id": journeys[name],
                    "t": tenant,
                    "f": flow,
                    "n": name,
                    "s": segment,
                    "e": json.dumps(schedule),
                    "r": re_entry,
                },
            )
    return flow, journeys


async def test_a_scheduled_journey_enters_its_audience_at_its_cron_minute_only(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    flow, journeys = await _seed_journeys(
        sched_db,
        {
            "monday_nine_paris": {"cron": "0 9 * * 1", "timezone": "Europe/Paris"},
            "never_now": {"cron": "0 3 1 1 *", "timezone": ""},
        },
    )
    monday_nine_paris = datetime(2026, 11, 30, 8, 0, 37, tzinfo=UTC)
    async with grpc.aio.insecure_channel(engine.address) as channel:
        entries = _entries(channel, scheduler_role_db)
        too_early = await entries.run_once(monday_nine_paris - timedelta(minutes=5))
        on_time = await entries.run_once(monday_nine_paris)
        again = await entries.run_once(monday_nine_paris + timedelta(seconds=20))

    assert (too_early, on_time, again) == (0, 2, 0)
    mine = [start for start in engine.starts if start.flow_id == str(flow)]
    assert sorted(start.participant_id for start in mine) == ["dee", "eve"]
    assert {start.request_id.rsplit(":", 1)[0] for start in mine} == {
        f"journey:{journeys['monday_nine_paris']}:2026-11-30T08:00Z"
    }
    assert {start.entry_node_id for start in mine} == {""}


async def test_a_scheduled_journey_enters_once_on_the_nights_the_clocks_change(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    # New York 2026: 02:00 -> 03:00 on March 8th (07:00Z), 02:00 -> 01:00 on November 1st (06:00Z).
    new_york = "America/New_York"
    spring_flow, spring = await _seed_journeys(sched_db, {"skipped": {"cron": "30 2 8 3 *", "timezone": new_york}})
    # Re-entry "always" asks the engine again even while the audience is still in, so a second pass would show.
    autumn_flow, autumn = await _seed_journeys(
        sched_db, {"repeated": {"cron": "30 1 1 11 *", "timezone": new_york}}, re_entry="always"
    )
    runs = [
        datetime(2026, 3, 8, 6, 59, 30, tzinfo=UTC),  # 01:59 EST: 02:30 is yet to come (it never shows)
        datetime(2026, 3, 8, 7, 0, 30, tzinfo=UTC),  # 03:00 EDT, the first minute after the gap
        datetime(2026, 11, 1, 5, 30, 30, tzinfo=UTC),  # 01:30 EDT, the first pass
        datetime(2026, 11, 1, 6, 30, 30, tzinfo=UTC),  # 01:30 EST, the second pass
    ]
    async with grpc.aio.insecure_channel(engine.address) as channel:
        entries = _entries(channel, scheduler_role_db)
        started = [await entries.run_once(moment) for moment in runs]

    assert started == [0, 2, 2, 0]
    mine = [start for start in engine.starts if start.flow_id in {str(spring_flow), str(autumn_flow)}]
    # dee and eve once each, at the one slot of each night (request ids are `<journey>:<slot>:<participant>`).
    assert sorted(start.request_id for start in mine) == sorted(
        f"journey:{journey}:{slot}:{participant}"
        for journey, slot in ((spring["skipped"], "2026-03-08T07:00Z"), (autumn["repeated"], "2026-11-01T05:30Z"))
        for participant in ("dee", "eve")
    )
