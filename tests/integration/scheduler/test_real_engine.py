"""The key timer guarantees with the real engine process: instances wait, the scheduler resumes them on time,
once, through a Redis flush; an event cancels an event wait's timeout for good.

The engine runs as `python -m tests.integration.engine.engine_process` (the real composition root with the engine
tests' node types added) because the built-in wait nodes cannot execute yet: `t_pause` waits like `wait` /
`wait_until` (a negative `seconds` is a moment already past) and `t_await` like `wait_for_event`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.scheduler.support import SWEEP_SECONDS, SchedulerProcess, new_token, scheduler_env
from tests.support.databases import REPO_ROOT
from tests.support.eventually import eventually
from tests.support.processes import free_port, wait_serving
from tests.support.rpc import bearer

TIMERS_KEY = "kalcifer:timers"  # the scheduler's armed timers (default REDIS_KEY_PREFIX)
# Room for a shared 2-core machine running the whole suite: the recovery tests below prove every instance resumes
# exactly once, not how fast hundreds of resumes run through one engine there (the on-time tests bound lateness).
RECOVERY_MARGIN_SECONDS = 30


@pytest.fixture(scope="module")
def real_token() -> str:
    """The internal token shared by the engine and the scheduler."""
    return new_token()


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    """Ports of the engine and the scheduler, chosen before either starts (each needs the other's)."""
    return {"engine": free_port(), "scheduler": free_port()}


@pytest.fixture(scope="module")
def engine_process(
    sched_database_url: str, real_token: str, ports: dict[str, int], logs: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The real `kalcifer-engine`, arming its timers on the scheduler below."""
    env = {
        **os.environ,
        "DATABASE_URL": sched_database_url,
        "KALCIFER_INTERNAL_TOKEN": real_token,
        "ENGINE_PORT": str(ports["engine"]),
        "SCHEDULER_ADDR": f"127.0.0.1:{ports['scheduler']}",
        "LOG_FORMAT": "json",
        "RPC_TIMEOUT_SECONDS": "3",
    }
    with (logs / "engine.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.engine.engine_process"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=REPO_ROOT,
        )
    try:
        wait_serving(f"127.0.0.1:{ports['engine']}", process=process)
        yield process
    finally:
        process.terminate()
        process.wait(15)


@pytest.fixture(scope="module")
def real_scheduler(
    engine_process: subprocess.Popen[bytes],
    sched_database_url: str,
    sched_redis_url: str,
    real_token: str,
    ports: dict[str, int],
    logs: Path,
) -> Iterator[SchedulerProcess]:
    """The scheduler, resuming into the real engine."""
    env = scheduler_env(sched_database_url, sched_redis_url, f"127.0.0.1:{ports['engine']}", real_token)
    process = SchedulerProcess(env, logs / "scheduler-real.log", port=ports["scheduler"]).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
async def engine_stub(
    real_scheduler: SchedulerProcess, ports: dict[str, int]
) -> AsyncIterator[engine_pb2_grpc.EngineServiceAsyncStub]:
    """An EngineService client."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['engine']}") as channel:
        stub: engine_pb2_grpc.EngineServiceAsyncStub = engine_pb2_grpc.EngineServiceStub(channel)
        yield stub


@pytest.fixture(scope="module")
async def tenant(sched_db: AsyncEngine) -> uuid.UUID:
    """A tenant of this module."""
    async with sched_db.begin() as connection:
        tenant_id: uuid.UUID = (
            await connection.execute(text("INSERT INTO tenants (name) VALUES ('timers') RETURNING id"))
        ).scalar_one()
    return tenant_id


async def _flow(db: AsyncEngine, tenant: uuid.UUID, nodes: list[dict[str, Any]], edges: list[dict[str, str]]) -> str:
    async with db.begin() as connection:
        flow_id = (
            await connection.execute(
                text(
                    "INSERT INTO flows (tenant_id, name, status, active_version_number)"
                    " VALUES (:t, 'timers', 'active', 1) RETURNING id"
                ),
                {"t": tenant},
            )
        ).scalar_one()
        await connection.execute(
            text(
                "INSERT INTO flow_versions (tenant_id, flow_id, version_number, status, graph)"
                " VALUES (:t, :f, 1, 'active', CAST(:g AS jsonb))"
            ),
            {"t": tenant, "f": flow_id, "g": json.dumps({"nodes": nodes, "edges": edges})},
        )
    return str(flow_id)


def _node(node_id: str, node_type: str, **config: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "config": config}


async def _start(
    stub: engine_pb2_grpc.EngineServiceAsyncStub, token: str, tenant: uuid.UUID, flow: str, count: int
) -> list[str]:
    async def one(i: int) -> str:
        response = await stub.StartInstance(
            engine_pb2.StartInstanceRequest(
                tenant_id=str(tenant), flow_id=flow, participant_id=f"p-{i}-{uuid.uuid4()}"
            ),
            metadata=bearer(token),
        )
        return response.instance_id

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _rows(db: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with db.connect() as connection:
        return list((await connection.execute(text(sql), params)).all())


async def _count(db: AsyncEngine, sql: str, instance_ids: list[str]) -> int:
    """`sql` (a count over `:ids`) for the instances."""
    [row] = await _rows(db, sql, ids=[uuid.UUID(i) for i in instance_ids])
    return int(row.n)


_COMPLETED = "SELECT count(*) AS n FROM flow_instances WHERE id = ANY(:ids) AND status = 'completed'"
# Waits a scheduler has claimed, or that are resolved already.
_TAKEN = (
    "SELECT count(*) AS n FROM waits w WHERE w.instance_id = ANY(:ids)"
    " AND (w.status <> 'pending' OR EXISTS (SELECT 1 FROM wait_claims c WHERE c.wait_id = w.id))"
)
# Waits not due yet, by the clock claims compare with.
_NOT_DUE = "SELECT count(*) AS n FROM waits WHERE instance_id = ANY(:ids) AND fire_time > now()"


async def _all_completed(db: AsyncEngine, instance_ids: list[str], *, within: float, what: str) -> None:
    await eventually(
        lambda: _count(db, _COMPLETED, instance_ids),
        until=lambda completed: completed == len(instance_ids),
        within=within,
        interval=0.1,
        what=what,
    )


async def _pause_flow(db: AsyncEngine, tenant: uuid.UUID, seconds: float) -> str:
    """entry -> t_pause(`seconds`) -> end."""
    return await _flow(
        db,
        tenant,
        [
            _node("entry", "event_entry", event_type="signup"),
            _node("pause", "t_pause", seconds=seconds),
            _node("done", "t_end"),
        ],
        [{"source": "entry", "target": "pause"}, {"source": "pause", "target": "done"}],
    )


async def _had_every_chance_to_fire(
    stub: engine_pb2_grpc.EngineServiceAsyncStub, token: str, tenant: uuid.UUID, db: AsyncEngine, seconds: float
) -> None:
    """Wait for proof that the scheduler had every chance to fire a timer due `seconds` from now (minus a moment):
    an instance pausing half a sweep period longer completed (bucket jobs pop timers in fire-time order), then two
    sweeps resumed an instance only a sweep can resume: one whose wait the engine armed for in an hour, moved into
    the past in its row (the horizon arms only future fire times; the engine's own recovery waits 30 s)."""
    [later] = await _start(stub, token, tenant, await _pause_flow(db, tenant, seconds + SWEEP_SECONDS / 2), 1)
    await _all_completed(db, [later], within=seconds + SWEEP_SECONDS + 5, what="an instance pausing longer completing")
    hour_flow = await _pause_flow(db, tenant, 3600)
    for sweep in range(2):
        [overdue] = await _start(stub, token, tenant, hour_flow, 1)
        async with db.begin() as connection:
            moved = await connection.execute(
                text("UPDATE waits SET fire_time = now() - interval '1 second' WHERE instance_id = :i"),
                {"i": uuid.UUID(overdue)},
            )
            assert moved.rowcount == 1
        await _all_completed(
            db, [overdue], within=2 * SWEEP_SECONDS + 3, what=f"sweep {sweep + 1} resuming an overdue wait"
        )


async def test_a_two_second_wait_resumes_the_instance_within_the_sweep_period(
    engine_stub: engine_pb2_grpc.EngineServiceAsyncStub, real_token: str, tenant: uuid.UUID, sched_db: AsyncEngine
) -> None:
    flow = await _pause_flow(sched_db, tenant, 2)
    [instance] = await _start(engine_stub, real_token, tenant, flow, 1)

    await _all_completed(sched_db, [instance], within=2 + SWEEP_SECONDS + 3, what="the instance completing")
    [wait] = await _rows(
        sched_db,
        "SELECT fire_time, resolved_time, create_time, status FROM waits WHERE instance_id = :i",
        i=uuid.UUID(instance),
    )
    assert wait.status == "fired"
    assert (wait.fire_time - wait.create_time).total_seconds() == pytest.approx(2, abs=0.01)
    lateness = (wait.resolved_time - wait.fire_time).total_seconds()
    assert 0 <= lateness <= SWEEP_SECONDS, lateness


async def test_wait_until_in_the_past_resumes_at_once(
    engine_stub: engine_pb2_grpc.EngineServiceAsyncStub, real_token: str, tenant: uuid.UUID, sched_db: AsyncEngine
) -> None:
    flow = await _flow(
        sched_db,
        tenant,
        [
            _node("entry", "event_entry", event_type="signup"),
            _node("until", "t_pause", seconds=-86400),
            _node("done", "t_end"),
        ],
        [{"source": "entry", "target": "until"}, {"source": "until", "target": "done"}],
    )
    started = time.monotonic()
    [instance] = await _start(engine_stub, real_token, tenant, flow, 1)

    await _all_completed(sched_db, [instance], within=3, what="the instance completing")
    assert time.monotonic() - started < 1.0


async def test_after_a_flush_100_waiting_instances_each_resume_exactly_once(
    engine_stub: engine_pb2_grpc.EngineServiceAsyncStub,
    real_token: str,
    tenant: uuid.UUID,
    sched_db: AsyncEngine,
    sched_redis_url: str,
) -> None:
    flow = await _pause_flow(sched_db, tenant, 2)
    instances = await _start(engine_stub, real_token, tenant, flow, 100)
    ids = [uuid.UUID(i) for i in instances]
    wait_ids = [str(w.id) for w in await _rows(sched_db, "SELECT id FROM waits WHERE instance_id = ANY(:ids)", ids=ids)]
    redis = Redis.from_url(sched_redis_url)
    try:
        await eventually(
            lambda: redis.zmscore(TIMERS_KEY, wait_ids),
            until=lambda scores: None not in scores,
            what="the engine's ScheduleResumes landing: all 100 timers armed",
        )
        await redis.flushdb()  # this module's own db (FLUSHALL would empty other runs' dbs too)
    finally:
        await redis.aclose()

    await _all_completed(
        sched_db,
        instances,
        within=2 + 2 * SWEEP_SECONDS + RECOVERY_MARGIN_SECONDS,
        what="all 100 instances completing after the flush",
    )
    steps = await _rows(
        sched_db,
        "SELECT instance_id, count(*) AS n FROM execution_steps WHERE instance_id = ANY(:ids) AND node_id = 'done'"
        " GROUP BY instance_id",
        ids=ids,
    )
    assert len(steps) == 100
    assert all(step.n == 1 for step in steps)
    waits = await _rows(
        sched_db, "SELECT status, fire_time, resolved_time FROM waits WHERE instance_id = ANY(:ids)", ids=ids
    )
    assert len(waits) == 100
    assert all(w.status == "fired" and w.resolved_time >= w.fire_time for w in waits)


async def test_an_event_cancels_the_timeout_and_the_timeout_never_resumes(
    engine_stub: engine_pb2_grpc.EngineServiceAsyncStub, real_token: str, tenant: uuid.UUID, sched_db: AsyncEngine
) -> None:
    flow = await _flow(
        sched_db,
        tenant,
        [
            _node("entry", "event_entry", event_type="signup"),
            _node("opened", "t_await", event_type="email_opened", timeout=1),
            _node("yes", "t_end"),
            _node("no", "t_end"),
        ],
        [
            {"source": "entry", "target": "opened"},
            {"source": "opened", "target": "yes", "branch": "event_received"},
            {"source": "opened", "target": "no", "branch": "timed_out"},
        ],
    )
    [instance] = await _start(engine_stub, real_token, tenant, flow, 1)
    [row] = await _rows(sched_db, "SELECT participant_id FROM flow_instances WHERE id = :i", i=uuid.UUID(instance))
    async with sched_db.begin() as connection:
        event_id = (
            await connection.execute(
                text(
                    "INSERT INTO events (tenant_id, participant_id, event_type) VALUES (:t, :p, 'email_opened')"
                    " RETURNING id"
                ),
                {"t": tenant, "p": row.participant_id},
            )
        ).scalar_one()
    routed = await engine_stub.RouteEvent(
        engine_pb2.RouteEventRequest(
            tenant_id=str(tenant),
            event_id=str(event_id),
            participant_id=row.participant_id,
            event_type="email_opened",
            data=struct_pb2.Struct(),
        ),
        metadata=bearer(real_token),
    )
    assert routed.resumed == 1

    await _had_every_chance_to_fire(engine_stub, real_token, tenant, sched_db, 1)  # past the timeout, two sweeps
    ran = [
        r.node_id
        for r in await _rows(
            sched_db, "SELECT node_id FROM execution_steps WHERE instance_id = :i ORDER BY seq", i=uuid.UUID(instance)
        )
    ]
    assert "yes" in ran
    assert "no" not in ran


async def test_a_scheduler_killed_as_timers_fall_due_resumes_every_instance_after_restart(
    engine_stub: engine_pb2_grpc.EngineServiceAsyncStub,
    real_token: str,
    tenant: uuid.UUID,
    sched_db: AsyncEngine,
    real_scheduler: SchedulerProcess,
) -> None:
    flow = await _pause_flow(sched_db, tenant, 2)
    instances = await _start(engine_stub, real_token, tenant, flow, 300)
    ids = [uuid.UUID(i) for i in instances]
    await eventually(
        lambda: _count(sched_db, _TAKEN, instances),
        until=lambda taken: taken > 0,
        within=2 + 5,
        interval=0.01,
        what="the first timers falling due and being claimed",
    )
    real_scheduler.stop(signal.SIGKILL)  # some timers claimed or in flight, most not fired yet
    await eventually(
        lambda: _count(sched_db, _NOT_DUE, instances),
        until=lambda not_due: not_due == 0,
        within=2 + 5,
        what="every timer falling due while no scheduler runs",
    )
    real_scheduler.start()

    await _all_completed(
        sched_db,
        instances,
        within=4 + 2 * SWEEP_SECONDS + RECOVERY_MARGIN_SECONDS,
        what="all 300 instances completing after the restart",
    )
    steps = await _rows(
        sched_db,
        "SELECT count(*) AS n FROM execution_steps WHERE instance_id = ANY(:ids) AND node_id = 'done'",
        ids=ids,
    )
    assert steps[0].n == 300
    waits = await _rows(sched_db, "SELECT fire_time, resolved_time FROM waits WHERE instance_id = ANY(:ids)", ids=ids)
    assert all(w.resolved_time >= w.fire_time for w in waits)
