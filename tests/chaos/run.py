"""One chaos run: private servers, the suite, the workload, the faults at random moments, the settling, the verdict.

Timeline (seconds into the workload): `warmup` without faults, then one slot of `slot` seconds per fault with the
fault at a random moment of it (seeded), then `tail` seconds after the last slot; starts stop there, and the run
waits (bounded by `settle`) until every instance has finished, no wait is pending and every delivery was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
import grpc
import orjson
from kalcifer.v1 import channel_pb2, channel_pb2_grpc, flow_pb2, flow_pb2_grpc, template_pb2, template_pb2_grpc
from kalcifer_cli.embedded import EmbeddedPostgres, EmbeddedRedis
from kalcifer_common.structs import dict_to_struct

from tests.chaos.faults import FAULTS, FaultReport, HealthWatch, Rig, inject
from tests.chaos.flows import (
    CALL_ANSWER,
    CALL_PATH_PREFIX,
    DELIVERY_PATH,
    TEMPLATES,
    ChaosFlow,
    FlowKind,
    chaos_flows,
)
from tests.chaos.verdict import (
    CallRequest,
    DeliveryRow,
    EventRow,
    InstanceRow,
    Observed,
    Recovered,
    Redone,
    Send,
    StepRow,
    Verdict,
    judge,
    redone_by_phase,
    render_redone,
    render_table,
)
from tests.chaos.workload import CHANNEL_OPTIONS, Phases, Workload
from tests.support.databases import REPO_ROOT, scratch_database
from tests.support.endpoint import Endpoint, Reply, running_endpoint
from tests.support.eventually import eventually
from tests.support.processes import free_port, running_suite
from tests.support.tenants import new_tenant

LOG_DIR: Final = REPO_ROOT / ".kalcifer" / "chaos"
# Short leases, sweeps and recovery periods, so that what a fault interrupts is picked up within seconds.
SERVICE_SETTINGS: Final = {
    "OUTBOUND_ALLOWLIST": "127.0.0.1",
    "OUTBOUND_BACKOFF_SECONDS": "0.2",
    # Longer than a send takes (a template rendered in a cold sandbox included), else a slow send is made again.
    "CLAIM_LEASE_SECONDS": "5",
    "SWEEP_INTERVAL_SECONDS": "0.5",
    "DELIVERY_SWEEP_INTERVAL_SECONDS": "1",
    "DELIVERY_BACKOFF_SECONDS": "0.5",
    "RECOVERY_INTERVAL_SECONDS": "1",
    "RECOVERY_OVERDUE_SECONDS": "3",
    "RECOVERY_EVENT_SECONDS": "3",
    "RECOVERY_RUNNING_SECONDS": "5",
    "RESUME_RETRY_SECONDS": "10",
    "HEALTH_INTERVAL_SECONDS": "0.5",
    "RPC_TIMEOUT_SECONDS": "5",
    "SHUTDOWN_GRACE_SECONDS": "2",
    "STATS_INTERVAL_SECONDS": "5",
    "DB_POOL_SIZE": "4",
    "DB_MAX_OVERFLOW": "4",
    "CEL_WORKERS": "1",
}
# The call endpoint takes its time, so that a scheduler SIGKILL finds calls in flight; the tenant's delivery
# endpoint (its `webhook` channel provider) answers well within the claim lease.
CALL_REPLY: Final = Reply(200, CALL_ANSWER, delay=1.0)
DELIVERY_REPLY: Final = Reply(200, {}, delay=0.2)
SETTLE_POLL_SECONDS: Final = 1.0
# What the services log when they pick up interrupted work: (log, event, field) -> the name it is counted under.
RECOVERY_LINES: Final = {
    ("engine", "recovery pass", "unrouted_events"): "events routed by recovery",
    ("engine", "recovery pass", "overdue_waits"): "timers fired by recovery",
    ("engine", "recovery pass", "stuck_instances"): "runs redone by recovery",
    ("scheduler", "swept overdue waits", "fired"): "waits swept from PostgreSQL",
    ("scheduler", "swept pending deliveries", "enqueued"): "sends re-queued by sweep",
}

_SETTLED = """
    SELECT
        (SELECT count(*) FROM flow_instances WHERE tenant_id = $1) AS instances,
        (SELECT count(*) FROM flow_instances WHERE tenant_id = $1
            AND status NOT IN ('completed', 'failed', 'exited')) AS live,
        (SELECT count(*) FROM waits WHERE tenant_id = $1 AND status = 'pending') AS pending_waits,
        (SELECT count(*) FROM deliveries WHERE tenant_id = $1 AND status IN ('pending', 'sending')) AS unsent
"""


@dataclass(frozen=True)
class ChaosOptions:
    """How a run goes: its seed, the start rate (instances a second) and its timeline in seconds."""

    seed: int
    rate: float = 4.0
    warmup: float = 8.0
    slot: float = 11.0
    tail: float = 8.0
    settle: float = 90.0

    @property
    def workload_seconds(self) -> float:
        """How long participants are started for."""
        return self.warmup + self.slot * len(FAULTS) + self.tail


@dataclass
class Outcome:
    """What a run found: the verdict, each fault's report, what was picked up again after each, the driver's
    retried calls, the phases' labels."""

    verdict: Verdict
    faults: list[FaultReport]
    labels: dict[int, str]
    redone: dict[int, Redone]
    retried: dict[int, dict[str, int]]
    given_up: list[str]
    settle_seconds: float
    settled: bool

    @property
    def ok(self) -> bool:
        """Nothing lost, duplicated or wrong, everything settled, every fault answered as it must be."""
        return self.verdict.ok and self.settled and not any(report.failures for report in self.faults)


def run(options: ChaosOptions) -> int:
    """Run chaos once and print its figures; 0 when nothing was lost, duplicated or left wrong, else 1."""
    print(f"chaos: seed {options.seed}, {options.rate:g} starts/s for {options.workload_seconds:.0f}s", flush=True)
    began = time.monotonic()
    shutil.rmtree(LOG_DIR, ignore_errors=True)
    LOG_DIR.mkdir(parents=True)
    with _private_servers() as (postgres, redis_server), running_endpoint() as endpoint:
        endpoint.script(default=CALL_REPLY)
        with (
            running_endpoint() as provider,
            scratch_database(postgres.url, prefix="kalcifer_chaos") as database_url,
            running_suite(database_url, redis_server.url, LOG_DIR, SERVICE_SETTINGS) as suite,
            HealthWatch(suite) as health,
        ):
            print(f"chaos: suite up after {time.monotonic() - began:.0f}s; logs in {LOG_DIR}", flush=True)
            provider.script(default=DELIVERY_REPLY)
            rig = Rig(suite, postgres, redis_server, health, random.Random(options.seed))
            outcome = asyncio.run(_chaos(rig, endpoint, provider, database_url, options))
    _print(outcome, options, time.monotonic() - began)
    return 0 if outcome.ok else 1


@contextlib.contextmanager
def _private_servers() -> Iterator[tuple[EmbeddedPostgres, EmbeddedRedis]]:
    """A PostgreSQL and a Redis of this run's own (the machine's are shared: never restart or flush those), on
    fixed ports so that they come back at the same address."""
    with tempfile.TemporaryDirectory(prefix="kalcifer-chaos-") as data:
        postgres = EmbeddedPostgres(Path(data) / "postgres", port=free_port())
        redis_server = EmbeddedRedis(Path(data) / "redis", port=free_port())
        with postgres, redis_server:
            yield postgres, redis_server


async def _chaos(rig: Rig, endpoint: Endpoint, provider: Endpoint, database_url: str, options: ChaosOptions) -> Outcome:
    tenant = new_tenant(rig.suite, f"chaos-{options.seed}")
    flows = chaos_flows(endpoint.url("").rstrip("/"))
    async with (
        grpc.aio.insecure_channel(rig.suite.address("api"), options=CHANNEL_OPTIONS) as channel,
        asyncpg.create_pool(database_url, min_size=0, max_size=2) as pool,
    ):
        await _send_through(channel, tenant.auth, provider.url(DELIVERY_PATH))
        flow_ids = {kind: await _active_flow(channel, tenant.auth, flow) for kind, flow in flows.items()}
        phases = Phases()
        workload = Workload(
            channel=channel, auth=tenant.auth, flow_ids=flow_ids, pool=pool, tenant_id=str(tenant.id), phases=phases
        )
        stop_confirming = asyncio.Event()
        confirming = asyncio.create_task(workload.confirm_waiting(stop_confirming))
        loop = asyncio.get_running_loop()
        begin = loop.time()
        starting = asyncio.create_task(workload.start_participants(rate=options.rate, seconds=options.workload_seconds))
        reports: list[FaultReport] = []
        labels = {0: "before any fault"}
        phase_starts: list[float] = []
        for index, (name, fault, not_serving) in enumerate(FAULTS):
            slot_start = options.warmup + index * options.slot
            moment = slot_start + rig.rng.uniform(0.5, options.slot * 0.5)
            await asyncio.sleep(max(0.0, begin + moment - loop.time()))
            phase_starts.append(time.time())
            phases.current = index + 1
            labels[index + 1] = f"after {name}"
            report = await inject(rig, name, fault, at=loop.time() - begin, not_serving=not_serving)
            print(f"chaos: {report.describe()}", flush=True)
            reports.append(report)
        await starting
        settle_begin = loop.time()
        settled = await _settle(pool, str(tenant.id), len(workload.started), options.settle)
        settle_seconds = loop.time() - settle_begin
        stop_confirming.set()
        await confirming
        observed = await _observe(pool, str(tenant.id), flow_ids, endpoint, provider)
    observed.events_sent = frozenset(workload.events_sent)
    observed.events_acknowledged = frozenset(workload.events_acknowledged)
    verdict = judge(flows, list(workload.started.values()), observed)
    retried: dict[int, dict[str, int]] = {}
    for (phase, code), count in sorted(workload.calls.retried.items()):
        retried.setdefault(phase, {})[code] = count
    redone = redone_by_phase(
        phase_starts,
        observed,
        _logged_recoveries(rig.suite.log_dir),
        {phase: sum(codes.values()) for phase, codes in retried.items()},
    )
    return Outcome(verdict, reports, labels, redone, retried, workload.calls.given_up, settle_seconds, settled)


async def _send_through(channel: grpc.aio.Channel, auth: tuple[tuple[str, str]], url: str) -> None:
    """The templates the send nodes name, and the tenant's `webhook` provider on their channels, POSTing to `url`."""
    templates = template_pb2_grpc.TemplateServiceStub(channel)
    providers = channel_pb2_grpc.ChannelServiceStub(channel)
    for template in TEMPLATES:
        await templates.CreateTemplate(
            template_pb2.CreateTemplateRequest(
                template=template_pb2.Template(
                    id=template.id, channel=template.channel, subject=template.subject, body=template.body
                )
            ),
            metadata=auth,
            timeout=10,
        )
        await providers.SetChannelProvider(
            channel_pb2.SetChannelProviderRequest(
                channel=template.channel,
                provider="webhook",
                settings=dict_to_struct({"url": url, "secret": secrets.token_urlsafe(32)}),
            ),
            metadata=auth,
            timeout=10,
        )


async def _active_flow(channel: grpc.aio.Channel, auth: tuple[tuple[str, str]], flow: ChaosFlow) -> str:
    flows = flow_pb2_grpc.FlowServiceStub(channel)
    graph = flow_pb2.FlowGraph(
        nodes=[flow_pb2.GraphNode(id=i, type=t, config=dict_to_struct(c)) for i, t, c in flow.nodes],
        edges=[flow_pb2.GraphEdge(source=s, target=t, branch=b) for s, t, b in flow.edges],
    )
    created = await flows.CreateFlow(
        flow_pb2.CreateFlowRequest(flow=flow_pb2.Flow(name=f"chaos-{flow.kind}-{uuid.uuid4().hex[:6]}"), graph=graph),
        metadata=auth,
        timeout=10,
    )
    await flows.ActivateFlow(flow_pb2.ActivateFlowRequest(id=created.id), metadata=auth, timeout=10)
    flow_id: str = created.id
    return flow_id


async def _settle(pool: asyncpg.Pool, tenant_id: str, started: int, within: float) -> bool:
    """Wait until every started participant has a finished instance, no wait is pending and no send is left."""

    async def counts() -> dict[str, int]:
        async with pool.acquire(timeout=5) as connection:
            row = await connection.fetchrow(_SETTLED, tenant_id, timeout=5)
        assert row is not None
        return dict(row)

    try:
        await eventually(
            counts,
            until=lambda seen: (
                seen["instances"] >= started and not (seen["live"] or seen["pending_waits"] or seen["unsent"])
            ),
            within=within,
            interval=SETTLE_POLL_SECONDS,
            what="every instance finished, every wait resolved and every delivery sent",
        )
    except AssertionError as error:
        print(f"chaos: did not settle: {error}", flush=True)
        return False
    return True


async def _observe(
    pool: asyncpg.Pool, tenant_id: str, flow_ids: dict[FlowKind, str], endpoint: Endpoint, provider: Endpoint
) -> Observed:
    kind_of = {flow_id: kind for kind, flow_id in flow_ids.items()}
    async with pool.acquire(timeout=5) as connection:
        instances = await connection.fetch(
            "SELECT id::text, flow_id::text, participant_id, status FROM flow_instances WHERE tenant_id = $1",
            tenant_id,
        )
        steps = await connection.fetch(
            "SELECT instance_id::text, node_id, status, output::text FROM execution_steps WHERE tenant_id = $1",
            tenant_id,
        )
        deliveries = await connection.fetch(
            "SELECT instance_id::text, node_id, status, idempotency_key FROM deliveries WHERE tenant_id = $1",
            tenant_id,
        )
        events = await connection.fetch(
            "SELECT request_id, routed_time IS NOT NULL AS routed FROM events WHERE tenant_id = $1", tenant_id
        )
        pending = await connection.fetchval(
            "SELECT count(*) FROM waits WHERE tenant_id = $1 AND status = 'pending'", tenant_id
        )
    step_rows = []
    for row in steps:
        output: Any = orjson.loads(row["output"]) if row["output"] is not None else None
        branch = output.get("branch") if isinstance(output, dict) else None
        if isinstance(output, dict) and branch is not None:
            output = {key: value for key, value in output.items() if key != "branch"}
        step_rows.append(StepRow(row["instance_id"], row["node_id"], row["status"], branch, output))
    calls = [
        CallRequest(request.path.removeprefix(CALL_PATH_PREFIX), request.headers.get("idempotency-key", ""), request.at)
        for request in endpoint.received
        if request.path.startswith(CALL_PATH_PREFIX)
    ]
    return Observed(
        instances=[
            InstanceRow(row["id"], kind_of.get(row["flow_id"]), row["participant_id"], row["status"])
            for row in instances
        ],
        steps=step_rows,
        deliveries=[
            DeliveryRow(row["instance_id"], row["node_id"], row["status"], row["idempotency_key"]) for row in deliveries
        ],
        calls=calls,
        sends=[
            Send(request.headers.get("idempotency-key", ""), request.at)
            for request in provider.requests_to(DELIVERY_PATH)
        ],
        events=[EventRow(row["request_id"], row["routed"]) for row in events],
        pending_waits=int(pending),
    )


def _log_records(log: Path) -> Iterator[tuple[float, dict[str, Any]]]:
    """Every JSON line of a service's log (all its processes), with its time."""
    if not log.exists():
        return
    for line in log.read_bytes().splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line cut by a SIGKILL, or not ours
        if isinstance(record, dict) and isinstance(record.get("timestamp"), str):
            yield datetime.fromisoformat(record["timestamp"]).timestamp(), record


def _logged_recoveries(log_dir: Path) -> list[Recovered]:
    """The counts of `RECOVERY_LINES` in the services' logs."""
    found = []
    for service in ("engine", "scheduler"):
        for at, record in _log_records(log_dir / f"{service}.log"):
            for (source, event, name), what in RECOVERY_LINES.items():
                count = record.get(name)
                if source == service and record.get("event") == event and isinstance(count, int) and count:
                    found.append(Recovered(what, count, at))
    return found


def _print(outcome: Outcome, options: ChaosOptions, wall: float) -> None:
    verdict = outcome.verdict
    print()
    print(f"chaos figures (seed {options.seed}, {wall:.0f}s wall, settled in {outcome.settle_seconds:.0f}s)")
    print(render_table(outcome.labels, verdict))
    events = verdict.events
    print(
        f"events: {events.sent} sent, {events.acknowledged} acknowledged, {events.stored} stored, "
        f"{events.lost} lost, {events.unrouted} unrouted; waits left pending: {verdict.pending_waits}"
    )
    print()
    print("what each phase picked up again (counted when it happened)")
    print(render_redone(outcome.labels, outcome.redone, list(RECOVERY_LINES.values())))
    print()
    for report in outcome.faults:
        print(f"fault: {report.describe()}")
    for phase, codes in outcome.retried.items():
        listed = ", ".join(f"{code} x{count}" for code, count in codes.items())
        print(f"api calls retried {outcome.labels.get(phase, phase)}: {listed}")
    for given_up in outcome.given_up[:20]:
        print(f"given up: {given_up}")
    for problem in verdict.problems[:40]:
        print(f"problem: {problem}")
    total = verdict.total
    ok = outcome.ok
    print(
        f"chaos {'PASSED' if ok else 'FAILED'}: {total.lost} lost, "
        f"{total.duplicate_instances + total.duplicate_steps + total.duplicate_deliveries + total.calls_new_key} "
        f"duplicated, {total.wrong_state} in a wrong state, across {len(outcome.faults)} faults "
        f"({', '.join(report.name for report in outcome.faults)})"
    )
