"""What the engine's integration tests share: test node types, seeded flows, an in-process runtime and server.

The test node types stand in for node behaviours at the true edge of the runtime (what a node decides), so these
tests pin the runtime's own guarantees (transactions, waits, resumes, routing) whatever the built-ins do.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer_common.rpc.auth import AuthInterceptor, AuthPolicy
from kalcifer_common.rpc.server import GrpcServer, binding
from kalcifer_common.settings import EngineSettings
from kalcifer_engine.deps import EngineDeps
from kalcifer_engine.grpc.servicer import EngineServicer
from kalcifer_engine.nodes.base import (
    Branched,
    Completed,
    Failed,
    NodeCategory,
    NodeResult,
    NodeType,
    Waiting,
)
from kalcifer_engine.nodes.registry import NodeRegistry, builtin_registry
from kalcifer_engine.nodes.schema import object_schema
from kalcifer_engine.runtime import starts
from kalcifer_engine.runtime.core import Runtime
from kalcifer_engine.runtime.run import Effects
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

INTERNAL_TOKEN = "engine-test-token"


class Pause(NodeType):
    """Waits `seconds` (may be negative: already due), then completes."""

    key = "t_pause"
    category = NodeCategory.WAIT
    description = "test wait"
    config_schema = object_schema(description, {"seconds": {"type": "number"}})
    resumable = True

    async def execute(self, config: Mapping[str, Any], ctx: Any) -> NodeResult:
        return Waiting(kind="timer", fire_time=ctx.now + timedelta(seconds=float(config.get("seconds", 0))))

    async def resume(self, config: Mapping[str, Any], ctx: Any, trigger: str, data: Mapping[str, Any]) -> NodeResult:
        return Completed({"resumed_by": trigger})


class AwaitEvent(NodeType):
    """Waits for `event_type` (with `filter`) for `timeout` seconds: `event_received` or `timed_out`."""

    key = "t_await"
    category = NodeCategory.WAIT
    description = "test event wait"
    config_schema = object_schema(description, {})
    resumable = True

    def branches(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        return ("event_received", "timed_out")

    async def execute(self, config: Mapping[str, Any], ctx: Any) -> NodeResult:
        return Waiting(
            kind="event",
            event_type=str(config["event_type"]),
            event_filter=config.get("filter"),
            fire_time=ctx.now + timedelta(seconds=float(config.get("timeout", 3600))),
            timeout_branch="timed_out",
        )

    async def resume(self, config: Mapping[str, Any], ctx: Any, trigger: str, data: Mapping[str, Any]) -> NodeResult:
        return Branched("event_received" if trigger == "event" else "timed_out", {"data": dict(data)})


class Send(NodeType):
    """Creates an email delivery."""

    key = "t_send"
    category = NodeCategory.ACTION
    description = "test send"
    config_schema = object_schema(description, {})

    async def execute(self, config: Mapping[str, Any], ctx: Any) -> NodeResult:
        key = await ctx.create_delivery("email", "tpl", {"to": ctx.participant_id})
        return Completed({"delivery_key": key})


class End(NodeType):
    """Ends the instance."""

    key = "t_end"
    category = NodeCategory.END
    description = "test end"
    config_schema = object_schema(description, {})

    async def execute(self, config: Mapping[str, Any], ctx: Any) -> NodeResult:
        return Completed()


class Flaky(NodeType):
    """Fails (retryable) until attempt `succeed_at`; one retry allowed."""

    key = "t_flaky"
    category = NodeCategory.ACTION
    description = "test flaky"
    config_schema = object_schema(description, {})
    retries = 1

    async def execute(self, config: Mapping[str, Any], ctx: Any) -> NodeResult:
        if ctx.attempt < int(config.get("succeed_at", 99)):
            return Failed("not yet", retryable=True)
        return Completed({"attempt": ctx.attempt})


class Crash(NodeType):
    """Raises, like a buggy node."""

    key = "t_crash"
    category = NodeCategory.ACTION
    description = "test crash"
    config_schema = object_schema(description, {})

    async def execute(self, config: Mapping[str, Any], ctx: Any) -> NodeResult:
        raise RuntimeError("kaboom")


def registry_with_test_nodes() -> NodeRegistry:
    """The built-ins plus the test node types."""
    return builtin_registry().with_extra([Pause(), AwaitEvent(), Send(), End(), Flaky(), Crash()])


def graph(
    nodes: list[tuple[str, str, dict[str, Any]]], edges: list[tuple[str, str] | tuple[str, str, str]]
) -> dict[str, Any]:
    """A graph's JSON from (id, type, config) nodes and (source, target[, branch]) edges."""
    return {
        "nodes": [{"id": i, "type": t, "config": c} for i, t, c in nodes],
        "edges": [{"source": e[0], "target": e[1], **({"branch": e[2]} if len(e) == 3 else {})} for e in edges],
    }


async def create_tenant(db: AsyncEngine) -> uuid.UUID:
    """A new tenant."""
    async with db.begin() as conn:
        tenant_id: uuid.UUID = (
            await conn.execute(text("INSERT INTO tenants (name) VALUES ('engine-test') RETURNING id"))
        ).scalar_one()
        return tenant_id


async def create_flow(
    db: AsyncEngine,
    tenant_id: uuid.UUID,
    graph_json: dict[str, Any],
    *,
    status: str = "active",
    re_entry: str = "after_exit",
) -> uuid.UUID:
    """A flow with version 1 (active when the flow is) holding `graph_json`."""
    async with db.begin() as conn:
        flow_id: uuid.UUID = (
            await conn.execute(
                text(
                    "INSERT INTO flows (tenant_id, name, status, active_version_number, re_entry) "
                    "VALUES (:t, 'f', :s, :v, :r) RETURNING id"
                ),
                {"t": tenant_id, "s": status, "v": 1 if status != "draft" else None, "r": re_entry},
            )
        ).scalar_one()
        await add_version(conn, tenant_id, flow_id, 1, graph_json, status="active" if status != "draft" else "draft")
    return flow_id


async def add_version(
    conn: Any, tenant_id: uuid.UUID, flow_id: uuid.UUID, number: int, graph_json: dict[str, Any], *, status: str
) -> None:
    """Insert a version row."""
    await conn.execute(
        text(
            "INSERT INTO flow_versions (tenant_id, flow_id, version_number, status, graph) "
            "VALUES (:t, :f, :n, :s, CAST(:g AS jsonb))"
        ),
        {"t": tenant_id, "f": flow_id, "n": number, "s": status, "g": json.dumps(graph_json)},
    )


def engine_settings(database_url: str, **overrides: Any) -> EngineSettings:
    """Engine settings for tests: no scheduler listening (its calls fail fast and are only logged)."""
    return EngineSettings(
        database_url=database_url,
        kalcifer_internal_token=INTERNAL_TOKEN,
        scheduler_addr="127.0.0.1:9",
        rpc_timeout_seconds=0.5,
        **overrides,
    )


def make_runtime(db: AsyncEngine, database_url: str, **overrides: Any) -> Runtime:
    """An in-process runtime on the test database with the test node types."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    deps = EngineDeps(
        settings=engine_settings(database_url, **overrides),
        db=db,
        sessions=async_sessionmaker(db, expire_on_commit=False),
        registry=registry_with_test_nodes(),
    )
    runtime = deps.runtime = Runtime(deps)
    return runtime


@asynccontextmanager
async def engine_server(runtime: Runtime) -> AsyncIterator[str]:
    """The EngineService of `runtime` on a free local port; yields its address."""
    servicer = EngineServicer(runtime.deps)
    engine_binding = binding(engine_pb2, engine_pb2_grpc, "EngineService", servicer)
    server = GrpcServer(
        name="engine-test",
        bindings=[engine_binding],
        port=0,
        host="127.0.0.1",
        interceptors=[
            AuthInterceptor(policies={engine_binding.full_name: AuthPolicy.INTERNAL}, internal_token=INTERNAL_TOKEN)
        ],
        grace_seconds=1.0,
    )
    port = await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop()


async def start(rt: Runtime, tenant: uuid.UUID, flow: uuid.UUID, participant: str = "p1", **kw: Any) -> uuid.UUID:
    """Start an instance through the runtime (StartRequest fields as keywords) and tell the scheduler."""
    effects = Effects()
    async with rt.db.begin() as conn:
        instance_id = await starts.start_instance(
            rt, conn, starts.StartRequest(tenant, flow, participant, kw.pop("context", {}), **kw), effects, now=rt.now()
        )
    await rt.after_commit(effects)
    assert instance_id is not None
    return instance_id


async def instance(db: AsyncEngine, instance_id: uuid.UUID) -> Any:
    """The instance's row as it is now."""
    async with db.connect() as conn:
        return (await conn.execute(text("SELECT * FROM flow_instances WHERE id = :i"), {"i": instance_id})).one()


async def store_event(
    db: AsyncEngine,
    tenant: uuid.UUID,
    participant: str,
    event_type: str,
    data: dict[str, Any],
    *,
    received_ago: timedelta = timedelta(0),
) -> uuid.UUID:
    """An event row as IngestEvent stores it (not yet routed), received `received_ago` before now."""
    async with db.begin() as conn:
        event_id: uuid.UUID = (
            await conn.execute(
                text(
                    "INSERT INTO events (tenant_id, participant_id, event_type, data, received_time) "
                    "VALUES (:t, :p, :e, CAST(:d AS jsonb), now() - CAST(:ago AS interval)) RETURNING id"
                ),
                {"t": tenant, "p": participant, "e": event_type, "d": json.dumps(data), "ago": received_ago},
            )
        ).scalar_one()
    return event_id
