"""The three services as real processes, each on a free port (and its /metrics on another), stopped (and
reaped) afterwards; with `replicas`, several processes of each on one database and Redis, as a scaled-out
deployment runs them."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kalcifer_common.rpc.tls import TlsFiles, secure_or_insecure_channel

from tests.support.databases import scratch_database, scratch_redis_db
from tests.support.eventually import eventually_sync

BIN = Path(sys.executable).parent
SERVICE_NAMES = ("engine", "scheduler", "api")
PORT_VARIABLES = {"api": "API_PORT", "engine": "ENGINE_PORT", "scheduler": "SCHEDULER_PORT"}
METRICS_PORT_VARIABLES = {
    "api": "API_METRICS_PORT",
    "engine": "ENGINE_METRICS_PORT",
    "scheduler": "SCHEDULER_METRICS_PORT",
}


def replica_name(service: str, number: int) -> str:
    """How a suite names the `number`-th process of `service` (from 1): `engine`, `engine#2`, ..."""
    return service if number == 1 else f"{service}#{number}"


# Ports come from a block of this test process's own, below the kernel's ephemeral range (32768-60999 here), never
# twice: a port the kernel picked (bind to 0) could be picked again for another xdist worker, or taken by an
# outgoing connection, before the service bound it; the other worker's service then answered this suite's health
# checks and calls (a CreateTenant refused for another suite's admin token, in CI).
_FIRST_PORT = 20000
_PORT_BLOCK = 1400
_PORT_BLOCKS = 8
_handed_out: set[int] = set()


def _port_block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw3" in a worker, unset in a lone process
    index = int(worker[2:]) + 1 if worker[2:].isdigit() else 0
    first = _FIRST_PORT + (index % _PORT_BLOCKS) * _PORT_BLOCK
    return range(first, first + _PORT_BLOCK)


def free_port() -> int:
    """A TCP port nobody listens on right now, never handed out before by this process (see `_port_block`)."""
    block = _port_block()
    start = secrets.randbelow(len(block))
    for offset in range(len(block)):
        port = block[(start + offset) % len(block)]
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port left in {block}")


def health_status(address: str, service: str = "", timeout: float = 1.0, tls: TlsFiles | None = None) -> int | None:
    """The gRPC health status at `address` (over TLS when `tls`), or None when it does not answer."""
    with secure_or_insecure_channel(address, tls) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return None
    return int(response.status)


def wait_serving(
    address: str,
    *,
    timeout: float = 120.0,  # a service starts in 1-3 s; a shared 2-core machine under load has taken 50 s
    process: subprocess.Popen[bytes] | None = None,
    tls: TlsFiles | None = None,
) -> None:
    """Poll the health protocol until SERVING (AssertionError with the last status seen after `timeout`); fail at
    once, with its exit code, if the process died."""

    def status() -> int | None:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process serving {address} exited with {process.returncode}")
        return health_status(address, tls=tls)

    eventually_sync(
        status,
        until=lambda seen: seen == health_pb2.HealthCheckResponse.SERVING,
        within=timeout,
        interval=0.1,
        what=f"{address} SERVING",
    )


def _listening_inodes(port: int) -> set[str] | None:
    """The socket inodes listening on TCP `port` (IPv4 or IPv6), or None where /proc does not say (not Linux)."""
    inodes: set[str] = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as lines:
                for line in list(lines)[1:]:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
    except OSError:
        return None
    return inodes


def serves_port(pid: int, port: int) -> bool:
    """Whether process `pid` is the one listening on `port` (True where /proc cannot say)."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return True
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    held: set[str] = set()
    for fd in fds:
        with contextlib.suppress(OSError):  # closed meanwhile
            held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return any(f"socket:[{inode}]" in held for inode in inodes)


@dataclass
class Suite:
    """Addresses, secrets and processes of a running suite."""

    database_url: str
    redis_url: str
    admin_token: str
    internal_token: str
    ports: dict[str, int]
    log_dir: Path
    # Each process's Prometheus /metrics port (by service or replica name), free like its gRPC port.
    metrics_ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Settings of this suite beyond the defaults (e.g. OUTBOUND_ALLOWLIST for a module's local endpoints).
    extra_env: dict[str, str] = field(default_factory=dict)
    # KALCIFER_SECRET_KEY of the API and the scheduler: seals and opens provider secrets.
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def address(self, service: str) -> str:
        """`127.0.0.1:PORT` of one service (or one replica: `engine#2`)."""
        return f"127.0.0.1:{self.ports[service]}"

    def replicas(self, service: str) -> list[str]:
        """The names of `service`'s processes in this suite: `[engine]`, or `[engine, engine#2, ...]`."""
        return [name for name in self.ports if name == service or name.startswith(f"{service}#")]

    def target(self, service: str) -> str:
        """The gRPC target of `service` its peers call: its one address, or every replica's as an `ipv4:` list
        (which internal channels balance round_robin, like `dns:///engine:4510` in compose)."""
        addresses = [self.address(name) for name in self.replicas(service)]
        return addresses[0] if len(addresses) == 1 else "ipv4:" + ",".join(addresses)

    def metrics_url(self, service: str) -> str:
        """`http://127.0.0.1:PORT/metrics` of one service (or one replica: `engine#2`)."""
        return f"http://127.0.0.1:{self.metrics_ports[service]}/metrics"

    @property
    def env(self) -> dict[str, str]:
        """The environment every service of this suite runs with."""
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "KALCIFER_ADMIN_TOKEN": self.admin_token,
            "KALCIFER_INTERNAL_TOKEN": self.internal_token,
            "KALCIFER_SECRET_KEY": self.secret_key,
            "API_PORT": str(self.ports["api"]),
            "ENGINE_PORT": str(self.ports["engine"]),
            "SCHEDULER_PORT": str(self.ports["scheduler"]),
            "ENGINE_ADDR": self.target("engine"),
            "SCHEDULER_ADDR": self.target("scheduler"),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "SHUTDOWN_GRACE_SECONDS": "5",
            # Tests' local endpoints; every other loopback, private or metadata address stays refused.
            "OUTBOUND_ALLOWLIST": "127.0.0.1,localhost",
            **self.extra_env,
        }

    def start(self, service: str, *, replica: int = 1) -> subprocess.Popen[bytes]:
        """Start one process of `service` (its `replica`-th, on that replica's port) and wait until it serves."""
        name = replica_name(service, replica)
        log = (self.log_dir / f"{name}.log").open("ab")
        # Its own /metrics port too (what else runs on `env` keeps the conftest's 0: no endpoint, no clash).
        metrics_port = self.metrics_ports.setdefault(name, free_port())
        env = {
            **self.env,
            PORT_VARIABLES[service]: str(self.ports[name]),
            METRICS_PORT_VARIABLES[service]: str(metrics_port),
        }
        process = subprocess.Popen([str(BIN / f"kalcifer-{service}")], env=env, stdout=log, stderr=log)
        log.close()
        self.processes[name] = process
        wait_serving(self.address(name), process=process, tls=TlsFiles.from_environment(self.env))
        if not serves_port(process.pid, self.ports[name]):
            raise RuntimeError(f"{name}: another process answers on port {self.ports[name]}; see {log.name}")
        return process

    def stop(self, service: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal one service (or replica: `engine#2`) and reap it; returns its exit code."""
        process = self.processes.pop(service)
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return process.returncode

    def log_of(self, service: str) -> str:
        """What a service (or replica: `engine#2`) has logged so far."""
        path = self.log_dir / f"{service}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def running_suite(
    database_url: str,
    redis_url: str,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    *,
    replicas: int = 1,
) -> Iterator[Suite]:
    """All three services, `replicas` processes of each (each on its own port; peers call every replica of a
    service), started in dependency order with `extra_env` on top of the defaults; stopped with SIGTERM afterwards."""
    log_dir.mkdir(parents=True, exist_ok=True)
    suite = Suite(
        database_url=database_url,
        redis_url=redis_url,
        admin_token=secrets.token_urlsafe(16),
        internal_token=secrets.token_urlsafe(16),
        ports={replica_name(name, number): free_port() for name in SERVICE_NAMES for number in range(1, replicas + 1)},
        log_dir=log_dir,
        extra_env=dict(extra_env or {}),
    )
    try:
        for name in SERVICE_NAMES:
            for number in range(1, replicas + 1):
                suite.start(name, replica=number)
        yield suite
    finally:
        for name in list(suite.processes):
            suite.stop(name)


@contextmanager
def scratch_suite(
    servers: tuple[str, str], log_dir: Path, extra_env: dict[str, str] | None = None, *, replicas: int = 1
) -> Iterator[Suite]:
    """`running_suite` on a migrated database and a Redis db of its own on the run's `servers` (PostgreSQL URL,
    Redis URL), both removed afterwards: what a module that needs its own settings starts."""
    with (
        scratch_database(servers[0]) as database_url,
        scratch_redis_db(servers[1]) as redis_url,
        running_suite(database_url, redis_url, log_dir, extra_env, replicas=replicas) as suite,
    ):
        yield suite
