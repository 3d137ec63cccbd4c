"""GetFlowSummary over a flow of 1,000,000 instances, through the real API process, next to raw PostgreSQL.

The scratch database gets what a million runs of one flow would leave (seeded in SQL, not run): the flow's
counters as the engine keeps them (30 days, two versions, every shard, instance statuses and conversions, plus
the step, time, funnel and A/B counters of ten nodes, which the summary must skip), and the million
`flow_instances` rows themselves. We measure, one call at a time:
- ours: `GetFlowSummary` of all time through gRPC to a `kalcifer-api` process (auth, the flow check, the sum of
  the counter rows, the answer), median and p95;
- baseline: the same counter rows summed by a raw asyncpg SELECT (what the API adds on top of its query);
- for contrast: a raw asyncpg count(*) per status over the flow's million `flow_instances` rows (what answering
  by scanning would cost at the least).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
from kalcifer.v1 import analytics_pb2, analytics_pb2_grpc, tenant_pb2, tenant_pb2_grpc
from kalcifer_common.analytics import COUNTER_SHARDS

from bench.harness import BenchEnv, Comparison, median, percentile
from tests.support.processes import BIN, free_port, wait_serving
from tests.support.rpc import bearer

INSTANCES = 1_000_000
DAYS = 30
VERSIONS = 2
NODES = 10
CALLS = 300
SCAN_CALLS = 15
ADMIN_TOKEN = "bench-admin-token"

GRAPH = {
    "nodes": [{"id": "start", "type": "event_entry", "config": {"event_type": "go"}}]
    + [{"id": f"n{i}", "type": "add_tag", "config": {"tag": f"t{i}"}} for i in range(NODES)],
    "edges": [{"source": "start", "target": "n0"}]
    + [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(NODES - 1)],
}

# Instance counters as runs leave them: one row per (day, version, shard, counter); `entered` adds up to INSTANCES
# and each row's statuses add up to its `entered` (60% completed, 5% failed, 10% exited, the rest waiting).
_SEED_INSTANCE_COUNTERS = """
    WITH cells AS (
        SELECT d, v, s, row_number() OVER (ORDER BY d, v, s) - 1 AS n
        FROM generate_series(0, $3 - 1) d, generate_series(1, $4) v, generate_series(0, $5 - 1) s
    ), entered AS (
        SELECT d, v, s, $6 / ($3 * $4 * $5) + CASE WHEN n < $6 % ($3 * $4 * $5) THEN 1 ELSE 0 END AS e FROM cells
    )
    INSERT INTO flow_counters (flow_id, node_id, counter, day, version_number, label, shard, tenant_id, value)
    SELECT $1, '', c.counter, current_date - d, v, '', s, $2, c.value
    FROM entered CROSS JOIN LATERAL (VALUES
        ('entered', e), ('completed', e * 60 / 100), ('failed', e * 5 / 100), ('exited', e * 10 / 100),
        ('waiting', e - e * 60 / 100 - e * 5 / 100 - e * 10 / 100), ('converted', e * 30 / 100)
    ) AS c(counter, value)
"""

# What the same runs leave at the nodes (which the summary's query must step over): per node, day, version and
# shard, steps by status, a branch-less node's ten busiest time buckets, reached.
_SEED_NODE_COUNTERS = """
    INSERT INTO flow_counters (flow_id, node_id, counter, day, version_number, label, shard, tenant_id, value)
    SELECT $1, 'n' || node, c.counter, current_date - d, v, c.label, s, $2, c.value
    FROM generate_series(0, $3 - 1) d, generate_series(1, $4) v, generate_series(0, $5 - 1) s,
         generate_series(0, $6 - 1) node
    CROSS JOIN LATERAL (
        SELECT * FROM (VALUES ('step_entered', 'add_tag', 2000), ('step_completed', '', 1990),
                              ('step_failed', '', 10), ('reached', '', 2000)) AS fixed(counter, label, value)
        UNION ALL
        SELECT 'step_time', b::text, 199 FROM generate_series(1, 10) b
    ) AS c
"""

_SEED_INSTANCES = """
    INSERT INTO flow_instances (tenant_id, flow_id, version_number, participant_id, status, exclusive, context,
                                current_nodes, enter_time, end_time)
    SELECT $1, $2, 1 + g % 2, 'p' || g,
           CASE WHEN g % 100 < 60 THEN 'completed' WHEN g % 100 < 65 THEN 'failed'
                WHEN g % 100 < 75 THEN 'exited' ELSE 'waiting' END,
           false, '{}'::jsonb, '[]'::jsonb,
           now() - (g % $4) * interval '1 day', CASE WHEN g % 100 < 75 THEN now() END
    FROM generate_series(1, $3) g
"""

_RAW_SUMMARY = """
    SELECT counter, sum(value) FROM flow_counters
    WHERE tenant_id = $1 AND flow_id = $2 AND node_id = '' AND counter = ANY($3::text[])
    GROUP BY counter
"""
_RAW_SCAN = """
    SELECT status, count(*) FROM flow_instances WHERE tenant_id = $1 AND flow_id = $2 GROUP BY status
"""
_SUMMARY_COUNTERS = ["entered", "running", "waiting", "paused", "completed", "failed", "exited", "converted"]


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _latencies(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """`count` calls one at a time (after a few to warm up); each one's milliseconds."""
    for _ in range(3):
        await call()
    latencies: list[float] = []
    for _ in range(count):
        began = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - began) * 1000)
    return latencies


def _start_api(database_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "API_PORT": str(port),
        "API_METRICS_PORT": "0",  # no /metrics: its default port may be taken (a `make run` on the machine)
        "KALCIFER_ADMIN_TOKEN": ADMIN_TOKEN,
        "KALCIFER_INTERNAL_TOKEN": "bench-internal-token",
        "ENGINE_ADDR": "127.0.0.1:9",
        "LOG_LEVEL": "WARNING",
    }
    with log.open("ab") as out:
        process = subprocess.Popen([str(BIN / "kalcifer-api")], env=env, stdout=out, stderr=out)
    wait_serving(f"127.0.0.1:{port}", process=process)
    return process, f"127.0.0.1:{port}"


async def _seed(dsn: str, tenant: uuid.UUID) -> uuid.UUID:
    conn = await asyncpg.connect(dsn)
    try:
        flow: uuid.UUID = await conn.fetchval(
            "INSERT INTO flows (tenant_id, name, status, active_version_number) "
            "VALUES ($1, 'a million', 'active', $2) RETURNING id",
            tenant,
            VERSIONS,
        )
        for version in range(1, VERSIONS + 1):
            await conn.execute(
                "INSERT INTO flow_versions (tenant_id, flow_id, version_number, status, graph) "
                "VALUES ($1, $2, $3, $4, $5::jsonb)",
                tenant,
                flow,
                version,
                "active" if version == VERSIONS else "superseded",
                json.dumps(GRAPH),
            )
        await conn.execute(_SEED_INSTANCE_COUNTERS, flow, tenant, DAYS, VERSIONS, COUNTER_SHARDS, INSTANCES)
        await conn.execute(_SEED_NODE_COUNTERS, flow, tenant, DAYS, VERSIONS, COUNTER_SHARDS, NODES)
        await conn.execute(_SEED_INSTANCES, tenant, flow, INSTANCES, DAYS)
        await conn.execute("VACUUM ANALYZE flow_instances")
        await conn.execute("VACUUM ANALYZE flow_counters")
        return flow
    finally:
        await conn.close()


async def run(env: BenchEnv) -> list[Comparison]:
    """Seed a million instances' worth, then time GetFlowSummary, the raw counter SELECT and the raw scan."""
    dsn = _dsn(env.database_url)
    process, address = _start_api(env.database_url, env.work_dir / "api.log")
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            created = await tenant_pb2_grpc.TenantServiceStub(channel).CreateTenant(
                tenant_pb2.CreateTenantRequest(name="bench"), metadata=bearer(ADMIN_TOKEN)
            )
            tenant = uuid.UUID(created.tenant.id)
            flow = await _seed(dsn, tenant)
            stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
            request = analytics_pb2.GetFlowSummaryRequest(flow_id=str(flow))
            auth = bearer(created.raw_key)
            summary = await stub.GetFlowSummary(request, metadata=auth, timeout=30)
            assert summary.entered == INSTANCES, summary
            ours = await _latencies(lambda: stub.GetFlowSummary(request, metadata=auth, timeout=30), CALLS)
        conn = await asyncpg.connect(dsn)
        try:
            raw = await _latencies(lambda: conn.fetch(_RAW_SUMMARY, tenant, flow, _SUMMARY_COUNTERS), CALLS)
            scan = await _latencies(lambda: conn.fetch(_RAW_SCAN, tenant, flow), SCAN_CALLS)
            counter_rows = await conn.fetchval("SELECT count(*) FROM flow_counters WHERE flow_id = $1", flow)
        finally:
            await conn.close()
    finally:
        process.terminate()
        process.wait(15)
    extra: dict[str, float | int | str] = {"instances": INSTANCES, "counter_rows": counter_rows}
    name = "analytics: GetFlowSummary (1M)"
    return [
        Comparison(
            f"{name} median",
            "ms",
            median(ours),
            median(raw),
            "raw asyncpg SELECT of its counter rows ms",
            higher_is_better=False,
            extra=extra,
        ),
        Comparison(
            f"{name} p95",
            "ms",
            percentile(ours, 95),
            percentile(raw, 95),
            "raw asyncpg SELECT of its counter rows ms",
            higher_is_better=False,
            extra=extra,
        ),
        Comparison(
            f"{name} median vs a scan",
            "ms",
            median(ours),
            median(scan),
            "raw asyncpg count(*) per status of 1M flow_instances ms",
            higher_is_better=False,
            extra=extra,
        ),
    ]
