"""The expression sandbox with real worker processes: values, errors, and every way an expression can run away."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest
from kalcifer_common.sandbox import ExpressionFailed, ExpressionRunaway, ExpressionSandbox, SandboxLimits

from tests.support.eventually import eventually

TEN = "[1,2,3,4,5,6,7,8,9,10]"
SIX_NESTED_MAPS = f"{TEN}.map(a,{TEN}.map(b,{TEN}.map(c,{TEN}.map(d,{TEN}.map(e,{TEN}.map(f,{TEN}))))))"


@pytest.fixture
async def sandbox() -> AsyncIterator[ExpressionSandbox]:
    box = ExpressionSandbox(SandboxLimits(workers=2, timeout_seconds=0.3, memory_mb=256))
    yield box
    await box.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_values_come_back_as_json(sandbox: ExpressionSandbox) -> None:
    assert await sandbox.evaluate("n * 2", {"n": 21}) == 42
    assert await sandbox.evaluate("{'a': [1, 2.5, null], 'b': event.x}", {"event": {"x": "y"}}) == {
        "a": [1, 2.5, None],
        "b": "y",
    }
    assert await sandbox.evaluate("timestamp('2030-01-31T09:00:00Z')", {}) == "2030-01-31T09:00:00+00:00"
    assert await sandbox.evaluate("duration('90s')", {}) == "90s"
    assert await sandbox.evaluate("b'abc'", {}) == "abc"


async def test_an_ordinary_error_is_expression_failed_and_keeps_the_worker(sandbox: ExpressionSandbox) -> None:
    assert await sandbox.evaluate("1", {}) == 1
    before = sandbox.worker_pids
    with pytest.raises(ExpressionFailed, match="KeyError") as caught:
        await sandbox.evaluate("customer.nope == 1", {"customer": {}})
    assert not isinstance(caught.value, ExpressionRunaway)
    assert sandbox.worker_pids == before
    assert sandbox.runaways == 0


async def test_twenty_thousand_additions_crash_only_their_worker() -> None:
    # Stored before the write-time limits existed, such an expression must still cost no more than its step.
    # A budget far above its ~150 ms compile leaves the crash as the only way it can end, however busy the machine.
    box = ExpressionSandbox(SandboxLimits(workers=1, timeout_seconds=30))
    try:
        assert await box.evaluate("1", {}) == 1
        crashed_pid = box.worker_pids[0]
        with pytest.raises(ExpressionRunaway, match=r"crashed its evaluator \(SIGSEGV\)"):
            await box.evaluate("+".join(["1"] * 20_000), {})
        assert not alive(crashed_pid)
        assert await box.evaluate("2 + 2", {}) == 4
        assert box.runaways == 1
    finally:
        await box.close()


async def test_six_nested_maps_are_stopped_at_the_time_budget(sandbox: ExpressionSandbox) -> None:
    started = time.monotonic()
    with pytest.raises(ExpressionRunaway, match="ran longer than its budget of 300 ms"):
        await sandbox.evaluate(SIX_NESTED_MAPS, {})
    # Stopped by the 0.3 s budget (unbounded, it runs for minutes); the bound leaves room for a loaded machine.
    assert time.monotonic() - started < 15
    assert await sandbox.evaluate("true", {}) is True


async def test_a_value_too_big_for_the_memory_limit_stops_its_worker() -> None:
    box = ExpressionSandbox(SandboxLimits(workers=1, timeout_seconds=30, memory_mb=128))
    try:
        with pytest.raises(ExpressionRunaway, match="128 MB of memory"):
            await box.evaluate("l.map(a, l)", {"l": list(range(20_000))})
        assert await box.evaluate("size(l)", {"l": [1, 2]}) == 2
    finally:
        await box.close()


async def test_other_evaluations_proceed_while_one_runs_away(sandbox: ExpressionSandbox) -> None:
    await asyncio.gather(sandbox.evaluate("1", {}), sandbox.evaluate("1", {}))  # both workers started
    bomb = asyncio.ensure_future(sandbox.evaluate(SIX_NESTED_MAPS, {}))
    await busy_worker(sandbox)  # the bomb holds a worker
    answers = [await sandbox.evaluate("n + 1", {"n": n}) for n in range(50)]
    assert answers == list(range(1, 51))
    assert not bomb.done()  # fifty answers came back while the bomb still held its worker
    with pytest.raises(ExpressionRunaway):
        await bomb


async def busy_worker(sandbox: ExpressionSandbox) -> int:
    busy = await eventually(lambda: sandbox.busy_pids, within=10, interval=0.01, what="a worker taking the evaluation")
    return busy[0]


async def test_a_cancelled_evaluation_retires_its_worker(sandbox: ExpressionSandbox) -> None:
    task = asyncio.ensure_future(sandbox.evaluate(SIX_NESTED_MAPS, {}))
    pid = await busy_worker(sandbox)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(pid)  # it may still have answered the cancelled frame later: it can serve nobody else
    assert await sandbox.evaluate("'still' + ' here'", {}) == "still here"


async def test_close_stops_every_worker_and_refuses_more_work() -> None:
    box = ExpressionSandbox(SandboxLimits(workers=2))
    await asyncio.gather(box.evaluate("1", {}), box.evaluate("2", {}))
    pids = box.worker_pids
    assert len(pids) == 2
    await box.close()
    assert not any(alive(pid) for pid in pids)
    from kalcifer_common.sandbox import SandboxUnavailable

    with pytest.raises(SandboxUnavailable):
        await box.evaluate("1", {})
