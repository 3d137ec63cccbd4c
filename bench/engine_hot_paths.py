"""Engine hot paths (SPEC 9): trigger-to-first-wait and event-to-resume, next to raw PostgreSQL in the same run.

An engine process (the real composition root, with the runtime's test node types so the figures measure the
runtime, not one node's behaviour) serves a scratch database. We measure, through gRPC:
- trigger-to-first-wait: `StartInstance` of a flow `event_entry -> wait`, i.e. insert the instance, run the
  trigger and the wait node, write the steps, the wait row and the instance, commit;
- event-to-resume: `RouteEvent` of a stored event to a participant whose instance waits for it, i.e. claim the
  event, lock the instance, fire the wait, run `wait_for_event -> send` (a delivery), commit.
Each as throughput (32 calls in flight) and median latency (one at a time); event-to-resume also in RouteEvents
batches of 100 (4 in flight). All next to the raw baseline: asyncpg
`INSERT` + `COMMIT` of one small row per transaction, with the same concurrency and one at a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer_common.rpc.clients import internal_channel

from bench.harness import BenchEnv, Comparison, median
from tests.support.processes import free_port, wait_serving

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-internal-token"
CONCURRENCY = 32
THROUGHPUT_CALLS = 1000
LATENCY_CALLS = 200
BATCH = 100
START_GRAPH = {
    "nodes": [
        {"id": "start", "type": "event_entry", "config": {"event_type": "go"}},
        {"id": "w", "type": "t_pause", "config": {"seconds": 3600}},
    ],
    "edges": [{"source": "start", "target": "w"}],
}
RESUME_GRAPH = {
    "nodes": [
        {"id": "start", "type": "event_entry", "config": {"event_type": "go"}},
        {"id": "a", "type": "t_await", "config": {"event_type": "ping", "timeout": 3600}},
        {"id": "s", "type": "t_send", "config": {}},
    ],
    "edges": [{"source": "start", "target": "a"}, {"source": "a", "target": "s", "branch": "event_received"}],
}


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _timed(calls: list[Callable[[], Awaitable[object]]], concurrency: int) -> tuple[float, list[float]]:
    """Run the calls with `concurrency` in flight; (calls per second, per-call latencies in ms)."""
    queue = list(reversed(calls))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            call = queue.pop()
            began = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(calls) / (time.perf_counter() - began), latencies


async def _raw_postgres(dsn: str) -> tuple[float, float]:
    """(transactions/s with CONCURRENCY connections, median ms of one transaction) for INSERT + COMMIT."""
    pool = await asyncpg.create_pool(dsn, min_size=CONCURRENCY, max_size=CONCURRENCY)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS bench_raw (id uuid PRIMARY KEY, body jsonb)")

        async def one() -> None:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO bench_raw VALUES ($1, $2)", uuid.uuid4(), '{"k": 1}')

        rate, _ = await _timed([one] * THROUGHPUT_CALLS, CONCURRENCY)
        _, latencies = await _timed([one] * LATENCY_CALLS, 1)
        return rate, median(latencies)
    finally:
        await pool.close()


async def _seed(dsn: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    conn = await asyncpg.connect(dsn)
    try:
        tenant = await conn.fetchval("INSERT INTO tenants (name) VALUES ('bench') RETURNING id")
        flows = []
        for graph in (START_GRAPH, RESUME_GRAPH):
            flow = await conn.fetchval(
                "INSERT INTO flows (tenant_id, name, status, active_version_number) "
                "VALUES ($1, 'bench', 'active', 1) RETURNING id",
                tenant,
            )
            await conn.execute(
                "INSERT INTO flow_versions (tenant_id, flow_id, version_number, status, graph) "
                "VALUES ($1, $2, 1, 'active', $3::jsonb)",
                tenant,
                flow,
                json.dumps(graph),
            )
            flows.append(flow)
        return tenant, flows[0], flows[1]
    finally:
        await conn.close()


def _start_engine(database_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ENGINE_PORT": str(port),
        "ENGINE_METRICS_PORT": "0",  # no /metrics: its default port may be taken (a `make run` on the machine)
        "KALCIFER_INTERNAL_TOKEN": TOKEN,
        "SCHEDULER_ADDR": "127.0.0.1:9",
        "RPC_TIMEOUT_SECONDS": "0.2",
        "LOG_LEVEL": "WARNING",
        "DB_POOL_SIZE": "20",
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.engine.engine_process"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    wait_serving(f"127.0.0.1:{port}", process=process)
    return process, f"127.0.0.1:{port}"


async def run(env: BenchEnv) -> list[Comparison]:
    """Measure both hot paths and the raw baseline."""
    dsn = _dsn(env.database_url)
    raw_rate, raw_latency = await _raw_postgres(dsn)
    tenant, start_flow, resume_flow = await _seed(dsn)
    process, address = _start_engine(env.database_url, env.work_dir / "engine.log")
    channel = internal_channel(address, token=TOKEN, timeout_seconds=60)
    try:
        stub = engine_pb2_grpc.EngineServiceStub(channel)

        def start(flow: uuid.UUID, participant: str) -> Callable[[], Awaitable[object]]:
            request = engine_pb2.StartInstanceRequest(
                tenant_id=str(tenant), flow_id=str(flow), participant_id=participant
            )
            return lambda: stub.StartInstance(request)

        start_rate, _ = await _timed([start(start_flow, f"t{n}") for n in range(THROUGHPUT_CALLS)], CONCURRENCY)
        _, start_latencies = await _timed([start(start_flow, f"l{n}") for n in range(LATENCY_CALLS)], 1)

        participants = [f"e{n}" for n in range(THROUGHPUT_CALLS + LATENCY_CALLS)]
        await _timed([start(resume_flow, p) for p in participants], CONCURRENCY)
        conn = await asyncpg.connect(dsn)
        try:
            event_ids = await conn.fetch(
                "INSERT INTO events (tenant_id, participant_id, event_type, data) "
                "SELECT $1, p, 'ping', '{\"n\": 1}'::jsonb FROM unnest($2::text[]) AS p RETURNING id, participant_id",
                tenant,
                participants,
            )
        finally:
            await conn.close()
        by_participant = {row["participant_id"]: row["id"] for row in event_ids}

        def route(participant: str) -> Callable[[], Awaitable[object]]:
            request = engine_pb2.RouteEventRequest(
                tenant_id=str(tenant),
                event_id=str(by_participant[participant]),
                participant_id=participant,
                event_type="ping",
            )
            return lambda: stub.RouteEvent(request)

        resume_rate, _ = await _timed([route(p) for p in participants[:THROUGHPUT_CALLS]], CONCURRENCY)
        _, resume_latencies = await _timed([route(p) for p in participants[THROUGHPUT_CALLS:]], 1)

        # The same path in batches (RouteEvents of BATCH events, several per commit), as IngestEvents sends them.
        batched = [f"x{n}" for n in range(THROUGHPUT_CALLS)]
        await _timed([start(resume_flow, p) for p in batched], CONCURRENCY)
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "INSERT INTO events (tenant_id, participant_id, event_type, data) "
                "SELECT $1, p, 'ping', '{}'::jsonb FROM unnest($2::text[]) AS p RETURNING id, participant_id",
                tenant,
                batched,
            )
        finally:
            await conn.close()
        requests = [
            engine_pb2.RouteEventRequest(
                tenant_id=str(tenant), event_id=str(r["id"]), participant_id=r["participant_id"], event_type="ping"
            )
            for r in rows
        ]

        def route_batch(chunk: list[engine_pb2.RouteEventRequest]) -> Callable[[], Awaitable[object]]:
            return lambda: stub.RouteEvents(engine_pb2.RouteEventsRequest(events=chunk))

        chunks = [requests[n : n + BATCH] for n in range(0, len(requests), BATCH)]
        batch_calls, _ = await _timed([route_batch(chunk) for chunk in chunks], 4)
        batch_rate = batch_calls * BATCH
    finally:
        await channel.close(None)
        process.terminate()
        process.wait(15)
    baseline = "raw asyncpg INSERT+COMMIT"
    return [
        Comparison("engine: trigger-to-first-wait throughput", "runs/s", start_rate, raw_rate, f"{baseline} tx/s"),
        Comparison(
            "engine: trigger-to-first-wait median latency",
            "ms",
            median(start_latencies),
            raw_latency,
            f"{baseline} ms",
            higher_is_better=False,
        ),
        Comparison("engine: event-to-resume throughput", "runs/s", resume_rate, raw_rate, f"{baseline} tx/s"),
        Comparison(
            f"engine: event-to-resume batched ({BATCH}/call)", "runs/s", batch_rate, raw_rate, f"{baseline} tx/s"
        ),
        Comparison(
            "engine: event-to-resume median latency",
            "ms",
            median(resume_latencies),
            raw_latency,
            f"{baseline} ms",
            higher_is_better=False,
        ),
    ]
