"""The duration grammar of SPEC 6.2."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kalcifer_common.durations import DurationError, is_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("1.5h", 5400), ("2m", 120), ("3d", 259_200), ("1w", 604_800), ("0s", 0), ("0.5s", 0.5)],
)
def test_valid_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["30", "", " 30s ", "-5d", "5 d", "1.s", ".5s", "1e3s", "5D", "5ms", "1h30m", "+5s"])
def test_invalid_durations(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_non_strings_are_not_durations() -> None:
    assert not is_duration(30)
    assert not is_duration(None)


def test_absurdly_long_durations_are_refused() -> None:
    with pytest.raises(DurationError, match="maximum"):
        parse_duration("100000d")


@given(st.integers(min_value=0, max_value=10_000), st.sampled_from("smhdw"))
def test_integer_durations_scale_by_unit(amount: int, unit: str) -> None:
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}[unit]
    if amount * factor > 3650 * 86_400:
        assert not is_duration(f"{amount}{unit}")
    else:
        assert parse_duration(f"{amount}{unit}").total_seconds() == amount * factor


@given(st.text(max_size=12))
def test_parser_only_ever_raises_duration_error(text: str) -> None:
    with contextlib.suppress(DurationError):
        parse_duration(text)
