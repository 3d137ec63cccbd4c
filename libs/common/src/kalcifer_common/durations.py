"""Durations as operators write them: `^\\d+(\\.\\d+)?(s|m|h|d|w)$` ("1.5h" is 5400 s).

Anything else (`"30"`, `""`, `" 30s "`, `"-5d"`, `"1e3s"`) is rejected: a timer that silently meant something
else is worse than a refused graph.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

_DURATION = re.compile(r"(?P<amount>[0-9]+(?:\.[0-9]+)?)(?P<unit>[smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_DURATION = timedelta(days=3650)


class DurationError(ValueError):
    """The text is not a duration."""


def parse_duration(text: str) -> timedelta:
    """Parse a duration string; raise `DurationError` with a message fit for a field violation."""
    if not isinstance(text, str):
        raise DurationError(f"{text!r} is not a duration (expected a string like '30s', '1.5h', '3d')")
    match = _DURATION.fullmatch(text)
    if match is None:
        raise DurationError(f"{text!r} is not a duration (expected a number and a unit s, m, h, d or w, like '1.5h')")
    # Decimal keeps "0.1s" exact; timedelta then rounds to microseconds.
    seconds = Decimal(match["amount"]) * _UNIT_SECONDS[match["unit"]]
    if seconds > Decimal(MAX_DURATION.total_seconds()):
        raise DurationError(f"{text!r} is longer than the maximum of {MAX_DURATION.days} days")
    return timedelta(seconds=float(seconds))


def is_duration(text: object) -> bool:
    """Whether `text` parses as a duration."""
    try:
        parse_duration(text)  # type: ignore[arg-type]
    except DurationError:
        return False
    return True
