"""A small process supervisor: keeps named child processes running, restarts the ones that die, stops them all.

Single-threaded on purpose: `poll()` does one pass (reap, log, restart when due) and `run()` loops over it until a
signal arrives, so tests drive it step by step without threads or sleeps they cannot bound.

Each child runs in its own session (process group), so Ctrl-C in the terminal reaches only the supervisor, which
then stops the children in order; signals go to the whole group, so a child's own subprocesses go with it. On
Linux a child also gets SIGTERM when the supervisor dies without cleaning up (e.g. SIGKILL), so nothing outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Self

from kalcifer_common.logging import get_logger

log = get_logger(__name__)

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


@dataclass(frozen=True)
class ChildSpec:
    """How to run one supervised child process."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None  # None: the supervisor's environment
    cwd: Path | None = None
    log_path: Path | None = None  # stdout and stderr appended here; None: the supervisor's own


@dataclass
class _Child:
    spec: ChildSpec
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: float = 0.0  # the delay used for the last restart; 0 until the first death
    restarts: int = 0
    exits: list[int] = field(default_factory=list)


class Supervisor:
    """Runs `ChildSpec`s, restarts one that exits with exponential backoff, and stops them all on request.

    A child that exits (whatever its exit code) is restarted after `initial_backoff` seconds, doubling on each
    further quick death up to `max_backoff`; a child that ran for `healthy_after` seconds before dying starts over
    at `initial_backoff`. `stop()` sends SIGTERM to every child's process group, waits up to `grace_seconds` for
    all of them, then SIGKILLs what is left.
    """

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        initial_backoff: float = 0.5,
        max_backoff: float = 10.0,
        healthy_after: float = 30.0,
        grace_seconds: float = 10.0,
        poll_interval: float = 0.1,
        die_with_supervisor: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` drives uptime and backoff bookkeeping only (tests pass a fake one); waits use real time."""
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self._children = {spec.name: _Child(spec) for spec in specs}
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._healthy_after = healthy_after
        self._grace_seconds = grace_seconds
        self._poll_interval = poll_interval
        self._clock = clock
        self._stop_requested = threading.Event()
        self._kill_requested = threading.Event()
        self._stopping = False
        # resolved here, not in the forked child, where loading a library could deadlock
        self._prctl = _linux_prctl() if die_with_supervisor else None
        self._supervisor_pid = os.getpid()

    # -- queries --------------------------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The children's names, in start order."""
        return list(self._children)

    def pid(self, name: str) -> int | None:
        """The pid of the running child `name`, or None while it is down."""
        process = self._children[name].process
        return process.pid if process is not None and process.poll() is None else None

    def pids(self) -> dict[str, int | None]:
        """The pid of every child (None while it is down)."""
        return {name: self.pid(name) for name in self._children}

    def restart_count(self, name: str) -> int:
        """How many times `name` has been restarted."""
        return self._children[name].restarts

    def exit_codes(self, name: str) -> list[int]:
        """The exit codes of `name`'s unexpected deaths so far (negative: killed by that signal)."""
        return list(self._children[name].exits)

    def next_restart_in(self, name: str) -> float | None:
        """Seconds until `name` is restarted (0 when due), or None when no restart is scheduled."""
        restart_at = self._children[name].restart_at
        return None if restart_at is None else max(0.0, restart_at - self._clock())

    @property
    def stop_requested(self) -> bool:
        """Whether a stop signal (or request_stop) has arrived."""
        return self._stop_requested.is_set()

    # -- life cycle -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every child that is not running."""
        self._stopping = False
        for child in self._children.values():
            if child.process is None or child.process.poll() is not None:
                self._spawn(child)

    def poll(self) -> None:
        """One pass: log and schedule the restart of children that died, restart those whose backoff is over."""
        if self._stopping:
            return
        now = self._clock()
        for child in self._children.values():
            process = child.process
            if process is not None and process.poll() is not None:
                self._on_exit(child, process, now)
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                child.restart_at = None
                child.restarts += 1
                self._spawn(child)
                log.info(
                    "child restarted", child=child.spec.name, pid=self.pid(child.spec.name), restarts=child.restarts
                )

    def run(
        self,
        *,
        timeout: float | None = None,
        handle_signals: bool = True,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        """Supervise until SIGINT/SIGTERM/SIGHUP (or request_stop, or `timeout` seconds), then stop every child.

        Signal handlers are installed only in the main thread and restored on return. A second signal during the
        graceful stop kills the children at once. `on_started` runs once the children are started, under the
        handlers already, so a Ctrl-C while it runs (printing a banner, say) is an ordinary stop.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        previous = self._install_signal_handlers() if handle_signals else {}
        try:
            self.start()
            if on_started is not None:
                on_started()
            while not self._stop_requested.is_set() and (deadline is None or time.monotonic() < deadline):
                self.poll()
                self._stop_requested.wait(self._poll_interval)
        finally:
            try:
                self.stop()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def request_stop(self) -> None:
        """Ask run() to return; asked twice, stop() stops waiting for the grace period. Safe from any thread."""
        if self._stop_requested.is_set():
            self._kill_requested.set()
        self._stop_requested.set()

    def stop(self) -> None:
        """SIGTERM every child's process group, wait up to the grace period, SIGKILL the rest, reap them all."""
        self._stopping = True
        running = [c for c in self._children.values() if c.process is not None and c.process.poll() is None]
        if running:
            log.info("stopping children", children=[c.spec.name for c in running], grace_seconds=self._grace_seconds)
        # reverse start order: dependants (started last) go first
        for child in reversed(running):
            assert child.process is not None
            _signal_group(child.process, signal.SIGTERM)
        # real time, not self._clock: the grace period is about real processes, and must end even under a fake clock
        deadline = time.monotonic() + self._grace_seconds
        while time.monotonic() < deadline and not self._kill_requested.is_set():
            if all(c.process is None or c.process.poll() is not None for c in running):
                break
            time.sleep(0.05)
        for child in running:
            assert child.process is not None
            if child.process.poll() is None:
                log.warning("child did not stop in time; killing it", child=child.spec.name, pid=child.process.pid)
            # SIGKILL the group even when the child itself exited: its own subprocesses may linger
            _signal_group(child.process, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=5.0)
        for child in self._children.values():
            child.restart_at = None
            if child.process is not None and child.process.poll() is not None:
                log.info("child stopped", child=child.spec.name, exit_code=child.process.returncode)
                child.process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------------------------------

    def _on_exit(self, child: _Child, process: subprocess.Popen[bytes], now: float) -> None:
        uptime = now - child.started_at
        code = process.returncode
        child.exits.append(code)
        child.process = None
        # the child is gone, but its process group may hold its own subprocesses (and their ports)
        _signal_group(process, signal.SIGKILL)
        if uptime >= self._healthy_after or child.backoff == 0:
            child.backoff = self._initial_backoff
        else:
            child.backoff = min(child.backoff * 2, self._max_backoff)
        child.restart_at = now + child.backoff
        log.warning(
            "child exited; restarting after backoff",
            child=child.spec.name,
            pid=process.pid,
            exit=_describe_exit(code),
            uptime_seconds=round(uptime, 1),
            backoff_seconds=child.backoff,
        )

    def _spawn(self, child: _Child) -> None:
        spec = child.spec
        output: IO[bytes] | None = spec.log_path.open("ab") if spec.log_path is not None else None
        try:
            child.process = subprocess.Popen(
                list(spec.argv),
                env=dict(spec.env) if spec.env is not None else None,
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                start_new_session=True,
                preexec_fn=self._die_with_supervisor if self._prctl is not None else None,
            )
        except OSError as error:
            # a missing executable is a death like any other: retried with backoff, visible in the log
            log.error("child failed to start", child=spec.name, argv=list(spec.argv), error=str(error))
            child.process = None
            child.backoff = min(max(child.backoff * 2, self._initial_backoff), self._max_backoff)
            child.restart_at = self._clock() + child.backoff
            return
        finally:
            if output is not None:
                output.close()  # the child has its own descriptor
        child.started_at = self._clock()
        log.info("child started", child=spec.name, pid=child.process.pid)

    def _die_with_supervisor(self) -> None:
        # Runs in the forked child before exec. PR_SET_PDEATHSIG fires when the thread that forked dies, so the
        # supervisor must spawn from a thread that lives as long as it does (the main thread in `kalcifer dev`).
        assert self._prctl is not None
        self._prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != self._supervisor_pid:  # the supervisor died between fork and prctl
            os._exit(1)

    def _install_signal_handlers(self) -> dict[signal.Signals, _Handler]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("stop signal received", signal=signal.Signals(signum).name)
            self.request_stop()

        return {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # the child leads its own group (start_new_session), so its pid is the group id
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _linux_prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    library = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(library, use_errno=True)
    except OSError:
        return None
    prctl: Callable[[int, int], int] = libc.prctl
    return prctl
