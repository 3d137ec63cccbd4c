"""The engine's Prometheus metrics (beside every server's RPC metrics, `kalcifer_common.rpc.metrics`).

- `kalcifer_engine_runs_total{status}`: instance runs committed (a start, a resume, a recovery re-run), by the
  status the run left its instance in. A run whose transaction rolled back is not counted; its retry is.
- `kalcifer_engine_steps_total{status}`: node executions those runs committed, by the status their step was left
  in (a wait's node counts once when it parks, `waiting`, and again when a resume finishes it).
- `kalcifer_engine_instances{status}`: instances of every tenant in each status, counted in PostgreSQL every
  METRICS_REFRESH_SECONDS (`runtime.gauges`). Every replica reports the same database: aggregate with max().

Labels are statuses only: never a tenant, flow or node (their number has no bound).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass, field

from kalcifer_common.statuses import InstanceStatus, StepStatus
from prometheus_client import Counter, Gauge

RUNS = Counter(
    "kalcifer_engine_runs", "Instance runs committed, by the status the run left its instance in.", ["status"]
)
STEPS = Counter("kalcifer_engine_steps", "Node executions committed, by the status of their step.", ["status"])
INSTANCES = Gauge(
    "kalcifer_engine_instances",
    "Instances of every tenant in each status (from PostgreSQL, every METRICS_REFRESH_SECONDS).",
    ["status"],
)

# Every series exists from the start (at 0), so a rate over a restart and an absent status read the same.
for _status in InstanceStatus:
    RUNS.labels(_status.value)
    INSTANCES.labels(_status.value)
for _step_status in StepStatus:
    STEPS.labels(_step_status.value)


@dataclass
class RunCounts:
    """What the runs of one transaction add to `RUNS` and `STEPS` once it commits (`Runtime.transaction`)."""

    runs: Tally[str] = field(default_factory=Tally)
    steps: Tally[str] = field(default_factory=Tally)

    def ran(self, status: str, step_statuses: Iterable[str]) -> None:
        """One run that left its instance in `status` after executing steps left in `step_statuses`."""
        self.runs[status] += 1
        self.steps.update(step_statuses)

    def extend(self, other: RunCounts) -> None:
        """Add another run's counts (several runs may share one commit)."""
        self.runs.update(other.runs)
        self.steps.update(other.steps)

    def record(self) -> None:
        """Add the counts to the process's metrics (after the commit)."""
        for status, count in self.runs.items():
            RUNS.labels(status).inc(count)
        for status, count in self.steps.items():
            STEPS.labels(status).inc(count)


def set_instance_counts(counts: dict[str, int]) -> None:
    """The instances gauge from a fresh count by status (a status without instances reads 0)."""
    for status in InstanceStatus:
        INSTANCES.labels(status.value).set(counts.get(status.value, 0))
