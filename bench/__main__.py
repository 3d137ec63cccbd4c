"""`make bench`: run every benchmark (or those named), each next to a raw baseline measured in the same run.

Each benchmark gets a scratch database and Redis db of its own (one's leftovers never slow the next) on the
servers of TEST_DATABASE_URL/TEST_REDIS_URL when set, else on embedded ones. Afterwards: one table of every
comparison, the targets of issue #11 pass/fail, `bench/results/<name>.json` per benchmark, and the run's
`bench/results/latest.json` and `bench/results/latency.png`.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import BenchEnv, Comparison, RunReport, table, write_results
from bench.machine import describe_machine, describe_servers, load_average
from bench.plot import write_latency_plot
from bench.report import assemble, targets_table, write_latest
from tests.support.databases import scratch_database, scratch_redis_db, server_urls

# Module names under bench/, each with `async def run(env: BenchEnv) -> list[Comparison]`. `temporal` compares
# with the figures `public_api` measured earlier in the same run.
BENCHMARKS: list[str] = [
    "public_api",
    "temporal",
    "engine_hot_paths",
    "scheduler_lateness",
    "cel_sandbox",
    "rate_limit_fairness",
    "analytics_summary",
]


def _run_one(name: str, server: tuple[str, str], work: Path, report: RunReport) -> list[Comparison]:
    began = time.monotonic()
    pg, redis = server
    with scratch_database(pg, prefix="kalcifer_bench") as database_url, scratch_redis_db(redis) as redis_url:
        env = BenchEnv(database_url, redis_url, work / name, report)
        env.work_dir.mkdir(parents=True, exist_ok=True)
        module = importlib.import_module(f"bench.{name}")
        results: list[Comparison] = asyncio.run(module.run(env))
    print(f"{name}: {time.monotonic() - began:.0f} s, written to {write_results(name, results)}", flush=True)
    return results


def main() -> None:
    """Run the benchmarks, print the table and the targets, write the results and the plot."""
    names = sys.argv[1:] or BENCHMARKS
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    names = [name for name in BENCHMARKS if name in names]  # `temporal` always after `public_api`
    started, began = datetime.now(UTC), time.monotonic()
    run: dict[str, Any] = {"started": started.isoformat(timespec="seconds"), "benchmarks": names}
    run["machine"] = describe_machine()
    report = RunReport()
    rows: list[Comparison] = []
    with server_urls() as server, tempfile.TemporaryDirectory() as work:
        run["servers"] = asyncio.run(describe_servers(*server))
        for name in names:
            rows += _run_one(name, server, Path(work), report)
    run["duration_s"] = round(time.monotonic() - began)
    run["machine"]["load_average_at_end"] = load_average()
    payload = assemble(report, rows, run)
    print(table(rows))
    print()
    print(targets_table(payload["targets"]))
    print()
    print(f"results: {write_latest(payload)}")
    plot = write_latency_plot(report.latencies_ms, f"make bench {started:%Y-%m-%d %H:%M} UTC, {run['machine']['cpu']}")
    if plot is not None:
        print(f"latency plot: {plot}")


if __name__ == "__main__":
    main()
