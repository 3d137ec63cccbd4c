"""Maintenance and scheduled entries, run in-process against the real database (and the recording engine)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from kalcifer.engine.v1 import engine_pb2_grpc
from kalcifer_scheduler.entries import ScheduledEntries
from kalcifer_scheduler.maintenance import Maintenance
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.scheduler.support import RecordingEngine, Seeder, utc_now


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


async def _seed_segment_entry_flow(
    sched_db: AsyncEngine,
    *,
    re_entry: str,
    rules: list[dict[str, Any]],
    customers: dict[str, dict[str, Any]],
) -> tuple[uuid.UUID, uuid.UUID]:
    """A tenant with an active flow entered by `segment_entry` on a segment of `rules`, and `customers`
    (external id -> attributes); returns the tenant's and the flow's ids."""
    tenant, flow, segment = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    graph = {
        "nodes": [
            {"id": "entry", "type": "segment_entry", "config": {"segment_id": str(segment)}},
            {"id": "done", "type": "exit", "config": {}},
        ],
        "edges": [{"source": "entry", "target": "done"}],
    }
    async with sched_db.begin() as connection:
        await connection.execute(text("INSERT INTO tenants (id, name) VALUES (:id, 'entries')"), {"id": tenant})
        await connection.execute(
            text(
                "INSERT INTO flows (id, tenant_id, name, status, active_version_number, re_entry)"
                " VALUES (:id, :tenant, 'segment flow', 'active', 1, :re_entry)"
            ),
            {"id": flow, "tenant": tenant, "re_entry": re_entry},
        )
        await connection.execute(
            text(
                "INSERT INTO flow_versions (tenant_id, flow_id, version_number, status, graph)"
                " VALUES (:tenant, :flow, 1, 'active', CAST(:graph AS jsonb))"
            ),
            {"tenant": tenant, "flow": flow, "graph": json.dumps(graph)},
        )
        await connection.execute(
            text(
                "INSERT INTO segments (id, tenant_id, name, match, rules)"
                " VALUES (:id, :tenant, 'members', 'all', CAST(:rules AS jsonb))"
            ),
            {"id": segment, "tenant": tenant, "rules": json.dumps(rules)},
        )
        for external_id, attributes in customers.items():
            await connection.execute(
                text(
                    "INSERT INTO customers (tenant_id, external_id, attributes)"
                    " VALUES (:tenant, :external, CAST(:attributes AS jsonb))"
                ),
                {"tenant": tenant, "external": external_id, "attributes": json.dumps(attributes)},
            )
    return tenant, flow


async def test_segment_entry_starts_members_who_are_not_in_yet_once(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    _, flow = await _seed_segment_entry_flow(
        sched_db,
        re_entry="after_exit",
        rules=[{"field": "attributes.tier", "operator": "eq", "value": "gold"}],
        customers={"ann": {"tier": "gold"}, "bob": {"tier": "silver"}, "cy": {"tier": "gold"}},
    )
    async with grpc.aio.insecure_channel(engine.address) as channel:
        entries = ScheduledEntries(scheduler_role_db, engine_pb2_grpc.EngineServiceStub(channel))
        first = await entries.run_once()
        second = await entries.run_once()

    assert (first, second) == (2, 0)
    mine = [start for start in engine.starts if start.flow_id == str(flow)]
    assert sorted(start.participant_id for start in mine) == ["ann", "cy"]
    assert {start.entry_node_id for start in mine} == {"entry"}
    assert all(start.request_id.endswith(":0") for start in mine)


async def test_segment_entry_never_starts_a_member_the_entry_ledger_knows_after_pruning(
    sched_db: AsyncEngine, scheduler_role_db: AsyncEngine, engine: RecordingEngine
) -> None:
    tenant, flow = await _seed_segment_entry_flow(
        sched_db, re_entry="never", rules=[], customers={"dee": {}, "eve": {}}
    )
    async with sched_db.begin() as connection:
        # dee entered long ago; her instance was pruned, the ledger row stays.
        await connection.execute(
            text(
                "INSERT INTO flow_entries (flow_id, participant_id, tenant_id, first_enter_time)"
                " VALUES (:flow, 'dee', :tenant, now() - interval '400 days')"
            ),
            {"flow": flow, "tenant": tenant},
        )
    async with grpc.aio.insecure_channel(engine.address) as channel:
        started = await ScheduledEntries(scheduler_role_db, engine_pb2_grpc.EngineServiceStub(channel)).run_once()

    assert started >= 1
    assert [s.participant_id for s in engine.starts if s.flow_id == str(flow)] == ["eve"]


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
        entries = ScheduledEntries(scheduler_role_db, engine_pb2_grpc.EngineServiceStub(channel))
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
        entries = ScheduledEntries(scheduler_role_db, engine_pb2_grpc.EngineServiceStub(channel))
        started = [await entries.run_once(moment) for moment in runs]

    assert started == [0, 2, 2, 0]
    mine = [start for start in engine.starts if start.flow_id in {str(spring_flow), str(autumn_flow)}]
    # dee and eve once each, at the one slot of each night (request ids are `<journey>:<slot>:<participant>`).
    assert sorted(start.request_id for start in mine) == sorted(
        f"journey:{journey}:{slot}:{participant}"
        for journey, slot in ((spring["skipped"], "2026-03-08T07:00Z"), (autumn["repeated"], "2026-11-01T05:30Z"))
        for participant in ("dee", "eve")
    )
