"""The same workloads on the real Temporal server (issue #11), compared with ours from the same run; see
benchmark.py. Kept free of imports: the worker's workflow sandbox re-imports this package."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.harness import BenchEnv, Comparison


async def run(env: BenchEnv) -> list[Comparison]:
    """See `bench.temporal.benchmark.run`."""
    from bench.temporal.benchmark import run as measure

    return await measure(env)
