"""The Temporal workflows equivalent to the flows of bench/public_api, as a Temporal user would write them.

- `WaitForResume` is `trigger -> wait_for_event -> exit`: started by update-with-start, whose `started` update is
  answered once the worker ran the workflow's first task (the run reached its wait and the server recorded it),
  like TriggerFlow answering after the run to the first wait committed; then the `resume` update ends it, answered
  once the worker's task that ran the rest of the workflow was recorded, like IngestEvent answering after the
  resumed run committed. (A signal would be answered before the workflow even ran.)
- `SleepUntil` is `trigger -> wait_until`: a durable timer to an absolute moment, then the end.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

TASK_QUEUE = "kalcifer-bench"


@workflow.defn
class WaitForResume:
    """Waits for the `resume` update, then completes."""

    def __init__(self) -> None:
        self._resumed = False

    @workflow.run
    async def run(self) -> None:
        """Park until resumed."""
        await workflow.wait_condition(lambda: self._resumed)

    @workflow.update
    async def started(self) -> None:
        """Answered with the workflow's first task: the start reached its wait."""

    @workflow.update
    async def resume(self) -> None:
        """The event: the workflow completes in the task that answers it."""
        self._resumed = True


@workflow.defn
class SleepUntil:
    """Sleeps until an absolute moment (epoch seconds), then completes."""

    @workflow.run
    async def run(self, fire_at: float) -> None:
        """One durable timer."""
        await workflow.sleep(timedelta(seconds=max(0.0, fire_at - workflow.now().timestamp())))
