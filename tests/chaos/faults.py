"""The faults a chaos run injects, and a watch on every service's gRPC health while it does.

Each fault hits something the run owns: one of its three service processes (SIGKILL, then started again), or its
private Redis and PostgreSQL servers (FLUSHALL; stopped and started again on the same port). A PostgreSQL restart
never restarts a service: they must report NOT_SERVING meanwhile and serve again by themselves, same processes.
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kalcifer_cli.embedded import EmbeddedPostgres, EmbeddedRedis

from tests.chaos.workload import CHANNEL_OPTIONS
from tests.support.processes import SERVICE_NAMES, Suite

SERVING: Final = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: Final = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH_POLL_SECONDS: Final = 0.2
# How long the suite may take to serve again after a fault before the run gives up on it.
RECOVERY_BOUND_SECONDS: Final = 60.0


class HealthWatch:
    """Polls the health of every service from a thread; keeps each change of status with its time."""

    def __init__(self, suite: Suite) -> None:
        self._suite = suite
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: dict[str, int | None] = {}
        self.changes: list[tuple[float, str, int | None]] = []
        self._thread = threading.Thread(target=self._poll, name="health-watch", daemon=True)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _poll(self) -> None:
        channels = {
            name: grpc.insecure_channel(self._suite.address(name), options=CHANNEL_OPTIONS) for name in SERVICE_NAMES
        }
        try:
            while not self._stop.is_set():
                for name, channel in channels.items():
                    status = _status(channel)
                    with self._lock:
                        if name not in self._latest or self._latest[name] != status:
                            self._latest[name] = status
                            self.changes.append((time.monotonic(), name, status))
                self._stop.wait(HEALTH_POLL_SECONDS)
        finally:
            for channel in channels.values():
                channel.close()

    def all_serving(self) -> bool:
        """Whether every service answered SERVING at its latest poll."""
        with self._lock:
            return all(self._latest.get(name) == SERVING for name in SERVICE_NAMES)

    def seen_between(self, start: float, end: float) -> dict[str, set[int | None]]:
        """Every status each service reported within [start, end] (including the one it had at `start`)."""
        seen: dict[str, set[int | None]] = {name: set() for name in SERVICE_NAMES}
        with self._lock:
            changes = list(self.changes)
        for name in SERVICE_NAMES:
            mine = [(at, status) for at, service, status in changes if service == name]
            before = [status for at, status in mine if at <= start]
            if before:
                seen[name].add(before[-1])
            seen[name].update(status for at, status in mine if start < at <= end)
        return seen


def _status(channel: grpc.Channel) -> int | None:
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
    except grpc.RpcError:
        return None
    return int(response.status)


@dataclass
class Rig:
    """What faults act on: the suite's processes, the private servers, the health watch, the run's random."""

    suite: Suite
    postgres: EmbeddedPostgres
    redis_server: EmbeddedRedis
    health: HealthWatch
    rng: random.Random


@dataclass
class FaultReport:
    """What one fault did: when (seconds into the workload), how long its target was gone, how long until every
    service served again, and which services said NOT_SERVING or did not answer meanwhile."""

    name: str
    at: float = 0.0
    down_seconds: float = 0.0
    recovered_seconds: float = 0.0
    not_serving: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What the fault should have made the suite do and it did not (a service that did not say NOT_SERVING).
    failures: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the run's report."""
        parts = [
            f"{self.name} at {self.at:5.1f}s",
            f"down {self.down_seconds:.1f}s",
            f"all SERVING {self.recovered_seconds:.1f}s after",
            f"NOT_SERVING: {', '.join(self.not_serving) or '-'}",
            f"unreachable: {', '.join(self.unreachable) or '-'}",
        ]
        return "; ".join(parts + self.notes + [f"FAILED: {failure}" for failure in self.failures])


async def _sigkill(rig: Rig, service: str, report: FaultReport) -> None:
    await asyncio.to_thread(rig.suite.stop, service, signal.SIGKILL)
    report.down_seconds = rig.rng.uniform(0.3, 2.0)
    await asyncio.sleep(report.down_seconds)
    await asyncio.to_thread(rig.suite.start, service)


async def kill_engine(rig: Rig, report: FaultReport) -> None:
    """SIGKILL the engine (runs, routes and recoveries in flight die with it), start it again."""
    await _sigkill(rig, "engine", report)


async def kill_scheduler(rig: Rig, report: FaultReport) -> None:
    """SIGKILL the scheduler (timers, calls and sends in flight die with it), start it again."""
    await _sigkill(rig, "scheduler", report)


async def kill_api(rig: Rig, report: FaultReport) -> None:
    """SIGKILL the API (starts and events in flight die with it), start it again."""
    await _sigkill(rig, "api", report)


async def flush_redis(rig: Rig, report: FaultReport) -> None:
    """FLUSHALL the run's Redis: every armed timer and queued send is gone."""
    client = redis.Redis.from_url(rig.redis_server.url, socket_timeout=5)
    try:
        await asyncio.to_thread(client.flushall)
    finally:
        client.close()


async def restart_redis(rig: Rig, report: FaultReport) -> None:
    """Stop the run's Redis, keep it down a moment, start it again (empty) on the same port."""
    await asyncio.to_thread(rig.redis_server.stop)
    report.down_seconds = rig.rng.uniform(1.0, 3.0)
    await asyncio.sleep(report.down_seconds)
    await asyncio.to_thread(rig.redis_server.start)


async def restart_postgres(rig: Rig, report: FaultReport) -> None:
    """Stop the run's PostgreSQL (fast shutdown: every connection is cut), keep it down a moment, start it again
    on the same port; the services must come back on their own, as the same processes."""
    pids = {name: process.pid for name, process in rig.suite.processes.items()}
    await asyncio.to_thread(rig.postgres.stop)
    report.down_seconds = rig.rng.uniform(2.0, 4.0)
    await asyncio.sleep(report.down_seconds)
    await asyncio.to_thread(rig.postgres.start)
    await _all_serving(rig)
    replaced = [
        name
        for name, pid in pids.items()
        if name not in rig.suite.processes
        or rig.suite.processes[name].pid != pid
        or rig.suite.processes[name].poll() is not None
    ]
    report.notes.append(f"services restarted: {', '.join(replaced) or 'none'}")
    if replaced:
        report.failures.append(f"{', '.join(replaced)} had to be restarted")


async def _all_serving(rig: Rig) -> None:
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + RECOVERY_BOUND_SECONDS
    while not rig.health.all_serving():
        if loop.time() > give_up_at:
            raise AssertionError(f"the suite did not serve again within {RECOVERY_BOUND_SECONDS:.0f}s")
        await asyncio.sleep(HEALTH_POLL_SECONDS)


Fault = Callable[[Rig, FaultReport], Awaitable[None]]

# In the order of the issue: a SIGKILL of each service, a Redis flush, a Redis restart, a PostgreSQL restart; each
# with the services that must say NOT_SERVING while it lasts (those whose dependency it takes away).
FAULTS: Final[tuple[tuple[str, Fault, tuple[str, ...]], ...]] = (
    ("engine SIGKILL", kill_engine, ()),
    ("scheduler SIGKILL", kill_scheduler, ()),
    ("api SIGKILL", kill_api, ()),
    ("redis FLUSHALL", flush_redis, ()),
    ("redis restart", restart_redis, ("scheduler",)),
    ("postgres restart", restart_postgres, SERVICE_NAMES),
)


async def inject(rig: Rig, name: str, fault: Fault, *, at: float, not_serving: tuple[str, ...] = ()) -> FaultReport:
    """Run one fault, then wait (bounded) until every service serves again; the report says what was seen, and
    fails the fault when a service of `not_serving` never said NOT_SERVING meanwhile."""
    report = FaultReport(name, at=at)
    begin = time.monotonic()
    await fault(rig, report)
    await _all_serving(rig)
    end = time.monotonic()
    report.recovered_seconds = end - begin
    for service, statuses in rig.health.seen_between(begin, end).items():
        if NOT_SERVING in statuses:
            report.not_serving.append(service)
        if None in statuses:
            report.unreachable.append(service)
    silent = [service for service in not_serving if service not in report.not_serving]
    if silent:
        report.failures.append(f"{', '.join(silent)} never said NOT_SERVING")
    return report
