"""`ExpressionSandbox`: a few worker processes that evaluate CEL and render templates for one process, on a short leash.

Why processes: the CEL runtime is native code that holds the GIL while it runs, so a thread can neither interrupt
it nor survive its crash. A worker is killed when an evaluation overruns `timeout_seconds`; it dies by itself
when it exceeds `memory_mb` (its own address-space limit) or when the native code crashes. Either way the caller
gets `ExpressionRunaway`, and the next evaluation starts a fresh worker. Workers start on first use, so an engine
whose flows use no CEL runs none.

Workers talk over a socket pair with the event loop's own socket calls (no transports, nothing to leak), and are
killed with the engine: by `close()`, by an exit handler, and by the kernel (`PR_SET_PDEATHSIG`) on a SIGKILL.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from kalcifer_common.logging import get_logger
from kalcifer_common.sandbox.errors import ExpressionFailed, ExpressionRunaway, SandboxUnavailable
from kalcifer_common.sandbox.protocol import CEL, HEADER, JINJA, JINJA_CHECK, MAX_FRAME_BYTES, READY, frame

_log = get_logger(__name__)

# Exit status a worker uses when Python itself ran out of memory (native code aborts with SIGABRT instead).
_OUT_OF_MEMORY_EXIT = 3


@dataclass(frozen=True)
class SandboxLimits:
    """How many workers, and how much each evaluation may take."""

    workers: int = 2
    timeout_seconds: float = 0.25
    memory_mb: int = 256
    start_timeout_seconds: float = 10.0


class _Worker:
    """One worker process and the engine's end of its socket."""

    def __init__(self, process: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.process = process
        self.sock = sock

    async def exchange(self, payload: bytes) -> bytes:
        """Send one frame, return the answer frame's body; EOF (the worker died) is `ConnectionError`."""
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self.sock, frame(payload))
        return await self.read_frame()

    async def read_frame(self) -> bytes:
        header = await self._read_exactly(HEADER.size)
        return await self._read_exactly(HEADER.unpack(header)[0])

    async def _read_exactly(self, size: int) -> bytes:
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        while len(buffer) < size:
            chunk = await loop.sock_recv(self.sock, size - len(buffer))
            if not chunk:
                raise ConnectionError("the worker closed its socket")
            buffer += chunk
        return bytes(buffer)

    def kill(self) -> None:
        """Kill the process and close the socket (idempotent); reaping is `reap`'s."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self.sock.close()

    def reap(self, timeout: float) -> int | None:
        """Wait for the (killed or dying) process; its return code, or None if it is still there."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


# Every worker of every sandbox in this process, until reaped: killed at exit even if nobody called close().
_LIVE: set[_Worker] = set()


@atexit.register
def _kill_all() -> None:
    for worker in list(_LIVE):
        worker.kill()
        worker.reap(1.0)
    _LIVE.clear()


def _start_process(memory_mb: int) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """A worker process and the engine's end of its socket (blocking: run it in a thread)."""
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kalcifer_common.sandbox.worker",
                str(theirs.fileno()),
                str(memory_mb),
                str(os.getpid()),
            ],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            # A native abort (out of memory) would otherwise symbolize a backtrace for seconds before dying.
            env={**os.environ, "RUST_BACKTRACE": "0"},
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return process, ours


def _discard_started(starting: asyncio.Future[tuple[subprocess.Popen[bytes], socket.socket]]) -> None:
    if starting.cancelled() or starting.exception() is not None:
        return
    process, ours = starting.result()
    worker = _Worker(process, ours)
    worker.kill()
    worker.reap(1.0)


class ExpressionSandbox:
    """Evaluates CEL in worker processes; `evaluate` is safe to call from any number of tasks at once."""

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._live = 0
        self._freed = asyncio.Condition()
        self._closed = False
        self._reaping: set[asyncio.Task[None]] = set()
        self.runaways = 0

    async def evaluate(self, expression: str, variables: Mapping[str, Any]) -> Any:
        """The JSON value of `expression` over `variables`.

        Raises `ExpressionFailed` (no value for this data), `ExpressionRunaway` (stopped: time, memory or a crash)
        or `SandboxUnavailable` (no worker would start, or the sandbox is closing).
        """
        return await self._run(CEL, expression, variables)

    async def render(self, templates: Any, variables: Mapping[str, Any]) -> Any:
        """The JSON value `templates` with every templated string rendered over `variables` (Jinja2, sandboxed,
        strict undefined: `templating.render_here`), under the same budget and with the same errors as `evaluate`."""
        return await self._run(JINJA, templates, variables)

    async def check_templates(self, templates: Mapping[str, str]) -> dict[str, str]:
        """For each named Jinja2 template that does not compile, why (`templating.syntax_problems_here`); {} when
        all compile. Hostile templates are compiled in a worker too: a parser driven into deep recursion or
        huge output costs that worker, never this process."""
        problems = await self._run(JINJA_CHECK, dict(templates), {})
        return {str(name): str(problem) for name, problem in dict(problems).items()}

    async def _run(self, kind: str, source: Any, variables: Mapping[str, Any]) -> Any:
        payload = orjson.dumps([kind, source, dict(variables)], default=str)
        if len(payload) > MAX_FRAME_BYTES:
            raise ExpressionFailed(f"the variables are {len(payload)} bytes as JSON; at most {MAX_FRAME_BYTES}")
        worker = await self._acquire()
        self._busy.add(worker)
        try:
            answer = await asyncio.wait_for(worker.exchange(payload), self.limits.timeout_seconds)
        except (TimeoutError, OSError) as error:
            why = await self._retire(worker, timed_out=isinstance(error, TimeoutError))
            if self._closed:
                raise SandboxUnavailable("the expression sandbox is shutting down") from error
            self.runaways += 1
            _log.warning("expression stopped", reason=why, kind=kind, source=str(source)[:200])
            raise ExpressionRunaway(why) from error
        except BaseException:
            # Cancelled mid-exchange: the worker may still answer this frame later, so it cannot serve another.
            await self._retire(worker, timed_out=False)
            raise
        finally:
            self._busy.discard(worker)
        await self._release(worker)
        ok, value = orjson.loads(answer)
        if ok:
            return value
        raise ExpressionFailed(str(value))

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the idle workers."""
        return [worker.process.pid for worker in self._idle]

    @property
    def busy_pids(self) -> list[int]:
        """Process ids of the workers evaluating right now."""
        return [worker.process.pid for worker in self._busy]

    async def close(self) -> None:
        """Stop every worker; evaluations after this (or caught by it) are `SandboxUnavailable`."""
        self._closed = True
        for worker in self._idle:
            worker.kill()
            await asyncio.to_thread(worker.reap, 1.0)
            _LIVE.discard(worker)
        self._idle.clear()
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)

    async def _acquire(self) -> _Worker:
        async with self._freed:
            while True:
                if self._closed:
                    raise SandboxUnavailable("the expression sandbox is shutting down")
                if self._idle:
                    return self._idle.pop()
                if self._live < self.limits.workers:
                    self._live += 1
                    break
                await self._freed.wait()
        try:
            return await self._spawn()
        except BaseException:
            async with self._freed:
                self._live -= 1
                self._freed.notify()
            raise

    async def _release(self, worker: _Worker) -> None:
        async with self._freed:
            if self._closed:
                worker.kill()
                _LIVE.discard(worker)
                self._live -= 1
            else:
                self._idle.append(worker)
            self._freed.notify()

    async def _retire(self, worker: _Worker, *, timed_out: bool) -> str:
        """Kill `worker`, free its slot, and say why it stopped."""
        worker.kill()
        async with self._freed:
            self._live -= 1
            self._freed.notify()
        if timed_out:
            self._reap_later(worker)
            return f"ran longer than its budget of {self.limits.timeout_seconds * 1000:g} ms"
        returncode = await asyncio.to_thread(worker.reap, 1.0)
        _LIVE.discard(worker)
        return self._death(returncode)

    def _death(self, returncode: int | None) -> str:
        memory = f"its {self.limits.memory_mb} MB of memory"
        if returncode == _OUT_OF_MEMORY_EXIT:
            return f"ran out of {memory}"
        if returncode is not None and returncode < 0:
            name = signal.Signals(-returncode).name
            if -returncode == signal.SIGABRT:
                return f"aborted its evaluator ({name}; most often by running out of {memory})"
            return f"crashed its evaluator ({name})"
        return f"stopped its evaluator (exit status {returncode})"

    def _reap_later(self, worker: _Worker) -> None:
        async def reap() -> None:
            await asyncio.to_thread(worker.reap, 5.0)
            _LIVE.discard(worker)

        task = asyncio.get_running_loop().create_task(reap())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _spawn(self) -> _Worker:
        # Off the event loop (forking a large process takes milliseconds), and shielded: a caller cancelled
        # mid-fork must not orphan the process, so the finished start is then discarded instead.
        starting = asyncio.ensure_future(asyncio.to_thread(_start_process, self.limits.memory_mb))
        try:
            process, ours = await asyncio.shield(starting)
        except OSError as error:
            raise SandboxUnavailable(f"cannot start an expression worker: {error}") from error
        except BaseException:
            starting.add_done_callback(_discard_started)
            raise
        ours.setblocking(False)
        worker = _Worker(process, ours)
        _LIVE.add(worker)
        try:
            greeting = await asyncio.wait_for(worker.read_frame(), self.limits.start_timeout_seconds)
        except (TimeoutError, OSError) as error:
            worker.kill()
            self._reap_later(worker)
            raise SandboxUnavailable("an expression worker did not start in time") from error
        except BaseException:
            worker.kill()
            self._reap_later(worker)
            raise
        if greeting != READY:
            worker.kill()
            self._reap_later(worker)
            raise SandboxUnavailable(f"an expression worker said {greeting[:40]!r} instead of ready")
        return worker
