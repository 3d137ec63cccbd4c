"""Quiet hours on the wall clock, across daylight saving changes, and the journey rules as stored (SPEC 7)."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest
from kalcifer_engine.nodes.governance import JourneyRules, QuietHours, deferred_until, missing_contact

BERLIN_NIGHTS = QuietHours(time(22), time(8), "Europe/Berlin")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # 2027-03-28 is the last Sunday of March: Berlin goes from UTC+1 to UTC+2 at 02:00 local.
        (datetime(2027, 3, 27, 0, 30, tzinfo=UTC), datetime(2027, 3, 27, 7, 0, tzinfo=UTC)),  # 01:30 CET -> 08:00 CET
        (datetime(2027, 3, 28, 0, 30, tzinfo=UTC), datetime(2027, 3, 28, 6, 0, tzinfo=UTC)),  # 01:30 CET -> 08:00 CEST
        (datetime(2027, 3, 29, 0, 30, tzinfo=UTC), datetime(2027, 3, 29, 6, 0, tzinfo=UTC)),  # 02:30 CEST -> 08:00 CEST
        (datetime(2027, 3, 27, 21, 30, tzinfo=UTC), datetime(2027, 3, 28, 6, 0, tzinfo=UTC)),  # 22:30 CET, the eve
        # 2027-10-31: back from UTC+2 to UTC+1 at 03:00 local; 01:30 CEST -> 08:00 CET.
        (datetime(2027, 10, 30, 23, 30, tzinfo=UTC), datetime(2027, 10, 31, 7, 0, tzinfo=UTC)),
    ],
)
def test_a_send_inside_the_window_waits_for_its_local_end(now: datetime, expected: datetime) -> None:
    assert deferred_until(now, BERLIN_NIGHTS, None) == expected


@pytest.mark.parametrize(
    "now",
    [
        datetime(2027, 3, 28, 6, 0, tzinfo=UTC),  # 08:00 CEST: the end is outside the window
        datetime(2027, 3, 28, 12, 0, tzinfo=UTC),
        datetime(2027, 3, 27, 20, 59, tzinfo=UTC),  # 21:59 CET
    ],
)
def test_a_send_outside_the_window_goes_now(now: datetime) -> None:
    assert deferred_until(now, BERLIN_NIGHTS, None) is None


def test_the_window_timezone_wins_then_the_customers_then_utc() -> None:
    now = datetime(2027, 1, 11, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo
    daytime = QuietHours(time(9), time(17), None)
    assert deferred_until(now, daytime, "Asia/Tokyo") == datetime(2027, 1, 11, 8, 0, tzinfo=UTC)  # 17:00 Tokyo
    assert deferred_until(now, QuietHours(time(9), time(17), "UTC"), "Asia/Tokyo") is None  # the window's zone wins
    assert deferred_until(now, daytime, None) is None  # 01:00 UTC is outside 09-17 UTC
    assert deferred_until(now, daytime, "Not/AZone") is None  # an unknown zone reads as UTC


def test_stored_rules_that_cannot_be_read_are_treated_as_unset() -> None:
    rules = JourneyRules.from_row("j", {"max_messages": 0, "time_window": "1d"}, {"start": "25:00", "end": "08:00"})
    assert (rules.frequency_cap, rules.quiet_hours) == (None, None)
    rules = JourneyRules.from_row("j", {"max_messages": 3, "time_window": "12h", "channel": ""}, None)
    assert rules.frequency_cap is not None
    assert (rules.frequency_cap.max_messages, rules.frequency_cap.channel) == (3, None)


@pytest.mark.parametrize(
    ("channel", "profile", "missing"),
    [
        ("email", None, "email"),
        ("email", {"email": "a@example.com"}, None),
        ("sms", {"phone": "+33600000000"}, None),
        ("whatsapp", {"phone": None}, "phone"),
        ("push", None, None),
        ("in_app", {}, None),
    ],
)
def test_which_channels_need_which_contact(channel: str, profile: dict[str, str] | None, missing: str | None) -> None:
    assert missing_contact(channel, profile) == missing
