"""Two of each service on one PostgreSQL and Redis (SPEC 2: nothing may assume a single replica).

Two API, two engine and two scheduler processes, every one of them calling every replica of its peers (an
`ipv4:` list, balanced round_robin like `dns:///engine:4510` in compose). Load goes in through both APIs: flows
that wait on a timer and flows that wait for an event, which is sent through the other API than the one that
started the instance. Every instance must complete exactly once: one instance per participant, each node of its
path run exactly once (read from `execution_steps`), one conversion per instance, no wait left pending. The
second test SIGKILLs one replica of each service in the middle of the load and asks the same of the replicas left.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import asyncpg
import grpc
import orjson
import pytest
from kalcifer.v1 import event_pb2, event_pb2_grpc, flow_pb2, flow_pb2_grpc, trigger_pb2, trigger_pb2_grpc
from kalcifer_common.structs import dict_to_struct

from tests.support.eventually import eventually
from tests.support.processes import Suite, replica_name, scratch_suite
from tests.support.tenants import Tenant, new_tenant

pytestmark = pytest.mark.e2e

REPLICAS: Final = 2
# Participants per run: every third waits for an event, the others for a timer.
PARTICIPANTS: Final = 240
IN_FLIGHT: Final = 16
CONFIRM_EVENT: Final = "confirm"
# Generous: the machine is shared and loaded; this bounds a hang, it measures nothing.
SETTLE_SECONDS: Final = 300.0
GIVE_UP_SECONDS: Final = 120.0
RETRY_DELAY_SECONDS: Final = 0.2
CALL_TIMEOUT_SECONDS: Final = 10.0
# Short leases, sweeps and recovery periods, so that the work of a killed replica is picked up within seconds.
SETTINGS: Final = {
    "CLAIM_LEASE_SECONDS": "5",
    "SWEEP_INTERVAL_SECONDS": "0.5",
    "RECOVERY_INTERVAL_SECONDS": "1",
    "RECOVERY_OVERDUE_SECONDS": "3",
    "RECOVERY_EVENT_SECONDS": "3",
    "RECOVERY_RUNNING_SECONDS": "5",
    "RESUME_RETRY_SECONDS": "10",
    "HEALTH_INTERVAL_SECONDS": "0.5",
    "RPC_TIMEOUT_SECONDS": "5",
    "SHUTDOWN_GRACE_SECONDS": "2",
    "STATS_INTERVAL_SECONDS": "1",
    "DB_POOL_SIZE": "4",
    "DB_MAX_OVERFLOW": "4",
    "CEL_WORKERS": "1",
}
# What an API may answer while a replica behind it, or the API itself, is gone: worth another try, same id.
RETRYABLE: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


class Kind(StrEnum):
    """Which flow a participant runs."""

    TIMED = "timed"
    AWAITING = "awaiting"


# Each flow's graph and the path (node, branch) every instance of it must take, each node exactly once.
GRAPHS: Final[dict[Kind, dict[str, Any]]] = {
    Kind.TIMED: {
        "nodes": [
            ("start", "event_entry", {"event_type": "replica_timed"}),
            ("pause", "wait", {"duration": "1s"}),
            ("convert", "track_conversion", {"event_name": "timed"}),
            ("done", "exit", {}),
        ],
        "edges": [("start", "pause", ""), ("pause", "convert", ""), ("convert", "done", "")],
    },
    Kind.AWAITING: {
        "nodes": [
            ("start", "event_entry", {"event_type": "replica_awaiting"}),
            ("confirm", "wait_for_event", {"event_type": CONFIRM_EVENT, "timeout": "600s"}),
            ("convert", "track_conversion", {"event_name": "confirmed"}),
            ("done", "exit", {}),
            ("expired", "exit", {}),
        ],
        "edges": [
            ("start", "confirm", ""),
            ("confirm", "convert", "event_received"),
            ("confirm", "expired", "timed_out"),
            ("convert", "done", ""),
        ],
    },
}
PATHS: Final[dict[Kind, list[tuple[str, str | None]]]] = {
    Kind.TIMED: [("start", None), ("pause", None), ("convert", None), ("done", None)],
    Kind.AWAITING: [("start", None), ("confirm", "event_received"), ("convert", None), ("done", None)],
}


@dataclass(frozen=True)
class Participant:
    """One participant of the load: its flow and the API (0 or 1) that starts it; its event goes via the other."""

    id: str
    kind: Kind
    api: int


@pytest.fixture(scope="module")
def replicated(servers: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """Two processes of each service on a database and a Redis db of their own."""
    with scratch_suite(servers, tmp_path_factory.mktemp("replica-logs"), SETTINGS, replicas=REPLICAS) as suite:
        yield suite


class Driver:
    """Starts participants and sends events through the suite's two APIs, each call retried under the same
    request id (on the other API when the preferred one does not answer) until an API answers."""

    def __init__(self, suite: Suite, tenant: Tenant, flow_ids: dict[Kind, str]) -> None:
        self._channels = [grpc.aio.insecure_channel(suite.address(name)) for name in suite.replicas("api")]
        self._triggers = [trigger_pb2_grpc.TriggerServiceStub(channel) for channel in self._channels]
        self._events = [event_pb2_grpc.EventServiceStub(channel) for channel in self._channels]
        self._auth = tenant.auth
        self._flow_ids = flow_ids
        self.answered_by: Counter[int] = Counter()
        self.started: set[str] = set()
        self.confirmed: set[str] = set()
        self.retried: Counter[str] = Counter()

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(None)

    async def start(self, participant: Participant) -> None:
        request = trigger_pb2.TriggerFlowRequest(
            flow_id=self._flow_ids[participant.kind],
            participant_id=participant.id,
            request_id=f"start-{participant.id}",
        )
        await self._call(
            participant.api,
            lambda api: self._triggers[api].TriggerFlow(request, metadata=self._auth, timeout=CALL_TIMEOUT_SECONDS),
        )
        self.started.add(participant.id)

    async def confirm(self, participant: Participant) -> None:
        """The participant's event, through the API that did not start it."""
        request = event_pb2.IngestEventRequest(
            participant_id=participant.id, event_type=CONFIRM_EVENT, request_id=f"confirm-{participant.id}"
        )
        await self._call(
            1 - participant.api,
            lambda api: self._events[api].IngestEvent(request, metadata=self._auth, timeout=CALL_TIMEOUT_SECONDS),
        )
        self.confirmed.add(participant.id)

    async def _call(self, preferred: int, call: Callable[[int], Awaitable[object]]) -> None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + GIVE_UP_SECONDS
        api = preferred
        while True:
            try:
                await call(api)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE or loop.time() > give_up_at:
                    raise
                self.retried[error.code().name] += 1
                api = 1 - api  # the other replica, same request id
                await asyncio.sleep(RETRY_DELAY_SECONDS)
                continue
            self.answered_by[api] += 1
            return


async def _active_flows(suite: Suite, tenant: Tenant) -> dict[Kind, str]:
    flow_ids: dict[Kind, str] = {}
    async with grpc.aio.insecure_channel(suite.address("api")) as channel:
        flows = flow_pb2_grpc.FlowServiceStub(channel)
        for kind, graph in GRAPHS.items():
            created = await flows.CreateFlow(
                flow_pb2.CreateFlowRequest(
                    flow=flow_pb2.Flow(name=f"replicas-{kind}"),
                    graph=flow_pb2.FlowGraph(
                        nodes=[
                            flow_pb2.GraphNode(id=i, type=t, config=dict_to_struct(c)) for i, t, c in graph["nodes"]
                        ],
                        edges=[flow_pb2.GraphEdge(source=s, target=t, branch=b) for s, t, b in graph["edges"]],
                    ),
                ),
                metadata=tenant.auth,
                timeout=CALL_TIMEOUT_SECONDS,
            )
            await flows.ActivateFlow(
                flow_pb2.ActivateFlowRequest(id=created.id), metadata=tenant.auth, timeout=CALL_TIMEOUT_SECONDS
            )
            flow_ids[kind] = created.id
    return flow_ids


def _participants(run: str) -> list[Participant]:
    return [
        Participant(f"{run}-{number:04d}", Kind.AWAITING if number % 3 == 0 else Kind.TIMED, api=number % REPLICAS)
        for number in range(PARTICIPANTS)
    ]


_ARMED_EVENT_WAITS = """
    SELECT DISTINCT i.participant_id FROM waits w JOIN flow_instances i ON i.id = w.instance_id
    WHERE w.tenant_id = $1 AND w.status = 'pending' AND w.kind = 'event' AND w.event_type = $2
"""


async def _confirm_armed(
    driver: Driver, pool: asyncpg.Pool, tenant: Tenant, by_id: dict[str, Participant], stop: asyncio.Event
) -> None:
    """Until `stop`: send each awaiting participant its event once its wait is armed (so the graph dictates
    `event_received`, whichever replica armed it)."""
    while not stop.is_set():
        rows = await pool.fetch(_ARMED_EVENT_WAITS, tenant.id, CONFIRM_EVENT)
        todo = [by_id[row[0]] for row in rows if row[0] not in driver.confirmed]
        await asyncio.gather(*(driver.confirm(participant) for participant in todo))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.3)


@dataclass
class Run:
    """What one load run drove, and what the database holds for its tenant afterwards."""

    participants: list[Participant]
    driver: Driver
    instances: list[asyncpg.Record] = field(default_factory=list)
    steps: list[asyncpg.Record] = field(default_factory=list)
    conversions: list[asyncpg.Record] = field(default_factory=list)
    pending_waits: int = 0


async def _run_load(suite: Suite, run: str, *, midway: Callable[[], Awaitable[None]] | None = None) -> Run:
    """Start every participant of `run` through both APIs (`midway` runs once half were answered), confirm the
    awaiting ones, wait until every instance has finished, and read what the database holds."""
    tenant = new_tenant(suite, f"replicas-{run}-{uuid.uuid4().hex[:6]}")
    flow_ids = await _active_flows(suite, tenant)
    participants = _participants(run)
    by_id = {participant.id: participant for participant in participants}
    driver = Driver(suite, tenant, flow_ids)
    slots = asyncio.Semaphore(IN_FLIGHT)
    half_started = asyncio.Event()
    stop = asyncio.Event()

    async def start(participant: Participant) -> None:
        async with slots:
            await driver.start(participant)
        if len(driver.started) >= PARTICIPANTS // 2:
            half_started.set()

    async def at_midway() -> None:
        await half_started.wait()
        if midway is not None:
            await midway()

    async with asyncpg.create_pool(suite.database_url, min_size=1, max_size=3) as pool:
        confirming = asyncio.create_task(_confirm_armed(driver, pool, tenant, by_id, stop))
        try:
            await asyncio.gather(at_midway(), *(start(participant) for participant in participants))

            async def finished() -> int:
                count: int = await pool.fetchval(
                    "SELECT count(*) FROM flow_instances WHERE tenant_id = $1 AND status IN "
                    "('completed', 'failed', 'exited')",
                    tenant.id,
                )
                return count

            await eventually(
                finished, until=lambda done: done >= PARTICIPANTS, within=SETTLE_SECONDS, what="every instance done"
            )
        finally:
            stop.set()
            await confirming
            await driver.close()
        observed = Run(participants, driver)
        observed.instances = await pool.fetch(
            "SELECT id, participant_id, status FROM flow_instances WHERE tenant_id = $1", tenant.id
        )
        observed.steps = await pool.fetch(
            "SELECT instance_id, node_id, status, output->>'branch' AS branch FROM execution_steps "
            "WHERE tenant_id = $1",
            tenant.id,
        )
        observed.conversions = await pool.fetch(
            "SELECT instance_id, name FROM conversions WHERE tenant_id = $1", tenant.id
        )
        observed.pending_waits = await pool.fetchval(
            "SELECT count(*) FROM waits WHERE tenant_id = $1 AND status = 'pending'", tenant.id
        )
    return observed


def _assert_every_instance_completed_exactly_once(run: Run) -> None:
    by_participant: dict[str, list[asyncpg.Record]] = {}
    for row in run.instances:
        by_participant.setdefault(row["participant_id"], []).append(row)
    assert set(by_participant) == {p.id for p in run.participants}, "an instance is missing or extra"
    twice = sorted(pid for pid, rows in by_participant.items() if len(rows) != 1)
    assert not twice, f"participants with more than one instance: {twice[:10]}"
    not_completed = [(row["participant_id"], row["status"]) for row in run.instances if row["status"] != "completed"]
    assert not not_completed, f"{len(not_completed)} instances did not complete: {not_completed[:10]}"

    steps: dict[Any, Counter[tuple[str, str | None]]] = {}
    for step in run.steps:
        steps.setdefault(step["instance_id"], Counter())[(step["node_id"], step["branch"])] += 1
    kinds = {p.id: p.kind for p in run.participants}
    wrong: list[str] = []
    for row in run.instances:
        expected = Counter(PATHS[kinds[row["participant_id"]]])
        taken = steps.get(row["id"], Counter())
        if taken != expected:
            wrong.append(f"{row['participant_id']}: {dict(taken)}")
    assert not wrong, f"{len(wrong)} instances did not run each node of their path exactly once: {wrong[:5]}"
    bad_steps = [step for step in run.steps if step["status"] != "completed"]
    assert not bad_steps, f"steps not completed: {bad_steps[:5]}"

    converted = Counter(row["instance_id"] for row in run.conversions)
    assert converted == Counter({row["id"]: 1 for row in run.instances}), "an action ran other than once"
    assert run.pending_waits == 0


def _stats(suite: Suite, name: str) -> dict[str, Any]:
    """The last `scheduler stats` line a scheduler replica logged."""
    lines = [line for line in suite.log_of(name).splitlines() if '"scheduler stats"' in line]
    assert lines, f"{name} logged no stats"
    stats: dict[str, Any] = orjson.loads(lines[-1])
    return stats


async def _armed_and_fired(suite: Suite, name: str) -> None:
    """Wait for a stats line of scheduler replica `name` counting timers it armed and fired (one a second)."""
    await eventually(
        lambda: _stats(suite, name),
        until=lambda stats: stats["armed"] > 0 and stats["fired"] > 0,
        within=30,
        what=f"{name} armed and fired timers",
    )


def _cpu_ticks(suite: Suite, name: str) -> int:
    """CPU time (user + system, in clock ticks) a process has used so far, from /proc/<pid>/stat."""
    pid = suite.processes[name].pid
    # The fields after the command name (which may hold spaces) start at field 3; utime and stime are 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def test_two_of_each_service_complete_every_instance_exactly_once(replicated: Suite) -> None:
    engines = replicated.replicas("engine")
    assert len(engines) == len(replicated.replicas("scheduler")) == len(replicated.replicas("api")) == REPLICAS
    cpu_before = {name: _cpu_ticks(replicated, name) for name in engines}

    run = await _run_load(replicated, "steady")

    _assert_every_instance_completed_exactly_once(run)
    # Both APIs took starts and events (the driver asks each for half; a retry may go to the other).
    answered = run.driver.answered_by
    assert min(answered[0], answered[1]) > 0.25 * (answered[0] + answered[1]), answered
    # Each engine carried a share of the runs (round_robin from both APIs and both schedulers): an engine that
    # got no calls spends only what its recovery pass costs, a small fraction of what the other spends.
    spent = {name: _cpu_ticks(replicated, name) - cpu_before[name] for name in engines}
    print(f"\nsteady: {len(run.instances)} instances, answered by api {dict(answered)}, engine CPU ticks {spent}")
    for name in engines:
        assert spent[name] > 0.2 * sum(spent.values()), f"{name} did little of the work (CPU ticks): {spent}"
    # Each scheduler was asked to arm timers by the engines and fired some into them.
    for name in replicated.replicas("scheduler"):
        await _armed_and_fired(replicated, name)


async def test_losing_one_replica_of_each_service_midway_loses_and_repeats_nothing(replicated: Suite) -> None:
    killed = [replica_name(service, 2) for service in ("api", "engine", "scheduler")]

    async def kill_one_of_each() -> None:
        for name in killed:
            await asyncio.to_thread(replicated.stop, name, signal.SIGKILL)

    run = await _run_load(replicated, "killed", midway=kill_one_of_each)

    assert not set(killed) & set(replicated.processes), "the replicas were not killed"
    print(
        f"\nkilled {killed} midway: {len(run.instances)} instances, answered by api {dict(run.driver.answered_by)}, "
        f"retried {dict(run.driver.retried)}"
    )
    _assert_every_instance_completed_exactly_once(run)
    # The API left took over the calls the killed one did not answer.
    assert run.driver.answered_by[0] > PARTICIPANTS // 2, run.driver.answered_by
