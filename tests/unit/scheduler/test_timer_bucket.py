"""Timer buckets (pure, no servers): a timer is armed in a bucket never before its fire time and always ahead."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kalcifer_scheduler.timers.store import TimerStore


@given(
    fire_ms=st.integers(min_value=0, max_value=2**42),
    lag_ms=st.integers(min_value=-(10**7), max_value=10**7),
    bucket_ms=st.integers(min_value=1, max_value=10_000),
)
def test_a_timer_bucket_is_never_before_its_fire_time_and_always_in_the_future(
    fire_ms: int, lag_ms: int, bucket_ms: int
) -> None:
    store = TimerStore.__new__(TimerStore)
    store._bucket_ms = bucket_ms
    now_ms = fire_ms + lag_ms
    bucket = store.bucket_of(fire_ms, now_ms)
    assert bucket >= fire_ms
    assert bucket > now_ms
    assert bucket % bucket_ms == 0
    assert bucket - max(fire_ms, now_ms) <= bucket_ms  # and no later than one bucket past what forces it
