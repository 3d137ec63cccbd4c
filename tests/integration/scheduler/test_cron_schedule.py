"""Journeys' entry schedules: the cron grammar the API accepts, matched minute by minute (pure, no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kalcifer_scheduler.cron_schedule import CronSchedule
from kalcifer_scheduler.timers.store import TimerStore


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        ("0 9 * * 1", datetime(2026, 11, 30, 9, 0), True),  # a Monday at 09:00
        ("0 9 * * 1", datetime(2026, 12, 1, 9, 0), False),  # Tuesday
        ("0 9 * * MON", datetime(2026, 11, 30, 9, 0), True),
        ("*/15 * * * *", datetime(2026, 1, 1, 3, 45), True),
        ("*/15 * * * *", datetime(2026, 1, 1, 3, 46), False),
        ("0 0 1 JAN-MAR *", datetime(2026, 2, 1, 0, 0), True),
        ("0 0 * * 7", datetime(2026, 11, 29, 0, 0), True),  # 7 is Sunday too
        ("0 0 13 * 5", datetime(2026, 11, 13, 0, 0), True),  # both day fields: either matches (a Friday the 13th)
        ("0 0 13 * 5", datetime(2026, 11, 20, 0, 0), True),  # a Friday
        ("0 0 13 * 5", datetime(2026, 11, 14, 0, 0), False),
        ("5-10/5 * * * *", datetime(2026, 1, 1, 0, 10), True),
    ],
)
def test_cron_matches_like_cron(expression: str, moment: datetime, expected: bool) -> None:
    assert CronSchedule.parse(expression).matches(moment) is expected


@pytest.mark.parametrize(
    "expression", ["", "* * * *", "60 * * * *", "* * * * 8", "*/0 * * * *", "5-1 * * * *", "a * * * *"]
)
def test_malformed_crons_are_refused(expression: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        CronSchedule.parse(expression)


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


def test_an_entry_slot_is_read_in_the_schedules_timezone() -> None:
    from zoneinfo import ZoneInfo

    nine_in_paris = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    schedule = CronSchedule.parse("0 9 * * 1")
    assert schedule.matches(nine_in_paris.astimezone(ZoneInfo("Europe/Paris")))
    assert not schedule.matches(nine_in_paris)
    assert not schedule.matches((nine_in_paris + timedelta(minutes=1)).astimezone(ZoneInfo("Europe/Paris")))
