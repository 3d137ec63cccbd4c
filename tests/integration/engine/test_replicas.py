"""Engine processes on one database: two replicas never run a step twice; a SIGKILL loses nothing (SPEC 6.3, 6.9)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer_common.rpc.clients import internal_channel
from kalcifer_engine.runtime import starts
from kalcifer_engine.runtime.run import Effects
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.engine.support import INTERNAL_TOKEN, create_flow, create_tenant, graph, make_runtime
from tests.support.eventually import eventually
from tests.support.processes import free_port, wait_serving

ROOT = Path(__file__).resolve().parents[3]
DUE_THEN_SEND = graph(
    [("start", "event_entry", {"event_type": "go"}), ("w", "t_pause", {"seconds": -1}), ("s", "t_send", {})],
    [("start", "w"), ("w", "s")],
)


@contextmanager
def engine_process(database_url: str, log: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """An engine process (with the test node types) on a free port; killed and reaped afterwards."""
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ENGINE_PORT": str(port),
        "KALCIFER_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "SCHEDULER_ADDR": "127.0.0.1:9",
        "RPC_TIMEOUT_SECONDS": "0.5",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.engine.engine_process"],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=out,
        )
    try:
        wait_serving(f"127.0.0.1:{port}", process=process)
        yield f"127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def seed_waiting(db: AsyncEngine, engine_db: AsyncEngine, database_url: str, count: int) -> list[tuple[str, str]]:
    """`count` instances parked on a due timer, started by a runtime on the engine's role (`engine_db`); returns
    (instance id, wait id) pairs."""
    runtime = make_runtime(engine_db, database_url)
    tenant = await create_tenant(db)
    flow = await create_flow(db, tenant, DUE_THEN_SEND)
    effects = Effects()
    async with engine_db.begin() as conn:
        for n in range(count):
            request = starts.StartRequest(tenant, flow, f"p{n}", {})
            await starts.start_instance(runtime, conn, request, effects, now=runtime.now())
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT w.instance_id, w.id FROM waits w JOIN flow_instances i ON i.id = w.instance_id "
                "WHERE i.flow_id = :f ORDER BY w.instance_id"
            ),
            {"f": flow},
        )
        pairs = [(str(i), str(w)) for i, w in rows]
    await runtime.close()
    return pairs


def resumes(pairs: list[tuple[str, str]]) -> engine_pb2.ResumeInstancesRequest:
    return engine_pb2.ResumeInstancesRequest(
        resumes=[engine_pb2.ResumeInstanceRequest(instance_id=i, wait_id=w, trigger="timer") for i, w in pairs]
    )


_IN = "instance_id = ANY(CAST(:ids AS uuid[]))"
_COUNTS = ", ".join(
    [
        "(SELECT count(*) FROM flow_instances WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'completed')"
        " AS completed",
        f"(SELECT count(*) FROM execution_steps WHERE {_IN} AND node_id = 'w' AND status = 'completed')"
        " AS resumed_steps",
        f"(SELECT count(*) FROM execution_steps WHERE {_IN} AND node_id = 's') AS send_steps",
        f"(SELECT count(*) FROM deliveries WHERE {_IN}) AS deliveries",
        f"(SELECT count(DISTINCT instance_id) FROM deliveries WHERE {_IN}) AS delivered",
    ]
)


async def counts(db: AsyncEngine, instance_ids: list[str]) -> dict[str, int]:
    """Completed instances, resumed and send steps, deliveries and instances with a delivery."""
    async with db.connect() as conn:
        row = (await conn.execute(text(f"SELECT {_COUNTS}"), {"ids": instance_ids})).one()
        return dict(row._mapping)


async def test_two_engines_resuming_the_same_500_instances_run_each_step_once(
    db_engine: AsyncEngine, engine_role_db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    pairs = await seed_waiting(db_engine, engine_role_db, database_url, 500)
    ids = [i for i, _ in pairs]
    # Only the calls below resume: no recovery pass fires the due waits first, however slowly the engines start.
    quiet = {"RECOVERY_INTERVAL_SECONDS": "3600", "RECOVERY_OVERDUE_SECONDS": "3600"}
    with (
        engine_process(database_url, tmp_path / "a.log", **quiet) as (address_a, _),
        engine_process(database_url, tmp_path / "b.log", **quiet) as (address_b, _),
    ):
        channels = [internal_channel(a, token=INTERNAL_TOKEN, timeout_seconds=120) for a in (address_a, address_b)]
        stubs = [engine_pb2_grpc.EngineServiceStub(c) for c in channels]
        forward = [pairs[n : n + 100] for n in range(0, 500, 100)]
        backward = [list(reversed(chunk)) for chunk in reversed(forward)]
        calls = [stubs[0].ResumeInstances(resumes(chunk)) for chunk in forward]
        calls += [stubs[1].ResumeInstances(resumes(chunk)) for chunk in backward]
        answers = await asyncio.gather(*calls)
        for channel in channels:
            await channel.close(None)
    applied = sum(1 for answer in answers for result in answer.results if result.applied)
    assert applied == 500
    assert await counts(db_engine, ids) == {
        "completed": 500,
        "resumed_steps": 500,
        "send_steps": 500,
        "deliveries": 500,
        "delivered": 500,
    }


async def test_sigkill_mid_burst_then_restart_finishes_every_instance_once(
    db_engine: AsyncEngine, engine_role_db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    pairs = await seed_waiting(db_engine, engine_role_db, database_url, 200)
    ids = [i for i, _ in pairs]
    with engine_process(database_url, tmp_path / "killed.log", RECOVERY_INTERVAL_SECONDS="3600") as (address, process):
        channel = internal_channel(address, token=INTERNAL_TOKEN, timeout_seconds=60)
        stub = engine_pb2_grpc.EngineServiceStub(channel)
        burst = [asyncio.ensure_future(stub.ResumeInstances(resumes(pairs[n : n + 5]))) for n in range(0, 200, 5)]
        await eventually(
            lambda: counts(db_engine, ids),
            until=lambda seen: seen["completed"] >= 1,
            within=30,
            interval=0.02,  # the kill must land mid-burst
            what="the first instance of the burst completed",
        )
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        outcomes = await asyncio.gather(*burst, return_exceptions=True)
        await channel.close(None)
    interrupted = (await counts(db_engine, ids))["completed"]
    assert any(isinstance(o, grpc.aio.AioRpcError) for o in outcomes), "the kill came after the burst"
    assert 1 <= interrupted < 200
    # The restarted engine's recovery fires the waits the dead one left pending (nobody else will: no scheduler).
    with engine_process(
        database_url,
        tmp_path / "restarted.log",
        RECOVERY_INTERVAL_SECONDS="0.2",
        RECOVERY_OVERDUE_SECONDS="0.1",
    ):
        await eventually(
            lambda: counts(db_engine, ids),
            until=lambda seen: seen["completed"] == 200,
            within=60,
            what="every instance completed after the restart",
        )
    assert await counts(db_engine, ids) == {
        "completed": 200,
        "resumed_steps": 200,
        "send_steps": 200,
        "deliveries": 200,
        "delivered": 200,
    }
