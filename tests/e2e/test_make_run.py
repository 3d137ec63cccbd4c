"""`make run` as a newcomer meets it: `kalcifer dev` on embedded PostgreSQL and Redis, supervised services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from tests.support.eventually import eventually_sync
from tests.support.grpcurl import grpcurl
from tests.support.processes import free_port, health_status, wait_serving
from tests.support.server_dirs import server_dir

pytestmark = pytest.mark.e2e

KALCIFER = str(Path(sys.executable).parent / "kalcifer")
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class DevRun:
    """A running `kalcifer dev` and where its services listen."""

    process: subprocess.Popen[str]
    ports: dict[str, int]
    metrics_ports: dict[str, int]
    data_dir: Path
    log: Path

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def metrics(self, service: str) -> str:
        """The service's /metrics page."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_ports[service]}/metrics", timeout=10) as page:
            text: str = page.read().decode()
            return text

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (Linux /proc)."""
    found: set[int] = set()
    stack = [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    stack.append(child)
    return found


def _pid_of(run: DevRun, script: str) -> int:
    for pid in _descendants(run.process.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if any(part.endswith(script.encode()) for part in cmdline):
            return pid
    raise AssertionError(f"no {script} process under kalcifer dev")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def dev_run() -> Iterator[DevRun]:
    with server_dir("dev-run") as data_dir:
        yield from _dev_run(data_dir)


def _dev_run(data_dir: Path) -> Iterator[DevRun]:
    ports = {"api": free_port(), "engine": free_port(), "scheduler": free_port()}
    metrics_ports = {"api": free_port(), "engine": free_port(), "scheduler": free_port()}
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "KALCIFER_ADMIN_TOKEN",
            "KALCIFER_INTERNAL_TOKEN",
            "ENGINE_ADDR",
            "SCHEDULER_ADDR",
        }
    }
    env |= {
        "API_PORT": str(ports["api"]),
        "ENGINE_PORT": str(ports["engine"]),
        "SCHEDULER_PORT": str(ports["scheduler"]),
        "API_METRICS_PORT": str(metrics_ports["api"]),
        "ENGINE_METRICS_PORT": str(metrics_ports["engine"]),
        "SCHEDULER_METRICS_PORT": str(metrics_ports["scheduler"]),
    }
    log = data_dir / "dev.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [KALCIFER, "dev", "--data-dir", str(data_dir / ".kalcifer")], env=env, stdout=sink, stderr=sink, text=True
        )
    run = DevRun(process, ports, metrics_ports, data_dir, log)
    try:
        for service in ports:
            wait_serving(run.address(service), timeout=120, process=process)  # type: ignore[arg-type]
        yield run
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def test_all_three_services_serve_on_embedded_servers(dev_run: DevRun) -> None:
    for service in ("api", "engine", "scheduler"):
        assert health_status(dev_run.address(service)) == SERVING, service
    listed = grpcurl(dev_run.address("api"), "list")
    assert "kalcifer.v1.FlowService" in listed.stdout.split(), listed.stderr
    assert (dev_run.data_dir / ".kalcifer").is_dir()


def test_it_prints_a_ready_dev_tenant_and_key(dev_run: DevRun) -> None:
    output = eventually_sync(
        dev_run.output, until=lambda printed: "kal_" in printed, within=30, what="the dev tenant's key printed"
    )
    assert "kal_" in output, output
    assert "grpcurl" in output


def test_each_service_serves_its_metrics_where_the_banner_says(dev_run: DevRun) -> None:
    output = eventually_sync(
        dev_run.output, until=lambda printed: "kal_" in printed, within=30, what="the banner printed"
    )
    for service, port in dev_run.metrics_ports.items():
        assert f"metrics http://localhost:{port}/metrics" in output, service
        assert "kalcifer_rpc_server_handled_total" in dev_run.metrics(service), service


def test_a_killed_service_is_restarted_and_serves_again(dev_run: DevRun) -> None:
    old = _pid_of(dev_run, "kalcifer-engine")
    os.kill(old, signal.SIGKILL)

    def engine() -> tuple[int, int | None]:
        """The engine's pid (AssertionError, polled on, while there is none) and its health."""
        return _pid_of(dev_run, "kalcifer-engine"), health_status(dev_run.address("engine"))

    new, _ = eventually_sync(
        engine,
        until=lambda seen: seen[0] != old and seen[1] == SERVING,
        within=60,
        interval=0.2,
        what="a new engine process SERVING",
    )
    assert new != old, "engine was not restarted"
    assert health_status(dev_run.address("engine")) == SERVING
    assert "kalcifer_engine_instances" in dev_run.metrics("engine")  # its /metrics port was free again


def test_ctrl_c_stops_everything(dev_run: DevRun) -> None:
    everything = _descendants(dev_run.process.pid)
    assert len(everything) >= 3
    dev_run.process.send_signal(signal.SIGINT)
    assert dev_run.process.wait(60) == 0
    left = eventually_sync(
        lambda: [pid for pid in everything if _alive(pid)],
        until=lambda alive: not alive,
        within=10,
        interval=0.2,
        what="every process of kalcifer dev gone after Ctrl-C",
    )
    assert not left, "processes left behind after Ctrl-C"
    # Embedded servers may daemonize (leaving the process tree): find them by their data directory instead.
    assert _processes_mentioning(str(dev_run.data_dir)) == [], "embedded servers left behind after Ctrl-C"


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if text in command and _alive(int(cmdline.parent.name)):
            found.append(command)
    return found
