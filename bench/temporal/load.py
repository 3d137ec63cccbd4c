"""What the load process sends to Temporal (the `temporalio` client), the same shapes as bench/public_api/load.py.

Each function runs in the `LoadProcess` (bench/loadgen.py): module-level, plain arguments, a picklable result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from bench.loadgen import ClosedLoopResult, OpenLoopResult, closed_loop, open_loop
from bench.temporal.workflows import TASK_QUEUE, SleepUntil, WaitForResume

CALL_TIMEOUT = timedelta(seconds=60)


def start_waiting(address: str, workflow_ids: Sequence[str], concurrency: int) -> ClosedLoopResult:
    """Update-with-start `WaitForResume` for each id, `concurrency` in flight (TriggerFlow's equivalent)."""
    return asyncio.run(_start_waiting(address, workflow_ids, concurrency))


async def _start_waiting(address: str, workflow_ids: Sequence[str], concurrency: int) -> ClosedLoopResult:
    client = await Client.connect(address)

    async def call(index: int) -> None:
        start = WithStartWorkflowOperation(
            WaitForResume.run,
            id=workflow_ids[index],
            task_queue=TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
        await client.execute_update_with_start_workflow(
            WaitForResume.started, start_workflow_operation=start, rpc_timeout=CALL_TIMEOUT
        )

    return await closed_loop(len(workflow_ids), concurrency, call)


def resume_waiting(address: str, workflow_ids: Sequence[str], rate: float) -> OpenLoopResult:
    """The `resume` update to each workflow, open loop at `rate` a second (IngestEvent's equivalent)."""
    return asyncio.run(_resume_waiting(address, workflow_ids, rate))


async def _resume_waiting(address: str, workflow_ids: Sequence[str], rate: float) -> OpenLoopResult:
    client = await Client.connect(address)

    async def call(index: int) -> str | None:
        handle = client.get_workflow_handle_for(WaitForResume.run, workflow_ids[index])
        await handle.execute_update(WaitForResume.resume, rpc_timeout=CALL_TIMEOUT)
        return None

    return await open_loop(len(workflow_ids), rate, call)


def start_sleepers(address: str, timers: Sequence[tuple[str, float]], concurrency: int) -> ClosedLoopResult:
    """Start `SleepUntil(fire_at)` for each (workflow id, fire_at epoch seconds), `concurrency` in flight."""
    return asyncio.run(_start_sleepers(address, timers, concurrency))


async def _start_sleepers(address: str, timers: Sequence[tuple[str, float]], concurrency: int) -> ClosedLoopResult:
    client = await Client.connect(address)

    async def call(index: int) -> None:
        workflow_id, fire_at = timers[index]
        await client.start_workflow(
            SleepUntil.run, fire_at, id=workflow_id, task_queue=TASK_QUEUE, rpc_timeout=CALL_TIMEOUT
        )

    return await closed_loop(len(timers), concurrency, call)
