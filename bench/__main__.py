"""`make bench`: run every benchmark (or those named), each next to a raw baseline measured in the same run."""

from __future__ import annotations

import asyncio
import importlib
import sys
import tempfile
from pathlib import Path

from bench.harness import BenchEnv, Comparison, table, write_results
from tests.support.databases import scratch_database, scratch_redis_db, server_urls

# Module names under bench/, each with `async def run(env: BenchEnv) -> list[Comparison]`.
BENCHMARKS: list[str] = [
    "engine_hot_paths",
    "scheduler_lateness",
    "cel_sandbox",
    "rate_limit_fairness",
    "analytics_summary",
]


async def _run(names: list[str], env: BenchEnv) -> list[Comparison]:
    rows: list[Comparison] = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        results: list[Comparison] = await module.run(env)
        print(f"{name}: written to {write_results(name, results)}", flush=True)
        rows += results
    return rows


def main() -> None:
    """Run the benchmarks on scratch servers (TEST_DATABASE_URL/TEST_REDIS_URL if set, else embedded)."""
    names = sys.argv[1:] or BENCHMARKS
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if not names:
        raise SystemExit("no benchmarks registered")
    with (
        server_urls() as (pg, redis),
        scratch_database(pg) as database_url,
        scratch_redis_db(redis) as redis_url,
        tempfile.TemporaryDirectory() as work,
    ):
        rows = asyncio.run(_run(names, BenchEnv(database_url, redis_url, Path(work))))
    print(table(rows))


if __name__ == "__main__":
    main()
