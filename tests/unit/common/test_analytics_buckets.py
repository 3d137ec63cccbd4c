"""Times at a node are counted per logarithmic bucket (`kalcifer_common.analytics`): every time falls inside its
bucket's bounds, a bucket's estimate is within a quarter of a doubling's half of anything in it, and the bucket a
percentile is read from holds the nearest-rank percentile of the times themselves."""

from __future__ import annotations

import math
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st
from kalcifer_common.analytics import (
    bucket_bounds,
    bucket_estimate,
    nearest_rank,
    percentile_bucket,
    time_bucket,
)

# From nothing to a bit over a year (the last bucket is open-ended beyond that).
times = st.integers(min_value=0, max_value=40_000_000_000_000).map(lambda us: timedelta(microseconds=us))


@given(times)
def test_a_time_falls_inside_its_bucket(elapsed: timedelta) -> None:
    lower, upper = bucket_bounds(time_bucket(elapsed))
    assert lower <= elapsed
    assert upper is None or elapsed < upper


@given(times)
def test_an_estimate_is_within_an_eighth_of_a_doubling_of_the_time(elapsed: timedelta) -> None:
    bucket = time_bucket(elapsed)
    estimate = bucket_estimate(bucket)
    assert time_bucket(estimate) == bucket
    if bucket == 0:
        assert elapsed < timedelta(milliseconds=1)
    elif bucket_bounds(bucket)[1] is not None:
        ratio = max(estimate / elapsed, elapsed / estimate)
        assert ratio <= 2 ** (1 / 8) + 1e-3


def test_negative_times_from_two_clocks_count_as_the_first_bucket() -> None:
    assert time_bucket(timedelta(milliseconds=-3)) == 0
    assert bucket_estimate(0) == timedelta(microseconds=500)


@given(st.lists(times, min_size=1, max_size=200), st.sampled_from([1, 50, 90, 95, 99, 100]))
def test_the_percentile_bucket_holds_the_nearest_rank_percentile(values: list[timedelta], percent: int) -> None:
    counts: dict[int, int] = {}
    for value in values:
        counts[time_bucket(value)] = counts.get(time_bucket(value), 0) + 1
    exact = sorted(values)[nearest_rank(percent, len(values)) - 1]
    assert percentile_bucket(counts, percent) == time_bucket(exact)


@given(st.integers(min_value=1, max_value=100), st.integers(min_value=1, max_value=10_000))
def test_nearest_rank_is_the_ceiling_of_the_fraction(percent: int, total: int) -> None:
    assert nearest_rank(percent, total) == max(1, math.ceil(percent * total / 100 - 1e-9))


def test_no_times_have_no_percentile() -> None:
    assert percentile_bucket({}, 50) is None
    assert percentile_bucket({3: 0}, 95) is None
