"""Journey marketing settings validation: one test per rule, and properties of the clock checks (the cron grammar
itself is `kalcifer_common.cron`'s, tested in tests/unit/common/test_cron.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kalcifer_api.domain.journeys import Transition, require_transition, validated_draft
from kalcifer_api.domain.marketing_settings import (
    MarketingSettings,
    entry_schedule_violations,
    exit_criteria_violations,
    filter_problem,
    frequency_cap_violations,
    goal_violations,
    quiet_hours_violations,
    re_entry_violations,
    settings_violations,
)
from kalcifer_common.errors import FailedPrecondition, InvalidArgument


def fields(violations: list[Any]) -> set[str]:
    return {violation.field for violation in violations}


def test_entry_schedule_needs_a_cron_and_a_real_timezone() -> None:
    assert entry_schedule_violations(None) == []
    assert entry_schedule_violations({"cron": "0 9 * * 1", "timezone": ""}) == []
    assert fields(entry_schedule_violations({"cron": "", "timezone": "Europe/Paris"})) == {"entry_schedule.cron"}
    assert fields(entry_schedule_violations({"cron": "0 9 * * 1", "timezone": "CET/Nowhere"})) == {
        "entry_schedule.timezone"
    }


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("0 9 * * * *", "'0 9 * * * *' must have 5 fields (minute hour day-of-month month day-of-week), not 6"),
        ("0 9 L * *", "'0 9 L * *' is not a cron expression: day of month 'L' is not a number"),
        ("0 9 * * 5-1", "'0 9 * * 5-1' is not a cron expression: day of week range '5-1' runs backwards"),
        ("0 9 30 FEB *", "'0 9 30 FEB *' never fires: day of month 30 never occurs in FEB"),
    ],
)
def test_a_refused_cron_is_a_violation_saying_why(cron: str, problem: str) -> None:
    violations = entry_schedule_violations({"cron": cron, "timezone": "Europe/Paris"})
    assert [(violation.field, violation.description) for violation in violations] == [("entry_schedule.cron", problem)]


def test_goals_need_unique_names_event_types_and_compiling_filters() -> None:
    good = [{"name": "a", "event_type": "order.placed", "filter": "event.total > 1"}, {"name": "b", "event_type": "x"}]
    assert goal_violations(good) == []
    bad = [
        {"name": "", "event_type": "x"},
        {"name": "a", "event_type": ""},
        {"name": "a", "event_type": "has space"},
        {"name": "c", "event_type": "x", "filter": "1 +"},
    ]
    assert fields(goal_violations(bad)) == {
        "goals[0].name",
        "goals[1].event_type",
        "goals[2].name",
        "goals[2].event_type",
        "goals[3].filter",
    }
    assert fields(goal_violations([{"name": "g", "event_type": "x"}] * 51)) == {"goals"}


def test_exit_criteria_need_event_types_and_compiling_filters() -> None:
    assert exit_criteria_violations([{"event_type": "unsubscribed", "filter": ""}]) == []
    assert fields(exit_criteria_violations([{"event_type": ""}, {"event_type": "x", "filter": "&&"}])) == {
        "exit_criteria[0].event_type",
        "exit_criteria[1].filter",
    }


def test_filter_problem_names_the_position() -> None:
    problem = filter_problem("event.total >")
    assert problem is not None
    assert "1:" in problem
    assert filter_problem("") is None
    assert filter_problem("x" * 4097) == "is 4097 characters long; a CEL expression may have at most 4096"


@pytest.mark.parametrize(
    ("cap", "bad"),
    [
        ({"max_messages": 3, "time_window": "1d", "channel": ""}, set()),
        ({"max_messages": 1, "time_window": "1.5h", "channel": "sms"}, set()),
        ({"max_messages": 0, "time_window": "1d", "channel": ""}, {"frequency_cap.max_messages"}),
        ({"max_messages": -1, "time_window": "1d", "channel": ""}, {"frequency_cap.max_messages"}),
        ({"max_messages": True, "time_window": "1d", "channel": ""}, {"frequency_cap.max_messages"}),
        ({"max_messages": 1, "time_window": "", "channel": ""}, {"frequency_cap.time_window"}),
        ({"max_messages": 1, "time_window": "24", "channel": ""}, {"frequency_cap.time_window"}),
        ({"max_messages": 1, "time_window": "0d", "channel": ""}, {"frequency_cap.time_window"}),
        ({"max_messages": 1, "time_window": "99999d", "channel": ""}, {"frequency_cap.time_window"}),
        ({"max_messages": 1, "time_window": "1d", "channel": "webhook"}, {"frequency_cap.channel"}),
    ],
)
def test_frequency_cap_rules(cap: dict[str, Any], bad: set[str]) -> None:
    assert fields(frequency_cap_violations(cap)) == bad


@pytest.mark.parametrize(
    ("quiet", "bad"),
    [
        ({"start": "22:00", "end": "08:00", "timezone": ""}, set()),
        ({"start": "00:00", "end": "23:59", "timezone": "Asia/Tokyo"}, set()),
        ({"start": "24:00", "end": "08:00", "timezone": ""}, {"quiet_hours.start"}),
        ({"start": "22:60", "end": "08:00", "timezone": ""}, {"quiet_hours.start"}),
        ({"start": "9:00", "end": "08:00", "timezone": ""}, {"quiet_hours.start"}),
        ({"start": "22:00", "end": "", "timezone": ""}, {"quiet_hours.end"}),
        ({"start": "22:00", "end": "22:00", "timezone": ""}, {"quiet_hours.end"}),
        ({"start": "22:00", "end": "08:00", "timezone": "Moon/Tranquility"}, {"quiet_hours.timezone"}),
        ({"start": "22:00", "end": "08:00", "timezone": "/etc/localtime"}, {"quiet_hours.timezone"}),
    ],
)
def test_quiet_hours_rules(quiet: dict[str, Any], bad: set[str]) -> None:
    assert fields(quiet_hours_violations(quiet)) == bad


@given(st.integers(0, 23), st.integers(0, 59), st.integers(0, 23), st.integers(0, 59))
def test_any_two_distinct_clock_times_make_quiet_hours(h1: int, m1: int, h2: int, m2: int) -> None:
    quiet = {"start": f"{h1:02d}:{m1:02d}", "end": f"{h2:02d}:{m2:02d}", "timezone": ""}
    assert (quiet_hours_violations(quiet) == []) is ((h1, m1) != (h2, m2))


def test_re_entry_must_be_a_policy() -> None:
    assert re_entry_violations("never") == []
    assert fields(re_entry_violations("sometimes")) == {"re_entry"}


def test_settings_violations_only_check_the_fields_asked_for() -> None:
    settings = MarketingSettings(
        frequency_cap={"max_messages": 0, "time_window": "1d", "channel": ""},
        quiet_hours={"start": "x", "end": "08:00", "timezone": ""},
    )
    assert fields(settings_violations(settings)) == {"frequency_cap.max_messages", "quiet_hours.start"}
    assert fields(settings_violations(settings, frozenset({"quiet_hours"}))) == {"quiet_hours.start"}
    assert settings_violations(settings, frozenset({"name"})) == []


def test_a_draft_needs_a_name_and_a_flow() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validated_draft(name=" ", description="", flow_id=None, settings=MarketingSettings())
    assert fields(raised.value.violations) == {"name", "flow_id"}


@pytest.mark.parametrize(
    ("status", "transition", "reason"),
    [
        ("active", Transition.LAUNCH, "JOURNEY_NOT_DRAFT"),
        ("archived", Transition.LAUNCH, "JOURNEY_NOT_DRAFT"),
        ("draft", Transition.PAUSE, "INVALID_TRANSITION"),
        ("paused", Transition.PAUSE, "INVALID_TRANSITION"),
        ("active", Transition.RESUME, "INVALID_TRANSITION"),
        ("draft", Transition.ARCHIVE, "INVALID_TRANSITION"),
        ("archived", Transition.ARCHIVE, "INVALID_TRANSITION"),
    ],
)
def test_illegal_moves_are_refused_with_their_reason(status: str, transition: Transition, reason: str) -> None:

    with pytest.raises(FailedPrecondition) as raised:
        require_transition(uuid.uuid4(), status, transition)
    assert raised.value.reason == reason


@pytest.mark.parametrize(
    ("status", "transition"),
    [
        ("draft", Transition.LAUNCH),
        ("active", Transition.PAUSE),
        ("paused", Transition.RESUME),
        ("active", Transition.ARCHIVE),
        ("paused", Transition.ARCHIVE),
    ],
)
def test_legal_moves_pass(status: str, transition: Transition) -> None:

    require_transition(uuid.uuid4(), status, transition)
