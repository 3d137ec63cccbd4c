"""The embedded PostgreSQL/Redis servers, the process supervisor and `kalcifer dev`, as real processes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio
from kalcifer_cli.embedded import EmbeddedPostgres, EmbeddedRedis, process_alive
from kalcifer_cli.supervisor import ChildSpec, Supervisor

from tests.support.eventually import eventually_sync
from tests.support.processes import free_port
from tests.support.server_dirs import server_dir

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A directory for the test's servers, outside pytest's private root (`tests.support.server_dirs`)."""
    with server_dir("embedded") as path:
        yield path


def live_processes_mentioning(*needles: str) -> list[str]:
    """`ps` lines (zombies excluded: they hold nothing) whose command contains every needle."""
    listing = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True, text=True, timeout=10, check=True
    )
    return [
        line
        for line in listing.stdout.splitlines()
        if all(needle in line for needle in needles) and not line.split(maxsplit=2)[1].startswith("Z")
    ]


def ps_state(pid: int) -> str:
    """The state letter `ps` shows for `pid`, "" when it lists no such process."""
    result = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, timeout=10, check=False
    )
    return result.stdout.strip()[:1]


def run_script(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a fresh interpreter (a separate "run" of Kalcifer)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=timeout, check=False
    )


# ---------------------------------------------------------------------------------------------------------------
# embedded servers


async def test_embedded_servers_serve_real_clients_and_leave_no_process(data_root: Path) -> None:
    postgres = EmbeddedPostgres(data_root / "postgres")
    redis_server = EmbeddedRedis(data_root / "redis")
    with postgres, redis_server:
        assert postgres.url.startswith("postgresql://postgres@127.0.0.1:")
        assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
        connection = await asyncpg.connect(postgres.url, timeout=10)
        try:
            assert await connection.fetchval("SELECT 1") == 1
            assert await connection.fetchval("SELECT current_database()") == "kalcifer"
        finally:
            await connection.close()
        client = redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=5)
        try:
            assert await client.ping()
            await client.set("kalcifer:test", "value")
            assert await client.get("kalcifer:test") == b"value"
        finally:
            await client.aclose()
        postgres_pid, redis_pid, redis_port = postgres.pid, redis_server.pid, redis_server.port
        assert live_processes_mentioning("postgres", str(data_root))

    assert not process_alive(postgres_pid)
    assert not process_alive(redis_pid)
    assert live_processes_mentioning("postgres", str(data_root)) == []
    assert live_processes_mentioning("redis-server", f"127.0.0.1:{redis_port}") == []


async def test_embedded_postgres_reuses_its_data_dir_and_port(data_root: Path) -> None:
    with EmbeddedPostgres(data_root / "postgres") as postgres:
        first_url = postgres.url
        connection = await asyncpg.connect(postgres.url, timeout=10)
        await connection.execute("CREATE TABLE kept (value int); INSERT INTO kept VALUES (42)")
        await connection.close()
    with EmbeddedPostgres(data_root / "postgres") as postgres:
        assert postgres.url == first_url
        connection = await asyncpg.connect(postgres.url, timeout=10)
        assert await connection.fetchval("SELECT value FROM kept") == 42
        await connection.close()


def test_servers_of_a_killed_run_are_adopted_then_stopped(data_root: Path) -> None:
    killed_run = run_script(f"""
        import json, os, signal
        from pathlib import Path
        from kalcifer_cli.embedded import EmbeddedPostgres, EmbeddedRedis
        pg = EmbeddedPostgres(Path({str(data_root)!r}) / "postgres"); pg.start()
        rd = EmbeddedRedis(Path({str(data_root)!r}) / "redis"); rd.start()
        print(json.dumps([pg.pid, rd.pid]), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    # adopting is also how this test cleans up, so it happens even when the run did not go as expected
    with EmbeddedPostgres(data_root / "postgres") as postgres, EmbeddedRedis(data_root / "redis") as redis_server:
        assert killed_run.returncode == -signal.SIGKILL, killed_run.stderr
        postgres_pid, redis_pid = json.loads(killed_run.stdout.splitlines()[-1])
        assert (postgres.pid, redis_server.pid) == (postgres_pid, redis_pid)

    eventually_sync(
        lambda: not process_alive(postgres_pid) and not process_alive(redis_pid),
        within=10,
        what="adopted servers stopping",
    )
    assert live_processes_mentioning("postgres", str(data_root)) == []


async def test_stale_postmaster_pid_of_a_killed_server_is_handled(data_root: Path) -> None:
    killed_run = run_script(f"""
        import json, os, signal
        from pathlib import Path
        from kalcifer_cli.embedded import EmbeddedPostgres
        pg = EmbeddedPostgres(Path({str(data_root)!r}) / "postgres"); pg.start()
        print(json.dumps(pg.pid), flush=True)
        os.kill(pg.pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert (data_root / "postgres" / "pgdata" / "postmaster.pid").exists(), killed_run.stderr
    dead_pid = json.loads(killed_run.stdout.splitlines()[-1])
    # SIGKILL is delivered asynchronously: on a busy machine the postmaster can outlive the script that killed it
    # by a moment, and a start in that moment would rightly adopt it. The case under test is a server that is gone.
    eventually_sync(lambda: not process_alive(dead_pid), within=10, what="the killed postmaster going")
    with EmbeddedPostgres(data_root / "postgres") as postgres:
        assert postgres.pid != dead_pid
        connection = await asyncpg.connect(postgres.url, timeout=10)
        assert await connection.fetchval("SELECT 1") == 1
        await connection.close()


# ---------------------------------------------------------------------------------------------------------------
# supervisor


def test_supervisor_restarts_a_killed_child_and_stops_it() -> None:
    supervisor = Supervisor([ChildSpec("sleeper", SLEEPER)], initial_backoff=0.2)
    supervisor.start()
    try:
        first = supervisor.pid("sleeper")
        assert first is not None
        os.kill(first, signal.SIGKILL)

        def restarted() -> bool:
            supervisor.poll()
            pid = supervisor.pid("sleeper")
            return pid is not None and pid != first

        eventually_sync(restarted, within=5, what="the child restarting")
        assert supervisor.restart_count("sleeper") == 1
        assert supervisor.exit_codes("sleeper") == [-signal.SIGKILL]
        second = supervisor.pid("sleeper")
        assert second is not None
    finally:
        supervisor.stop()
    assert supervisor.pid("sleeper") is None
    assert not process_alive(second)
    assert ps_state(second) in ("", "Z")


def test_supervisor_backoff_doubles_and_resets_after_a_healthy_run() -> None:
    now = [0.0]
    crasher = ChildSpec("crasher", [sys.executable, "-c", "raise SystemExit(3)"])
    supervisor = Supervisor([crasher], initial_backoff=0.5, max_backoff=2.0, healthy_after=30.0, clock=lambda: now[0])

    def died() -> bool:
        supervisor.poll()
        return supervisor.next_restart_in("crasher") is not None

    delays = []
    supervisor.start()
    try:
        for run in range(5):
            if run == 4:
                now[0] += 35.0  # this run counts as healthy: it "lasted" longer than healthy_after
            eventually_sync(died, within=10, what="the child exiting")
            delay = supervisor.next_restart_in("crasher")
            assert delay is not None
            delays.append(delay)
            now[0] += delay - 0.01
            supervisor.poll()
            assert supervisor.pid("crasher") is None, "restarted before its backoff was over"
            now[0] += 0.01
            supervisor.poll()
            assert supervisor.next_restart_in("crasher") is None
            assert supervisor.restart_count("crasher") == run + 1
    finally:
        supervisor.stop()
    assert supervisor.exit_codes("crasher")[:5] == [3] * 5
    # 0.5 s first, doubling up to the cap; a crash after a healthy run starts over at 0.5 s
    assert delays == pytest.approx([0.5, 1.0, 2.0, 2.0, 0.5])


def test_supervisor_kills_children_that_ignore_sigterm_and_their_subprocesses(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(grandchild.pid, flush=True)
        time.sleep(60)
    """)
    log_path = tmp_path / "stubborn.log"
    supervisor = Supervisor(
        [ChildSpec("stubborn", [sys.executable, "-c", script], log_path=log_path)], grace_seconds=0.5
    )
    supervisor.start()
    try:
        logged = eventually_sync(
            lambda: log_path.read_text().strip() if log_path.exists() else "",
            until=str.isdigit,
            within=10,
            what="the grandchild's pid logged",
        )
        grandchild = int(logged)
        child = supervisor.pid("stubborn")
        assert child is not None
        started = time.monotonic()
    finally:
        supervisor.stop()
    assert time.monotonic() - started < 8
    assert not process_alive(child)
    eventually_sync(lambda: not process_alive(grandchild), within=5, what="the grandchild killed with its group")


def test_supervisor_run_stops_children_on_request() -> None:
    supervisor = Supervisor([ChildSpec("a", SLEEPER), ChildSpec("b", SLEEPER)], grace_seconds=2.0)
    supervisor.run(timeout=0.5, handle_signals=False)
    assert supervisor.pids() == {"a": None, "b": None}


# ---------------------------------------------------------------------------------------------------------------
# kalcifer dev, end to end


def _services_available() -> bool:
    try:
        return all(
            importlib.util.find_spec(name) is not None
            for name in ("kalcifer_common.db.migrate", "kalcifer.v1.tenant_pb2", "kalcifer_api.app")
        )
    except ModuleNotFoundError:
        return False


def _run_dev_until_ready(data_dir: Path, env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "kalcifer"),
                "dev",
                "--data-dir",
                str(data_dir),
                "--log-dir",
                str(data_dir / "logs"),
            ],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        if process.poll() is not None:  # not an AssertionError: that would be polled on, this fails at once
            raise RuntimeError(f"kalcifer dev exited early:\n{output.read_text(errors='replace')}")
        return "Kalcifer is running" in output.read_text(errors="replace")

    try:
        eventually_sync(ready, within=120, what="kalcifer dev ready")
    except BaseException:
        process.kill()
        process.wait(10)
        raise
    return process


def _stop_dev(process: subprocess.Popen[bytes], output: Path) -> None:
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise
    assert code == 0, output.read_text(errors="replace")


@pytest.mark.e2e
@pytest.mark.skipif(not _services_available(), reason="needs the services, migrations and generated protobuf code")
def test_kalcifer_dev_runs_everything_and_ctrl_c_stops_it(data_root: Path) -> None:
    data_dir = data_root / "kalcifer"
    ports = {"API_PORT": free_port(), "ENGINE_PORT": free_port(), "SCHEDULER_PORT": free_port()}
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KALCIFER_", "TEST_"))
        and key not in ("DATABASE_URL", "REDIS_URL", "ENGINE_ADDR", "SCHEDULER_ADDR")
    }
    env = inherited | {key: str(port) for key, port in ports.items()}
    output = data_root / "dev.out"

    process = _run_dev_until_ready(data_dir, env, output)
    try:
        banner = output.read_text()
        tenant = json.loads((data_dir / "dev-tenant.json").read_text())
        grpcurl = (
            f'grpcurl -plaintext -H "authorization: Bearer {tenant["raw_key"]}" localhost:{ports["API_PORT"]} list'
        )
        assert grpcurl in banner
        assert "KALCIFER_ADMIN_TOKEN=" in (data_dir / "dev.env").read_text()
        _stop_dev(process, output)

        # a second run reuses the tokens, the data and the tenant
        process = _run_dev_until_ready(data_dir, env, output)
        assert json.loads((data_dir / "dev-tenant.json").read_text())["tenant_id"] == tenant["tenant_id"]
        _stop_dev(process, output)
    finally:
        if process.poll() is None:  # a failed assertion: still stop it the way a user would
            _stop_dev(process, output)

    assert live_processes_mentioning("postgres", str(data_dir)) == []
    for server in ("postgres", "redis"):
        state = json.loads((data_dir / server / "state.json").read_text())
        assert not process_alive(state["pid"]), f"embedded {server} still runs"
    for port in ports.values():
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
