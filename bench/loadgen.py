"""The load generator's two shapes, and the separate process it runs in.

Closed loop (throughput): `concurrency` callers, each sending its next call when its last one is answered.
Open loop (latency at an offered rate): call i is due at `start + i / rate` whatever happened to the earlier ones,
and its latency is measured from that due time, not from when the client got round to sending it: a client that
falls behind (or a server that stalls it) shows up as latency instead of silently lowering the offered rate
("coordinated omission"). How far sends lagged behind their due times is reported too, to tell the two apart.

`LoadProcess` runs these in a process of their own (multiprocessing spawn: a fresh interpreter that shares no
event loop, GIL or connection with the benchmark that drives it), so the clients' CPU is not the orchestrator's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True)
class ClosedLoopResult:
    """Calls answered per second with `concurrency` in flight; per-call latencies (ms) of the answered calls."""

    calls: int
    elapsed_s: float
    latencies_ms: list[float]
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Answered calls per second (errors excluded)."""
        return len(self.latencies_ms) / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class OpenLoopResult:
    """Latencies (ms, from each call's due time) of the calls answered as expected, and how the rest went."""

    offered_per_s: float
    sent: int
    elapsed_s: float
    latencies_ms: list[float]
    # calls answered but not as expected (e.g. an event that resumed nothing), by what was seen
    unexpected: dict[str, int] = field(default_factory=dict)
    # calls that failed, by status code or exception type
    errors: dict[str, int] = field(default_factory=dict)
    send_lag_p99_ms: float = 0.0

    @property
    def error_count(self) -> int:
        """Failed calls plus calls answered otherwise than expected."""
        return sum(self.errors.values()) + sum(self.unexpected.values())


def error_name(error: BaseException) -> str:
    """A short name for a failure: a gRPC status code name when it has one, else the exception's type."""
    code = getattr(error, "code", None)
    if callable(code):
        try:
            return str(getattr(code(), "name", code()))
        except Exception:  # noqa: BLE001 - a name for the report, whatever the object
            return type(error).__name__
    status = getattr(error, "status", None)
    return str(getattr(status, "name", type(error).__name__))


async def closed_loop(calls: int, concurrency: int, call: Callable[[int], Awaitable[object]]) -> ClosedLoopResult:
    """Make calls 0..calls-1 with `concurrency` in flight; failures are counted, not raised."""
    next_index = 0
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async def caller() -> None:
        nonlocal next_index
        while next_index < calls:
            index = next_index
            next_index += 1
            began = time.perf_counter()
            try:
                await call(index)
            except Exception as error:  # noqa: BLE001 - the load goes on; the failure is counted by its name
                errors[error_name(error)] += 1
                continue
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return ClosedLoopResult(calls, time.perf_counter() - began, latencies, dict(errors))


async def open_loop(
    count: int, rate: float, call: Callable[[int], Awaitable[str | None]], *, lead_s: float = 0.5
) -> OpenLoopResult:
    """Make call i at `start + i / rate` (start = now + lead_s); `call` returns None when answered as expected,
    else a word for what it saw. Latency = answer time - due time."""
    loop = asyncio.get_running_loop()
    start = loop.time() + lead_s
    latencies: list[float] = []
    lags: list[float] = []
    unexpected: Counter[str] = Counter()
    errors: Counter[str] = Counter()

    async def one(index: int, due: float) -> None:
        lags.append((loop.time() - due) * 1000)
        try:
            seen = await call(index)
        except Exception as error:  # noqa: BLE001 - the load goes on; the failure is counted by its name
            errors[error_name(error)] += 1
            return
        if seen is None:
            latencies.append((loop.time() - due) * 1000)
        else:
            unexpected[seen] += 1

    tasks: list[asyncio.Task[None]] = []
    for index in range(count):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    await asyncio.gather(*tasks)
    lags.sort()
    lag_p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else 0.0
    return OpenLoopResult(
        offered_per_s=rate,
        sent=count,
        elapsed_s=loop.time() - start,
        latencies_ms=latencies,
        unexpected=dict(unexpected),
        errors=dict(errors),
        send_lag_p99_ms=round(lag_p99, 2),
    )


class LoadProcess:
    """One spawned process that runs load functions (module-level, picklable arguments and results) on request."""

    def __init__(self) -> None:
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))

    async def run(self, function: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """`function(*args)` in the load process; awaits its result without blocking this event loop."""
        if kwargs:
            raise TypeError("load functions take positional arguments only")
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def close(self) -> None:
        """Stop the process (waits for a running function to end)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
