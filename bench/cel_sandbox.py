"""What isolating CEL costs: one evaluation through the engine's `ExpressionSandbox` (worker processes, a socket
round trip, JSON both ways) against the raw baseline of the same compiled expression run in-process.

The expression and context are a typical event filter over a customer profile. Rounds alternate ours and the
baseline three times; medians are reported.
"""

from __future__ import annotations

import asyncio
import time

import cel
from kalcifer_common.sandbox import ExpressionSandbox, SandboxLimits

from bench.harness import BenchEnv, Comparison, median, percentile

EXPRESSION = "event.amount > 100 && customer.attributes.tier == 'gold' && 'vip' in customer.tags"
VARIABLES = {
    "customer": {"attributes": {"tier": "gold", "visits": list(range(50))}, "tags": ["vip", "newsletter"]},
    "event": {"amount": 120, "items": [{"sku": f"sku-{n}", "qty": n} for n in range(10)]},
    "accumulated": {"score": {"result": 42}},
}
SEQUENTIAL = 2_000
CONCURRENT = 4_000
IN_FLIGHT = 32
ROUNDS = 3


def _in_process_latencies() -> list[float]:
    program = cel.compile(EXPRESSION)
    latencies = []
    for _ in range(SEQUENTIAL):
        started = time.perf_counter()
        program.execute(dict(VARIABLES))
        latencies.append(time.perf_counter() - started)
    return latencies


async def _sandbox_latencies(sandbox: ExpressionSandbox) -> list[float]:
    latencies = []
    for _ in range(SEQUENTIAL):
        started = time.perf_counter()
        await sandbox.evaluate(EXPRESSION, VARIABLES)
        latencies.append(time.perf_counter() - started)
    return latencies


async def _sandbox_throughput(sandbox: ExpressionSandbox) -> float:
    remaining = CONCURRENT

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await sandbox.evaluate(EXPRESSION, VARIABLES)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return CONCURRENT / (time.perf_counter() - started)


def _in_process_throughput() -> float:
    program = cel.compile(EXPRESSION)
    started = time.perf_counter()
    for _ in range(CONCURRENT):
        program.execute(dict(VARIABLES))
    return CONCURRENT / (time.perf_counter() - started)


async def run(env: BenchEnv) -> list[Comparison]:
    """Latency (sequential) and throughput (32 in flight) of sandboxed CEL against in-process CEL."""
    sandbox = ExpressionSandbox(SandboxLimits())
    try:
        await asyncio.gather(*(sandbox.evaluate("1", {}) for _ in range(sandbox.limits.workers)))  # warm workers
        ours_p50, ours_p99, raw_p50, raw_p99, ours_rate, raw_rate = [], [], [], [], [], []
        for _ in range(ROUNDS):
            latencies = await _sandbox_latencies(sandbox)
            ours_p50.append(median(latencies) * 1e6)
            ours_p99.append(percentile(latencies, 99) * 1e6)
            raw = _in_process_latencies()
            raw_p50.append(median(raw) * 1e6)
            raw_p99.append(percentile(raw, 99) * 1e6)
            ours_rate.append(await _sandbox_throughput(sandbox))
            raw_rate.append(_in_process_throughput())
    finally:
        await sandbox.close()
    baseline = "in-process cel, same expression"
    return [
        Comparison("cel sandbox: evaluation p50", "us", median(ours_p50), median(raw_p50), baseline, False),
        Comparison("cel sandbox: evaluation p99", "us", median(ours_p99), median(raw_p99), baseline, False),
        Comparison(
            f"cel sandbox: evaluations/s ({IN_FLIGHT} in flight)", "1/s", median(ours_rate), median(raw_rate), baseline
        ),
    ]
