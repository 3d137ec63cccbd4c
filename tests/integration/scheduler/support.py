"""What the scheduler tests share: an EngineService that records resumes, scheduler processes, wait rows, flows
entered by `segment_entry`.

`RecordingEngine` is a real grpc.aio server at the scheduler's service edge, standing in for the engine until its
ResumeInstances lands: like the engine it applies a resume at most once per wait (a conditional UPDATE of the
wait row) and answers a duplicate with applied=false, and it records when each resume arrived.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from kalcifer.engine.v1 import engine_pb2, engine_pb2_grpc
from kalcifer.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.eventually import eventually
from tests.support.processes import BIN, free_port, wait_serving
from tests.support.rpc import bearer

# The sweep period of every scheduler under test (see `scheduler_env`).
SWEEP_SECONDS = 1.0
# KALCIFER_SECRET_KEY of every scheduler under test: `store_provider` seals secrets with it.
SECRET_KEY = secrets.token_urlsafe(32)
# What a scheduler logs when its sweep fired overdue waits.
SWEPT = "swept overdue waits"

_MARK_FIRED = text(
    "UPDATE waits SET status = 'fired', resolved_time = now() WHERE id = ANY(:ids) AND status = 'pending' RETURNING id"
).bindparams(bindparam("ids", type_=ARRAY(Uuid())))


_START = text(
    "INSERT INTO flow_instances (id, tenant_id, flow_id, version_number, participant_id, status)"
    " VALUES (:id, :tenant, :flow, 1, :participant, 'waiting')"
)

# The entry ledger row the engine writes with a participant's first instance of a flow.
_LEDGER = text(
    "INSERT INTO flow_entries (flow_id, participant_id, tenant_id, first_enter_time)"
    " VALUES (:flow, :participant, :tenant, now()) ON CONFLICT DO NOTHING"
)


@dataclass(frozen=True)
class Arrival:
    """One resume the engine received."""

    wait_id: str
    instance_id: str
    trigger: str
    at: float
    applied: bool


class _EngineServicer(engine_pb2_grpc.EngineServiceServicer):
    def __init__(self, owner: RecordingEngine) -> None:
        self._owner = owner

    async def ResumeInstances(
        self, request: engine_pb2.ResumeInstancesRequest, context: Any
    ) -> engine_pb2.ResumeInstancesResponse:
        return await self._owner.resume(request)

    async def StartInstance(
        self, request: engine_pb2.StartInstanceRequest, context: Any
    ) -> engine_pb2.StartInstanceResponse:
        return await self._owner.start_instance(request, context)


@dataclass
class RecordingEngine:
    """An EngineService on a free port that applies resumes once per wait and records every arrival."""

    db: AsyncEngine
    port: int = field(default_factory=free_port)
    arrivals: list[Arrival] = field(default_factory=list)
    calls: int = 0
    starts: list[engine_pb2.StartInstanceRequest] = field(default_factory=list)
    _server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        """host:port for ENGINE_ADDR."""
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Serve (with the health service reporting SERVING)."""
        server = grpc.aio.server()
        engine_pb2_grpc.add_EngineServiceServicer_to_server(_EngineServicer(self), server)  # type: ignore[abstract]
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        server.add_insecure_port(self.address)
        await server.start()
        self._server = server

    async def stop(self) -> None:
        """Stop serving at once."""
        if self._server is not None:
            await self._server.stop(None)
            self._server = None

    async def resume(self, request: engine_pb2.ResumeInstancesRequest) -> engine_pb2.ResumeInstancesResponse:
        """Apply each resume whose wait is still pending; a duplicate answers wait_not_found.

        Shielded: when the calling scheduler dies mid-call, gRPC cancels the handler, but what was applied must
        still be recorded (a real engine's commit does not depend on the caller staying alive either).
        """
        return await asyncio.shield(self._apply(request))

    async def _apply(self, request: engine_pb2.ResumeInstancesRequest) -> engine_pb2.ResumeInstancesResponse:
        at = time.time()
        self.calls += 1
        ids = [uuid.UUID(item.wait_id) for item in request.resumes]
        async with self.db.begin() as connection:
            applied = {str(row.id) for row in await connection.execute(_MARK_FIRED, {"ids": ids})}
        results = []
        for item in request.resumes:
            ok = item.wait_id in applied
            self.arrivals.append(Arrival(item.wait_id, item.instance_id, item.trigger, at, ok))
            results.append(engine_pb2.ResumeInstanceResponse(applied=ok, reason="" if ok else "wait_not_found"))
        return engine_pb2.ResumeInstancesResponse(results=results)

    async def start_instance(
        self, request: engine_pb2.StartInstanceRequest, context: Any
    ) -> engine_pb2.StartInstanceResponse:
        """Insert a live instance and its entry ledger row, as the engine would before its first wait; a live one is
        ALREADY_EXISTS."""
        self.starts.append(request)
        instance_id = uuid.uuid4()
        names = {
            "tenant": uuid.UUID(request.tenant_id),
            "flow": uuid.UUID(request.flow_id),
            "participant": request.participant_id,
        }
        try:
            async with self.db.begin() as connection:
                await connection.execute(_START, {"id": instance_id, **names})
                await connection.execute(_LEDGER, names)
        except IntegrityError:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "ALREADY_IN_FLOW")
        return engine_pb2.StartInstanceResponse(instance_id=str(instance_id))

    def applied_for(self, wait_ids: Sequence[str]) -> dict[str, list[Arrival]]:
        """The applied arrivals of each wait id."""
        wanted = set(wait_ids)
        by_wait: dict[str, list[Arrival]] = {wait_id: [] for wait_id in wanted}
        for arrival in self.arrivals:
            if arrival.wait_id in wanted and arrival.applied:
                by_wait[arrival.wait_id].append(arrival)
        return by_wait

    def received(self, wait_ids: Sequence[str]) -> dict[str, list[Arrival]]:
        """Every arrival (applied or not) of each wait id."""
        wanted = set(wait_ids)
        by_wait: dict[str, list[Arrival]] = {wait_id: [] for wait_id in wanted}
        for arrival in self.arrivals:
            if arrival.wait_id in wanted:
                by_wait[arrival.wait_id].append(arrival)
        return by_wait


@dataclass
class SchedulerProcess:
    """One `kalcifer-scheduler` process on a free port."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port of its gRPC server."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> SchedulerProcess:
        """Start it and wait until it serves."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "kalcifer-scheduler")],
                env={**self.env, "SCHEDULER_PORT": str(self.port)},
                stdout=log,
                stderr=log,
            )
        try:
            wait_serving(self.address, process=self.process)
        except BaseException:
            self.stop(signal.SIGKILL)  # never left running when the fixture that started it fails
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def log(self) -> str:
        """What it logged."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def scheduler_env(database_url: str, redis_url: str, engine_address: str, token: str, **extra: str) -> dict[str, str]:
    """The environment of a scheduler under test: short leases and retries, so crash tests stay fast."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ENGINE_ADDR": engine_address,
        "KALCIFER_INTERNAL_TOKEN": token,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "SHUTDOWN_GRACE_SECONDS": "2",
        "SWEEP_INTERVAL_SECONDS": str(SWEEP_SECONDS),
        "CLAIM_LEASE_SECONDS": "4",
        "RESUME_RETRY_SECONDS": "2",
        "RPC_TIMEOUT_SECONDS": "3",
        "HEALTH_INTERVAL_SECONDS": "0.5",
        "STATS_INTERVAL_SECONDS": "2",
        "DELIVERY_SWEEP_INTERVAL_SECONDS": "0.5",
        "DELIVERY_BACKOFF_SECONDS": "0.2",
        # Local test endpoints listen on 127.0.0.1; every other loopback address stays refused.
        "OUTBOUND_ALLOWLIST": "127.0.0.1",
        "KALCIFER_SECRET_KEY": SECRET_KEY,
        **extra,
    }


def new_token() -> str:
    """A fresh internal token."""
    return secrets.token_urlsafe(16)


def scheduler_stub(channel: grpc.aio.Channel) -> scheduler_pb2_grpc.SchedulerServiceAsyncStub:
    """An async SchedulerService stub."""
    stub: scheduler_pb2_grpc.SchedulerServiceAsyncStub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
    return stub


@dataclass
class Seeder:
    """Writes the rows a timer needs: a tenant, a flow, one waiting instance per wait, the wait rows."""

    db: AsyncEngine
    tenant_id: uuid.UUID = field(default_factory=uuid.uuid4)
    flow_id: uuid.UUID = field(default_factory=uuid.uuid4)

    async def setup(self) -> None:
        """Create the tenant and its flow."""
        async with self.db.begin() as connection:
            await connection.execute(
                text("INSERT INTO tenants (id, name) VALUES (:id, 'scheduler tests')"), {"id": self.tenant_id}
            )
            await connection.execute(
                text(
                    "INSERT INTO flows (id, tenant_id, name, status, active_version_number)"
                    " VALUES (:id, :tenant, 'timers', 'active', 1)"
                ),
                {"id": self.flow_id, "tenant": self.tenant_id},
            )

    async def waits(
        self, fire_times: Sequence[datetime], *, kind: str = "timer", instance_status: str = "waiting"
    ) -> list[tuple[str, str]]:
        """One waiting instance and one pending wait per fire time; returns (instance id, wait id) pairs."""
        rows = [(uuid.uuid4(), uuid.uuid4(), moment) for moment in fire_times]
        async with self.db.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO flow_instances (id, tenant_id, flow_id, version_number, participant_id, status)"
                    " VALUES (:id, :tenant, :flow, 1, :participant, :status)"
                ),
                [
                    {
                        "id": instance,
                        "tenant": self.tenant_id,
                        "flow": self.flow_id,
                        "participant": f"p-{instance}",
                        "status": instance_status,
                    }
                    for instance, _, _ in rows
                ],
            )
            await connection.execute(
                text(
                    """
                    INSERT INTO waits (id, tenant_id, instance_id, node_id, kind, fire_time, event_type, participant_id)
                    VALUES (:id, :tenant, :instance, 'wait_1', :kind, :fire, :event_type, :participant)
                    """
                ),
                [
                    {
                        "id": wait,
                        "tenant": self.tenant_id,
                        "instance": instance,
                        "kind": kind,
                        "fire": moment,
                        "event_type": "email_opened" if kind == "event" else None,
                        "participant": f"p-{instance}",
                    }
                    for instance, wait, moment in rows
                ],
            )
        return [(str(instance), str(wait)) for instance, wait, _ in rows]


def utc_now() -> datetime:
    """The current time, tz-aware UTC."""
    return datetime.now(UTC)


def timestamp(moment: datetime) -> Timestamp:
    """`moment` as a protobuf Timestamp."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def schedule(
    channel: grpc.aio.Channel, token: str, pairs: Sequence[tuple[str, str]], fire_times: Sequence[datetime]
) -> int:
    """Arm a timer per (instance id, wait id) pair at its fire time through ScheduleResumes, 1,000 a call;
    returns how many were newly scheduled."""
    stub = scheduler_stub(channel)
    scheduled = 0
    for start in range(0, len(pairs), 1000):
        chunk = zip(pairs[start : start + 1000], fire_times[start : start + 1000], strict=True)
        request = scheduler_pb2.ScheduleResumesRequest(
            resumes=[
                scheduler_pb2.ScheduleResumeRequest(instance_id=instance, wait_id=wait, fire_time=timestamp(moment))
                for (instance, wait), moment in chunk
            ]
        )
        scheduled += (await stub.ScheduleResumes(request, metadata=bearer(token))).scheduled
    return scheduled


async def schedule_at(
    address: str, token: str, pairs: Sequence[tuple[str, str]], fire_times: Sequence[datetime]
) -> int:
    """`schedule` on a channel of its own to the scheduler at `address`."""
    async with grpc.aio.insecure_channel(address) as channel:
        return await schedule(channel, token, pairs, fire_times)


async def swept_by(
    replicas: Sequence[SchedulerProcess], seeder: Seeder, engine: RecordingEngine, *, sweeps: int = 2
) -> None:
    """Wait for proof that each replica ran `sweeps` sweeps of overdue waits from now on: what a test waits for
    before asserting that something was *not* fired.

    Only a sweep fires a wait that was overdue when written and never armed (the horizon arms only future fire
    times), and a replica logs `SWEPT` when its sweep fired something. Such waits are written one at a time, each
    once the last one fired and its sweep was logged, until every replica's log shows `sweeps` new sweeps.
    """
    marks = [replica.log().count(SWEPT) for replica in replicas]

    def logged() -> list[int]:
        return [replica.log().count(SWEPT) - mark for replica, mark in zip(replicas, marks, strict=True)]

    async def one_more_sweep() -> list[int]:
        before = sum(logged())
        [(_, wait)] = await seeder.waits([utc_now() - timedelta(seconds=1)])
        await eventually(
            lambda: engine.applied_for([wait])[wait],
            within=2 * SWEEP_SECONDS + 3,
            what=f"a sweep firing the overdue wait {wait} nobody armed",
        )
        return await eventually(logged, until=lambda counts: sum(counts) > before, what="that sweep logged")

    await eventually(
        one_more_sweep,
        until=lambda counts: min(counts) >= sweeps,
        within=(2 * SWEEP_SECONDS + 3) * sweeps * len(replicas),
        interval=0,
        what=f"{sweeps} sweeps of each replica",
    )


def violations_of(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """The BadRequest field violations an aio error carries (field -> description)."""
    from google.rpc import error_details_pb2, status_pb2

    metadata: Any = error.trailing_metadata() or ()
    for key, value in metadata:
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for packed in status.details:
                bad_request = error_details_pb2.BadRequest()
                if packed.Unpack(bad_request):
                    return {v.field: v.description for v in bad_request.field_violations}
    return {}


@dataclass
class SegmentFlow:
    """A tenant with an active flow entered at its `segment_entry` node "entry" on a segment of its own."""

    db: AsyncEngine
    tenant: uuid.UUID
    flow: uuid.UUID
    segment: uuid.UUID

    async def set_attributes(self, external_id: str, attributes: dict[str, Any]) -> None:
        """Change a customer's attributes, as UpsertCustomer does (update_time moves)."""
        async with self.db.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE customers SET attributes = CAST(:attributes AS jsonb), update_time = now()"
                    " WHERE tenant_id = :tenant AND external_id = :external"
                ),
                {"tenant": self.tenant, "external": external_id, "attributes": json.dumps(attributes)},
            )

    async def set_rules(self, rules: list[dict[str, Any]]) -> None:
        """Change the segment's definition, as UpdateSegment does (the revision moves)."""
        async with self.db.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE segments SET rules = CAST(:rules AS jsonb), revision = revision + 1, update_time = now()"
                    " WHERE id = :id"
                ),
                {"id": self.segment, "rules": json.dumps(rules)},
            )

    async def finish_instances(self) -> None:
        """Complete every live instance of the flow."""
        async with self.db.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE flow_instances SET status = 'completed', end_time = now()"
                    " WHERE flow_id = :flow AND status IN ('running', 'waiting', 'paused')"
                ),
                {"flow": self.flow},
            )

    async def members(self) -> dict[str, uuid.UUID]:
        """The segment's members as the scheduler last read them, with their join ids."""
        async with self.db.connect() as connection:
            rows = await connection.execute(
                text("SELECT participant_id, join_id FROM segment_entry_members WHERE flow_id = :flow"),
                {"flow": self.flow},
            )
            return {row.participant_id: row.join_id for row in rows}

    async def instances(self) -> list[tuple[str, str]]:
        """(participant, status) of every instance of the flow, oldest first."""
        async with self.db.connect() as connection:
            rows = await connection.execute(
                text("SELECT participant_id, status FROM flow_instances WHERE flow_id = :flow ORDER BY enter_time, id"),
                {"flow": self.flow},
            )
            return [(row.participant_id, row.status) for row in rows]

    def starts(self, engine: RecordingEngine) -> list[str]:
        """The participants the engine was asked to start in this flow, in order."""
        return [start.participant_id for start in engine.starts if start.flow_id == str(self.flow)]


async def seed_segment_flow(
    sched_db: AsyncEngine,
    *,
    re_entry: str = "after_exit",
    rules: list[dict[str, Any]],
    customers: dict[str, dict[str, Any]],
    unchanged_for: timedelta = timedelta(0),
    crowd: int = 0,
) -> SegmentFlow:
    """A `SegmentFlow` with `customers` (external id -> attributes) and `crowd` more without attributes, all last
    changed `unchanged_for` ago."""
    seeded = SegmentFlow(sched_db, uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    graph = {
        "nodes": [
            {"id": "entry", "type": "segment_entry", "config": {"segment_id": str(seeded.segment)}},
            {"id": "done", "type": "exit", "config": {}},
        ],
        "edges": [{"source": "entry", "target": "done"}],
    }
    names = {"tenant": seeded.tenant, "flow": seeded.flow, "segment": seeded.segment}
    async with sched_db.begin() as connection:
        await connection.execute(text("INSERT INTO tenants (id, name) VALUES (:tenant, 'entries')"), names)
        await connection.execute(
            text(
                "INSERT INTO flows (id, tenant_id, name, status, active_version_number, re_entry)"
                " VALUES (:flow, :tenant, 'segment flow', 'active', 1, :re_entry)"
            ),
            {**names, "re_entry": re_entry},
        )
        await connection.execute(
            text(
                "INSERT INTO flow_versions (tenant_id, flow_id, version_number, status, graph)"
                " VALUES (:tenant, :flow, 1, 'active', CAST(:graph AS jsonb))"
            ),
            {**names, "graph": json.dumps(graph)},
        )
        await connection.execute(
            text(
                "INSERT INTO segments (id, tenant_id, name, match, rules)"
                " VALUES (:segment, :tenant, 'members', 'all', CAST(:rules AS jsonb))"
            ),
            {**names, "rules": json.dumps(rules)},
        )
        changed = {"changed": utc_now() - unchanged_for}
        for external_id, attributes in customers.items():
            await connection.execute(
                text(
                    "INSERT INTO customers (tenant_id, external_id, attributes, create_time, update_time)"
                    " VALUES (:tenant, :external, CAST(:attributes AS jsonb), :changed, :changed)"
                ),
                {**names, **changed, "external": external_id, "attributes": json.dumps(attributes)},
            )
        await connection.execute(
            text(
                "INSERT INTO customers (tenant_id, external_id, create_time, update_time)"
                " SELECT :tenant, 'crowd-' || n, :changed, :changed FROM generate_series(1, :crowd) AS n"
            ),
            {**names, **changed, "crowd": crowd},
        )
    return seeded


async def store_provider(
    db: AsyncEngine,
    tenant_id: uuid.UUID,
    channel: str,
    provider: str,
    settings: dict[str, Any],
    secret_settings: dict[str, str] | None = None,
    *,
    key: str = SECRET_KEY,
) -> None:
    """Set the channel's provider as ChannelService stores it: plain settings, and each secret sealed with `key`."""
    from kalcifer_common.channels import secret_context
    from kalcifer_common.secrets import SecretBox

    box = SecretBox([key])
    sealed = {
        name: box.seal(value, context=secret_context(str(tenant_id), channel, name))
        for name, value in (secret_settings or {}).items()
    }
    async with db.begin() as connection:
        await connection.execute(
            text(
                """
                INSERT INTO provider_configs (tenant_id, channel, provider, settings, secrets)
                VALUES (:tenant, :channel, :provider, CAST(:settings AS jsonb), CAST(:secrets AS jsonb))
                ON CONFLICT (tenant_id, channel) DO UPDATE SET provider = excluded.provider,
                    settings = excluded.settings, secrets = excluded.secrets
                """
            ),
            {
                "tenant": tenant_id,
                "channel": channel,
                "provider": provider,
                "settings": json.dumps(settings),
                "secrets": json.dumps(sealed),
            },
        )


async def forget_provider(db: AsyncEngine, tenant_id: uuid.UUID, channel: str) -> None:
    """The channel sends through `log` again."""
    async with db.begin() as connection:
        await connection.execute(
            text("DELETE FROM provider_configs WHERE tenant_id = :tenant AND channel = :channel"),
            {"tenant": tenant_id, "channel": channel},
        )
