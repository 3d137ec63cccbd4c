"""AnalyticsService through the public API, on a real flow run by the real engine: every figure of the four RPCs
equals what the test counts itself, in SQL, from `flow_instances`, `execution_steps`, `conversions` and
`ab_assignments`, at every stage of the flow's life (branches, an A/B split with conversions and re-entries,
failures, waits resumed by events, cancels, a version migration, pause, resume, archive); pruning finished
instances changes no figure; bad requests are refused with their field violations."""

from __future__ import annotations

import functools
import importlib.util
import math
import statistics
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import kalcifer_common.db
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from kalcifer.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    flow_pb2,
    flow_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
    journey_pb2,
    trigger_pb2,
    trigger_pb2_grpc,
)
from kalcifer_common.structs import dict_to_struct
from kalcifer_engine.repo.instances import prune_finished_instances
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.integration.api.marketing import Stubs
from tests.support.processes import Suite
from tests.support.rpc import field_violations, rpc_error
from tests.support.tenants import Tenant, new_tenant

NODES: list[tuple[str, str, dict[str, Any]]] = [
    ("start", "event_entry", {"event_type": "signup"}),
    ("tier", "condition", {"field": "tier", "operator": "eq", "value": "gold"}),
    ("ab", "ab_split", {"variants": [{"key": "a", "weight": 1}, {"key": "b", "weight": 1}]}),
    ("buy_a", "track_conversion", {"event_name": "purchase", "revenue": 10}),
    ("score_check", "condition", {"field": "score", "operator": "gt", "value": 50}),
    ("buy_b", "track_conversion", {"event_name": "purchase", "revenue": 4.5}),
    ("done", "exit", {}),
    # Fails at run time for a score of 0: CEL integer division by zero.
    ("calc", "custom_code", {"expression": "100 / score", "output": "ratio"}),
    ("hold", "wait_for_event", {"event_type": "ping", "timeout": "1h"}),
    # Reached twice by the instances whose wait is resumed (a join): once per instance in the funnel.
    ("note", "add_tag", {"tag": "silver"}),
    ("goal", "goal_reached", {"goal_name": "engaged"}),
    ("gave_up", "exit", {}),
]
EDGES = [
    ("start", "tier", ""),
    ("tier", "ab", "true"),
    ("ab", "buy_a", "a"),
    ("ab", "score_check", "b"),
    ("score_check", "buy_b", "true"),
    ("score_check", "done", "false"),
    ("tier", "calc", "false"),
    ("calc", "hold", ""),
    ("calc", "note", ""),
    ("hold", "note", "event_received"),
    ("hold", "goal", "event_received"),
    ("hold", "gave_up", "timed_out"),
]
FUNNELS = [["start", "tier", "ab", "buy_a"], ["start", "calc", "note", "hold", "goal"], ["ab", "score_check", "buy_b"]]
# Time-at-node estimates are the middle of a log bucket a quarter of a doubling wide: within 2^(1/8) of the truth.
BUCKET_HALF_WIDTH = 2 ** (1 / 8)


def _graph(**changed: dict[str, Any]) -> flow_pb2.FlowGraph:
    return flow_pb2.FlowGraph(
        nodes=[
            flow_pb2.GraphNode(id=node_id, type=node_type, config=dict_to_struct(changed.get(node_id, config)))
            for node_id, node_type, config in NODES
        ],
        edges=[flow_pb2.GraphEdge(source=source, target=target, branch=branch) for source, target, branch in EDGES],
    )


def _context(n: int) -> dict[str, Any]:
    """Even participants are gold (A/B split, conversions); odd ones silver, of whom every sixth fails at `calc`."""
    if n % 2 == 0:
        return {"tier": "gold", "score": (n * 37) % 100}
    return {"tier": "silver", "score": 0 if n % 6 == 1 else 10 + n}


@dataclass(frozen=True)
class Scope:
    """A version (0 = all) and UTC days [first_day, end_day) (None = open)."""

    version_number: int = 0
    first_day: date | None = None
    end_day: date | None = None

    def fields(self, flow_id: str) -> dict[str, Any]:
        """The request fields of this scope."""
        fields: dict[str, Any] = {"flow_id": flow_id, "version_number": self.version_number}
        for name, day in (("start_time", self.first_day), ("end_time", self.end_day)):
            if day is not None:
                stamp = Timestamp()
                stamp.FromDatetime(datetime(day.year, day.month, day.day, tzinfo=UTC))
                fields[name] = stamp
        return fields

    @property
    def params(self) -> dict[str, Any]:
        """Its SQL parameters."""
        return {"v": self.version_number, "d1": self.first_day, "d2": self.end_day}


_DAY_FILTER = """
    AND (CAST(:d1 AS date) IS NULL OR ({moment} AT TIME ZONE 'UTC')::date >= CAST(:d1 AS date))
    AND (CAST(:d2 AS date) IS NULL OR ({moment} AT TIME ZONE 'UTC')::date < CAST(:d2 AS date))
"""

# What the test counts itself, straight from the tables (the definitions analytics.proto documents).
SUMMARY_SQL = f"""
    SELECT count(*) AS entered,
           count(*) FILTER (WHERE i.status = 'running') AS running,
           count(*) FILTER (WHERE i.status = 'waiting') AS waiting,
           count(*) FILTER (WHERE i.status = 'paused') AS paused,
           count(*) FILTER (WHERE i.status = 'completed') AS completed,
           count(*) FILTER (WHERE i.status = 'failed') AS failed,
           count(*) FILTER (WHERE i.status = 'exited') AS exited,
           count(*) FILTER (WHERE EXISTS (SELECT 1 FROM conversions c WHERE c.instance_id = i.id)) AS converted
    FROM flow_instances i
    WHERE i.flow_id = :f AND (:v = 0 OR i.version_number = :v) {_DAY_FILTER.format(moment="i.enter_time")}
"""
STEPS_SQL = f"""
    SELECT s.node_id, s.node_type, s.status, s.output ->> 'branch' AS branch, s.start_time, s.end_time
    FROM execution_steps s JOIN flow_instances i ON i.id = s.instance_id
    WHERE i.flow_id = :f AND (:v = 0 OR s.version_number = :v) {_DAY_FILTER.format(moment="s.start_time")}
    ORDER BY s.seq
"""
REACHED_SQL = f"""
    SELECT node_id, count(*) AS reached FROM (
        SELECT DISTINCT ON (s.instance_id, s.node_id) s.node_id, s.version_number, i.enter_time
        FROM execution_steps s JOIN flow_instances i ON i.id = s.instance_id
        WHERE i.flow_id = :f
        ORDER BY s.instance_id, s.node_id, s.seq
    ) first_visits
    WHERE (:v = 0 OR version_number = :v) {_DAY_FILTER.format(moment="enter_time")}
    GROUP BY node_id
"""
AB_SQL = f"""
    SELECT a.variant_key AS key, count(*) AS participants,
           count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM conversions c
               WHERE c.flow_id = a.flow_id AND c.participant_id = a.participant_id AND c.create_time >= a.create_time
           )) AS conversions,
           coalesce(sum((
               SELECT sum(c.revenue) FROM conversions c
               WHERE c.flow_id = a.flow_id AND c.participant_id = a.participant_id AND c.create_time >= a.create_time
           )), 0) AS revenue
    FROM ab_assignments a
    WHERE a.flow_id = :f AND a.node_id = :node
      AND (:v = 0 OR :v = (
          SELECT s.version_number FROM execution_steps s JOIN flow_instances i ON i.id = s.instance_id
          WHERE i.flow_id = a.flow_id AND i.participant_id = a.participant_id AND s.node_id = a.node_id
          ORDER BY s.seq LIMIT 1))
      {_DAY_FILTER.format(moment="a.create_time")}
    GROUP BY a.variant_key
"""


@pytest.fixture(scope="module")
def analytics(channel: grpc.Channel) -> analytics_pb2_grpc.AnalyticsServiceStub:
    return analytics_pb2_grpc.AnalyticsServiceStub(channel)


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    """Calls in flight at once, so concurrent runs of the flow share counters (and shards)."""
    with ThreadPoolExecutor(8) as executor:
        yield executor


async def _rows(sessions: async_sessionmaker[AsyncSession], sql: str, **params: Any) -> list[Any]:
    async with sessions() as session:
        return list((await session.execute(text(sql), params)).all())


def _nearest_rank(values: list[timedelta], percent: int) -> timedelta:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent * len(ordered) / 100)) - 1]


def _close_to(estimate: timedelta, exact: timedelta) -> bool:
    """Whether a bucket estimate stands for `exact` (bucket 0, under 1 ms, is estimated as 0.5 ms)."""
    if estimate == timedelta(microseconds=500):
        return exact < timedelta(milliseconds=1)
    slack = timedelta(microseconds=1)
    return estimate / BUCKET_HALF_WIDTH - slack <= exact <= estimate * BUCKET_HALF_WIDTH + slack


def _p_value(base: tuple[int, int], other: tuple[int, int]) -> float | None:
    (c1, n1), (c2, n2) = base, other
    if not n1 or not n2:
        return None
    pooled = (c1 + c2) / (n1 + n2)
    if pooled in (0, 1):
        return 1.0
    z = (c2 / n2 - c1 / n1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 2 * (1 - statistics.NormalDist().cdf(abs(z)))


@dataclass
class Checked:
    """The four answers for one scope, as compared."""

    summary: analytics_pb2.GetFlowSummaryResponse
    nodes: analytics_pb2.GetNodeStatsResponse
    funnels: list[analytics_pb2.GetFunnelResponse]
    ab: analytics_pb2.GetAbResultsResponse


async def _check_scope(
    analytics: analytics_pb2_grpc.AnalyticsServiceStub,
    tenant: Tenant,
    sessions: async_sessionmaker[AsyncSession],
    flow_id: str,
    scope: Scope,
) -> Checked:
    """Every figure of the four RPCs for `scope` equals the test's own count from the tables."""
    fields, params, auth = scope.fields(flow_id), {"f": uuid.UUID(flow_id), **scope.params}, tenant.auth

    summary = analytics.GetFlowSummary(analytics_pb2.GetFlowSummaryRequest(**fields), metadata=auth)
    (expected,) = await _rows(sessions, SUMMARY_SQL, **params)
    assert summary.entered == expected.entered, scope
    assert (summary.running, summary.waiting, summary.paused) == (expected.running, expected.waiting, expected.paused)
    assert (summary.completed, summary.failed, summary.exited) == (
        expected.completed,
        expected.failed,
        expected.exited,
    ), scope
    assert summary.converted == expected.converted, scope
    assert summary.conversion_rate == pytest.approx(expected.converted / expected.entered if expected.entered else 0)

    nodes = analytics.GetNodeStats(analytics_pb2.GetNodeStatsRequest(**fields), metadata=auth)
    steps = await _rows(sessions, STEPS_SQL, **params)
    by_node: dict[str, list[Any]] = {}
    for step in steps:
        by_node.setdefault(step.node_id, []).append(step)
    assert [node.node_id for node in nodes.nodes] == sorted(by_node), scope
    for node in nodes.nodes:
        rows = by_node[node.node_id]
        statuses = [row.status for row in rows]
        assert node.node_type == rows[-1].node_type
        assert node.entered == len(rows), (scope, node.node_id)
        assert (node.completed, node.failed, node.waiting, node.skipped, node.cancelled) == tuple(
            statuses.count(status) for status in ("completed", "failed", "waiting", "skipped", "cancelled")
        ), (scope, node.node_id)
        branches: dict[str, int] = {}
        for row in rows:
            if row.status == "completed" and row.branch is not None:
                branches[row.branch] = branches.get(row.branch, 0) + 1
        assert dict(node.branches) == branches, (scope, node.node_id)
        times = [row.end_time - row.start_time for row in rows if row.status in ("completed", "failed", "skipped")]
        assert node.HasField("median_time") == bool(times) == node.HasField("p95_time")
        if times:
            assert _close_to(node.median_time.ToTimedelta(), _nearest_rank(times, 50)), (node, times)
            assert _close_to(node.p95_time.ToTimedelta(), _nearest_rank(times, 95)), (node, times)

    reached = {row.node_id: row.reached for row in await _rows(sessions, REACHED_SQL, **params)}
    funnels = []
    for node_ids in FUNNELS:
        answer = analytics.GetFunnel(analytics_pb2.GetFunnelRequest(**fields, node_ids=node_ids), metadata=auth)
        counts = [reached.get(node_id, 0) for node_id in node_ids]
        assert [(step.node_id, step.count) for step in answer.steps] == list(zip(node_ids, counts, strict=True))
        assert [step.conversion_rate for step in answer.steps] == pytest.approx(
            [count / counts[0] if counts[0] else 0.0 for count in counts]
        )
        funnels.append(answer)

    ab = analytics.GetAbResults(analytics_pb2.GetAbResultsRequest(**fields, node_id="ab"), metadata=auth)
    variants = {row.key: row for row in await _rows(sessions, AB_SQL, node="ab", **params)}
    assert [variant.key for variant in ab.variants] == ["a", "b"]
    base: tuple[int, int] | None = None
    for variant in ab.variants:
        row = variants.get(variant.key)
        participants, conversions = (row.participants, row.conversions) if row else (0, 0)
        assert (variant.participants, variant.conversions) == (participants, conversions), (scope, variant)
        assert variant.revenue == pytest.approx(float(row.revenue) if row else 0.0)
        assert variant.conversion_rate == pytest.approx(conversions / participants if participants else 0.0)
        if base is None:
            base = (conversions, participants)
            assert not variant.HasField("p_value")
        else:
            expected_p = _p_value(base, (conversions, participants))
            assert variant.HasField("p_value") == (expected_p is not None)
            if expected_p is not None:
                assert variant.p_value == pytest.approx(expected_p, abs=1e-9)
    return Checked(summary, nodes, funnels, ab)


async def _check(
    analytics: analytics_pb2_grpc.AnalyticsServiceStub,
    tenant: Tenant,
    sessions: async_sessionmaker[AsyncSession],
    flow_id: str,
    versions: tuple[int, ...] = (0, 1),
) -> dict[Scope, Checked]:
    """Every scope of interest: each version, and the open range, today, and the days before and after."""
    today = datetime.now(UTC).date()
    day = timedelta(days=1)
    scopes = [Scope(version) for version in versions] + [
        Scope(0, today, today + day),
        Scope(0, today - day, today),
        Scope(0, today + day, None),
        Scope(versions[-1], None, today + day),
    ]
    return {scope: await _check_scope(analytics, tenant, sessions, flow_id, scope) for scope in scopes}


async def test_every_figure_equals_what_the_tables_say_through_the_life_of_a_flow(
    analytics: analytics_pb2_grpc.AnalyticsServiceStub,
    flows: flow_pb2_grpc.FlowServiceStub,
    stubs: Stubs,
    triggers: trigger_pb2_grpc.TriggerServiceStub,
    events: event_pb2_grpc.EventServiceStub,
    instances: instance_pb2_grpc.InstanceServiceStub,
    tenant: Tenant,
    sessions: async_sessionmaker[AsyncSession],
    pool: ThreadPoolExecutor,
) -> None:
    auth = tenant.auth
    flow = flows.CreateFlow(
        flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="analytics"), graph=_graph()), metadata=auth
    )
    # A journey wraps the flow: its goal event converts (once per instance with the goal_reached node's goal),
    # its exit criterion takes participants out.
    journey = stubs.journeys.CreateJourney(
        journey_pb2.CreateJourneyRequest(
            journey=journey_pb2.Journey(
                name="analytics",
                flow_id=flow.id,
                goals=[journey_pb2.Goal(name="engaged", event_type="bought")],
                exit_criteria=[journey_pb2.ExitCriterion(event_type="unsubscribe")],
            )
        ),
        metadata=auth,
    )
    stubs.journeys.LaunchJourney(journey_pb2.LaunchJourneyRequest(id=journey.id), metadata=auth)

    def trigger(n: int) -> str:
        request = trigger_pb2.TriggerFlowRequest(
            flow_id=flow.id, participant_id=f"p{n:03}", context=dict_to_struct(_context(n))
        )
        return triggers.TriggerFlow(request, metadata=auth).instance_id

    def send(event_type: str, participants: list[int]) -> int:
        """The events in one IngestEvents call (routed several per transaction); how many waits they resumed."""
        batch = event_pb2.IngestEventsRequest(
            events=[
                event_pb2.IngestEventRequest(participant_id=f"p{n:03}", event_type=event_type) for n in participants
            ]
        )
        return sum(result.resumed for result in events.IngestEvents(batch, metadata=auth).results)

    started = dict(zip(range(60), pool.map(trigger, range(60)), strict=True))
    first = await _check(analytics, tenant, sessions, flow.id)
    assert first[Scope()].summary.failed == 10, "every sixth silver participant fails at calc"
    assert first[Scope()].summary.waiting == 20

    # Of the 20 waiting silver participants: 5 reach the journey's goal by event (converted, still waiting), then
    # 11 get the awaited event (resumed to the goal node; one of them had its goal already), 5 are cancelled and
    # 1 leaves by the exit criterion. Some gold participants, whose instances completed, enter again (same
    # variant, more revenue).
    waiting = [n for n in range(60) if n % 2 == 1 and n % 6 != 1]
    assert send("bought", [n for n in waiting if n % 12 == 9]) == 0
    pinged = [n for n in waiting if n % 4 == 3] + [9]
    assert send("ping", pinged) == len(pinged)
    for n in [n for n in waiting if n % 12 == 5]:
        cancel = instance_pb2.CancelInstanceRequest(id=started[n], reason="operator")
        instances.CancelInstance(cancel, metadata=auth)
    send("unsubscribe", [21])
    list(pool.map(trigger, [n for n in range(60) if n % 8 == 0]))
    checked = await _check(analytics, tenant, sessions, flow.id)
    everything = checked[Scope()]
    assert (everything.summary.entered, everything.summary.waiting, everything.summary.exited) == (68, 3, 6)
    assert everything.summary.converted > 0
    assert {step.count for step in everything.funnels[0].steps[:1]} == {68}
    assert all(variant.participants > 0 for variant in everything.ab.variants)
    async with sessions() as session:
        shards = await session.scalar(
            text("SELECT count(DISTINCT shard) FROM flow_counters WHERE flow_id = :f"), {"f": uuid.UUID(flow.id)}
        )
    assert shards is not None
    assert shards > 1, "concurrent runs spread over several shards, summed by the reader"

    # Version 2 (a longer timeout at `hold`): the waiting instances move to it and count there from now on.
    flows.CreateFlowVersion(
        flow_pb2.CreateFlowVersionRequest(
            flow_id=flow.id, graph=_graph(hold={"event_type": "ping", "timeout": "2h"}), changelog="patience"
        ),
        metadata=auth,
    )
    migrated = flows.MigrateFlowVersion(
        flow_pb2.MigrateFlowVersionRequest(
            flow_id=flow.id, version_number=2, strategy=flow_pb2.MIGRATION_STRATEGY_MIGRATE_ALL
        ),
        metadata=auth,
    )
    assert migrated.migrated == 3
    list(pool.map(trigger, range(100, 112)))
    send("ping", [101, 103])
    await _check(analytics, tenant, sessions, flow.id, versions=(0, 1, 2))

    stubs.journeys.PauseJourney(journey_pb2.PauseJourneyRequest(id=journey.id), metadata=auth)
    paused = await _check(analytics, tenant, sessions, flow.id, versions=(0, 2))
    assert paused[Scope()].summary.paused > 0
    stubs.journeys.ResumeJourney(journey_pb2.ResumeJourneyRequest(id=journey.id), metadata=auth)
    await _check(analytics, tenant, sessions, flow.id, versions=(0, 2))

    stubs.journeys.ArchiveJourney(journey_pb2.ArchiveJourneyRequest(id=journey.id), metadata=auth)
    archived = await _check(analytics, tenant, sessions, flow.id, versions=(0, 1, 2))
    assert archived[Scope()].summary.running + archived[Scope()].summary.waiting == 0

    assert await _counters_filled_by_migration(sessions, flow.id) == await _counters(sessions, flow.id)

    # Pruning deletes finished instances with their steps; the counters, and so every answer, stay.
    async with sessions() as session, session.begin():
        connection = await session.connection()
        assert await prune_finished_instances(connection, datetime.now(UTC) + timedelta(days=1), 10_000) > 0
    for scope, before in archived.items():
        fields = scope.fields(flow.id)
        assert analytics.GetFlowSummary(analytics_pb2.GetFlowSummaryRequest(**fields), metadata=auth) == before.summary
        assert analytics.GetNodeStats(analytics_pb2.GetNodeStatsRequest(**fields), metadata=auth) == before.nodes
        for node_ids, funnel in zip(FUNNELS, before.funnels, strict=True):
            request = analytics_pb2.GetFunnelRequest(**fields, node_ids=node_ids)
            assert analytics.GetFunnel(request, metadata=auth) == funnel
        request_ab = analytics_pb2.GetAbResultsRequest(**fields, node_id="ab")
        assert analytics.GetAbResults(request_ab, metadata=auth) == before.ab


_COUNTERS_SQL = """
    SELECT node_id, counter, day, version_number, label, sum(value) AS value FROM flow_counters
    WHERE flow_id = :f GROUP BY 1, 2, 3, 4, 5 HAVING sum(value) <> 0
"""


async def _counters(sessions: async_sessionmaker[AsyncSession], flow_id: str) -> dict[tuple[Any, ...], Any]:
    rows = await _rows(sessions, _COUNTERS_SQL, f=uuid.UUID(flow_id))
    return {tuple(row[:5]): row.value for row in rows}


async def _counters_filled_by_migration(
    sessions: async_sessionmaker[AsyncSession], flow_id: str
) -> dict[tuple[Any, ...], Any]:
    """The counters revision 0014 fills from the tables (in a transaction rolled back): for a database upgraded
    with instances in it, the same as the engine's."""
    path = Path(kalcifer_common.db.__file__).parent / "migrations" / "versions" / "0015_flow_counters.py"
    spec = importlib.util.spec_from_file_location("flow_counters_0014", path)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    async with sessions() as session, session.begin():
        await session.execute(text("DELETE FROM flow_counters"))
        await session.execute(text("UPDATE ab_assignments SET version_number = NULL, convert_time = NULL"))
        for statement in migration.FILL_STATEMENTS:
            await session.execute(text(statement))
        rows = (await session.execute(text(_COUNTERS_SQL), {"f": uuid.UUID(flow_id)})).all()
        await session.rollback()
    return {tuple(row[:5]): row.value for row in rows}


@pytest.fixture(scope="module")
def flow_id(flows: flow_pb2_grpc.FlowServiceStub, tenant: Tenant) -> str:
    """A flow of the module's tenant (draft, version 1)."""
    created = flows.CreateFlow(
        flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name="asked about"), graph=_graph()), metadata=tenant.auth
    )
    return created.id


def test_a_flow_of_another_tenant_or_none_is_not_found(
    analytics: analytics_pb2_grpc.AnalyticsServiceStub, suite: Suite, flow_id: str
) -> None:
    other = new_tenant(suite, "analytics-other")
    for flow in (flow_id, str(uuid.uuid4())):
        requests: list[tuple[Any, Any]] = [
            (analytics.GetFlowSummary, analytics_pb2.GetFlowSummaryRequest(flow_id=flow)),
            (analytics.GetNodeStats, analytics_pb2.GetNodeStatsRequest(flow_id=flow)),
            (analytics.GetFunnel, analytics_pb2.GetFunnelRequest(flow_id=flow, node_ids=["start"])),
            (analytics.GetAbResults, analytics_pb2.GetAbResultsRequest(flow_id=flow, node_id="ab")),
        ]
        for method, request in requests:
            error = rpc_error(functools.partial(method, request, metadata=other.auth))
            assert error.code() == grpc.StatusCode.NOT_FOUND


def test_a_version_the_flow_does_not_have_is_not_found(
    analytics: analytics_pb2_grpc.AnalyticsServiceStub, tenant: Tenant, flow_id: str
) -> None:
    request = analytics_pb2.GetFlowSummaryRequest(flow_id=flow_id, version_number=7)
    assert (
        rpc_error(lambda: analytics.GetFlowSummary(request, metadata=tenant.auth)).code() == grpc.StatusCode.NOT_FOUND
    )
    funnel = analytics_pb2.GetFunnelRequest(flow_id=flow_id, version_number=7, node_ids=["start"])
    assert rpc_error(lambda: analytics.GetFunnel(funnel, metadata=tenant.auth)).code() == grpc.StatusCode.NOT_FOUND


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def test_a_bad_scope_names_every_bad_field(
    analytics: analytics_pb2_grpc.AnalyticsServiceStub, tenant: Tenant, flow_id: str
) -> None:
    midnight = datetime(2026, 3, 1, tzinfo=UTC)
    request = analytics_pb2.GetNodeStatsRequest(
        flow_id="not-a-uuid",
        version_number=-1,
        start_time=_stamp(midnight + timedelta(hours=5)),
        end_time=_stamp(midnight - timedelta(days=2)),
    )
    error = rpc_error(lambda: analytics.GetNodeStats(request, metadata=tenant.auth))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(error)) == {"flow_id", "version_number", "start_time", "end_time"}
    assert "UTC midnight" in field_violations(error)["start_time"]
    backwards = analytics_pb2.GetFlowSummaryRequest(
        flow_id=flow_id, start_time=_stamp(midnight), end_time=_stamp(midnight - timedelta(days=1))
    )
    error = rpc_error(lambda: analytics.GetFlowSummary(backwards, metadata=tenant.auth))
    assert field_violations(error) == {"end_time": "must not be before start_time"}
    not_midnight = analytics_pb2.GetFlowSummaryRequest(
        flow_id=flow_id, end_time=_stamp(midnight + timedelta(seconds=1))
    )
    error = rpc_error(lambda: analytics.GetFlowSummary(not_midnight, metadata=tenant.auth))
    assert set(field_violations(error)) == {"end_time"}


def test_a_funnel_names_known_distinct_nodes(
    analytics: analytics_pb2_grpc.AnalyticsServiceStub, tenant: Tenant, flow_id: str
) -> None:
    def violations(node_ids: list[str], version_number: int = 0) -> dict[str, str]:
        request = analytics_pb2.GetFunnelRequest(flow_id=flow_id, version_number=version_number, node_ids=node_ids)
        error = rpc_error(lambda: analytics.GetFunnel(request, metadata=tenant.auth))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        return field_violations(error)

    assert set(violations([])) == {"node_ids"}
    assert set(violations(["start"] * 21)) == {"node_ids"}
    assert set(violations(["start", "nowhere", "tier", "elsewhere"])) == {"node_ids[1]", "node_ids[3]"}
    assert set(violations(["start", "", "start"])) == {"node_ids[1]", "node_ids[2]"}
    assert set(violations(["start", "nowhere"], version_number=1)) == {"node_ids[1]"}
    answer = analytics.GetFunnel(
        analytics_pb2.GetFunnelRequest(flow_id=flow_id, node_ids=["start", "goal"]), metadata=tenant.auth
    )
    assert [(step.node_id, step.count, step.conversion_rate) for step in answer.steps] == [
        ("start", 0, 0.0),
        ("goal", 0, 0.0),
    ]


def test_ab_results_need_an_ab_split_node(
    analytics: analytics_pb2_grpc.AnalyticsServiceStub, tenant: Tenant, flow_id: str
) -> None:
    for node_id in ("", "nowhere", "tier"):
        request = analytics_pb2.GetAbResultsRequest(flow_id=flow_id, node_id=node_id)
        error = rpc_error(functools.partial(analytics.GetAbResults, request, metadata=tenant.auth))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(error)) == {"node_id"}
    answer = analytics.GetAbResults(
        analytics_pb2.GetAbResultsRequest(flow_id=flow_id, node_id="ab", version_number=1), metadata=tenant.auth
    )
    assert [(v.key, v.participants, v.HasField("p_value")) for v in answer.variants] == [
        ("a", 0, False),
        ("b", 0, False),
    ]
