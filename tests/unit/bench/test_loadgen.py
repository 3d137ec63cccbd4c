"""The load generator's open loop measures from each call's scheduled time, so a stall is not hidden."""

from __future__ import annotations

import asyncio
import time

from bench.loadgen import closed_loop, open_loop


async def test_open_loop_counts_a_stall_against_every_call_scheduled_during_it() -> None:
    async def call(index: int) -> str | None:
        if index == 0:
            time.sleep(0.2)  # noqa: ASYNC251 - the stall under test: calls 1-4 go out late
        return None

    result = await open_loop(5, 100.0, call, lead_s=0.0)

    # call i was due at i * 10 ms and could not go out before 200 ms: its latency includes the wait
    for index, latency in enumerate(result.latencies_ms[1:], start=1):
        assert latency >= 200 - index * 10 - 5, (index, latency)
    assert result.send_lag_p99_ms >= 150


async def test_open_loop_sorts_unexpected_answers_and_failures_out_of_the_latencies() -> None:
    async def call(index: int) -> str | None:
        if index == 1:
            raise RuntimeError("refused")
        return "resumed 0" if index == 2 else None

    result = await open_loop(4, 1000.0, call, lead_s=0.0)

    assert len(result.latencies_ms) == 2
    assert result.errors == {"RuntimeError": 1}
    assert result.unexpected == {"resumed 0": 1}
    assert result.error_count == 2


async def test_closed_loop_makes_every_call_once_with_the_concurrency_asked() -> None:
    made: list[int] = []
    in_flight = peak = 0

    async def call(index: int) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        made.append(index)
        await asyncio.sleep(0.001)
        in_flight -= 1

    result = await closed_loop(50, 8, call)

    assert sorted(made) == list(range(50))
    assert peak == 8
    assert len(result.latencies_ms) == 50
