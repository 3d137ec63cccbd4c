"""What the engine (the writer) and the API (the reader) agree on about the analytics counters (`flow_counters`).

A counter row is one number of one flow, keyed by (node, counter, UTC day, version, label) and split over
`COUNTER_SHARDS` shards: a transaction adds its increments to the rows of one shard, picked at random, so concurrent
runs of one flow rarely meet on a row; a reader sums the shards. Which day and version a counter is kept under
depends on what it counts (the proto comments of `AnalyticsService` say it for each answer):

- flow counters (node `FLOW_ITSELF`): the instance's enter day and its current version, so the instances that
  entered on some days are always split by their status now (`entered` = the sum of the status counters);
- step counters (`STEP_*`): the day the step started and the step's version;
- `REACHED`: the instance's enter day, the version of its first step at the node;
- `AB_*`: the day the participant was assigned to the variant, and the instance's version then.

Times at a node are kept as counts per logarithmic bucket (`time_bucket`), a quarter of a doubling wide, so a
percentile read from them is within about 9% of the exact one.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Final

# The node id of the counters of the flow itself (instances), as opposed to one of its nodes (steps).
FLOW_ITSELF: Final = ""

# Rows per counter key; a transaction writes to one of them. More shards, less waiting on a row, more rows to sum.
COUNTER_SHARDS: Final = 8


class CounterName(StrEnum):
    """flow_counters.counter: what a row counts. The instance statuses (`kalcifer_common.statuses.InstanceStatus`
    values) are counters of the flow too: instances now in that status."""

    ENTERED = "entered"
    CONVERTED = "converted"
    STEP_ENTERED = "step_entered"  # label: the node's type
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    STEP_WAITING = "step_waiting"
    STEP_SKIPPED = "step_skipped"
    STEP_CANCELLED = "step_cancelled"
    STEP_RUNNING = "step_running"
    STEP_BRANCH = "step_branch"  # label: the branch key of a completed step
    STEP_TIME = "step_time"  # label: the `time_bucket` of a step that ended completed, failed or skipped
    REACHED = "reached"
    AB_PARTICIPANTS = "ab_participants"  # label: the variant key, as for the other AB_* counters
    AB_CONVERSIONS = "ab_conversions"
    AB_REVENUE = "ab_revenue"


def step_counter(status: str) -> CounterName:
    """The counter of steps in `status` (a `StepStatus` value)."""
    return CounterName(f"step_{status}")


# Step statuses whose steps count towards the time at their node: the node itself ended the visit. A wait
# cancelled because its instance was taken out does not.
TIMED_STEP_STATUSES: Final = ("completed", "failed", "skipped")


def day_of(moment: datetime) -> date:
    """The UTC day of an aware `datetime`: the day a counter is kept under."""
    return moment.astimezone(UTC).date()


# Lower bounds (in microseconds) of the time buckets 1, 2, ...: 1 ms times 2^(i/4). Bucket 0 is [0, 1 ms); the
# last bucket (from about 1.1 years) is open-ended. Changing them changes what stored counters mean.
_BUCKETS_PER_DOUBLING: Final = 4
BUCKET_BOUNDS_US: Final[tuple[int, ...]] = tuple(
    round(1000 * 2 ** (i / _BUCKETS_PER_DOUBLING)) for i in range(35 * _BUCKETS_PER_DOUBLING + 1)
)


def time_bucket(elapsed: timedelta) -> int:
    """The bucket of a time at a node: 0 below 1 ms, then one per quarter of a doubling (negative times, from
    clocks of two machines, count as 0)."""
    return bisect_right(BUCKET_BOUNDS_US, _microseconds(elapsed))


def bucket_bounds(bucket: int) -> tuple[timedelta, timedelta | None]:
    """[lower, upper) of a bucket; upper None for the last, open-ended one."""
    lower = 0 if bucket <= 0 else BUCKET_BOUNDS_US[min(bucket, len(BUCKET_BOUNDS_US)) - 1]
    upper = BUCKET_BOUNDS_US[bucket] if 0 <= bucket < len(BUCKET_BOUNDS_US) else None
    return timedelta(microseconds=lower), None if upper is None else timedelta(microseconds=upper)


def bucket_estimate(bucket: int) -> timedelta:
    """The time a bucket stands for: the geometric middle of its bounds (half a millisecond for bucket 0, the
    lower bound for the last)."""
    lower, upper = bucket_bounds(bucket)
    if upper is None:
        return lower
    if bucket <= 0:
        return upper / 2
    return timedelta(microseconds=round(math.sqrt(_microseconds(lower) * _microseconds(upper))))


def _microseconds(elapsed: timedelta) -> int:
    return elapsed // timedelta(microseconds=1)


def nearest_rank(percent: int, total: int) -> int:
    """The rank (1-based, in increasing order) of the nearest-rank `percent`-th percentile of `total` values:
    ceil(percent / 100 * total), at least 1; in integers, so no float rounding moves it."""
    return max(1, -(-percent * total // 100))


def percentile_bucket(counts: dict[int, int], percent: int) -> int | None:
    """The bucket holding the nearest-rank `percent`-th percentile (1 to 100) of the times counted per bucket.
    None when nothing was counted."""
    total = sum(count for count in counts.values() if count > 0)
    if total <= 0:
        return None
    rank = nearest_rank(percent, total)
    seen = 0
    for bucket in sorted(counts):
        seen += max(counts[bucket], 0)
        if seen >= rank:
            return bucket
    return max(counts)
