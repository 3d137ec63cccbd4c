"""Five-field cron expressions (minute hour day-of-month month day-of-week), matched against a local minute.

The API validates journeys' entry schedules with the same grammar (`kalcifer_api.domain.marketing_settings`):
lists of `*`, `N` or `N-M`, each optionally `/step`; months 1-12 or JAN-DEC; weekdays 0-7 (0 and 7 are Sunday)
or SUN-SAT. As in cron, when both day fields are restricted a day matches if either does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

_MONTHS: Final = {
    m: i for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)
}
_WEEKDAYS: Final = {d: i for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_NO_NAMES: Final[dict[str, int]] = {}
_FIELDS: Final[tuple[tuple[int, int, dict[str, int]], ...]] = (
    (0, 59, _NO_NAMES),
    (0, 23, _NO_NAMES),
    (1, 31, _NO_NAMES),
    (1, 12, _MONTHS),
    (0, 7, _WEEKDAYS),
)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """The parsed sets of one expression."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        """Parse; raises ValueError for anything that is not a five-field cron."""
        fields = expression.split()
        if len(fields) != len(_FIELDS):
            raise ValueError(f"{expression!r} must have 5 fields")
        sets = [_field(text, low, high, names) for text, (low, high, names) in zip(fields, _FIELDS, strict=True)]
        weekdays = frozenset(0 if day == 7 else day for day in sets[4])
        return cls(sets[0], sets[1], sets[2], sets[3], weekdays, fields[2] == "*", fields[4] == "*")

    def matches(self, local: datetime) -> bool:
        """Whether the minute `local` (in the schedule's timezone) is one of the schedule's."""
        if local.minute not in self.minutes or local.hour not in self.hours or local.month not in self.months:
            return False
        day_ok = local.day in self.days
        weekday_ok = (local.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return weekday_ok
        if self.any_weekday:
            return day_ok
        return day_ok or weekday_ok


def _number(text: str, low: int, high: int, names: dict[str, int]) -> int:
    value = names.get(text.upper())
    if value is None:
        if not text.isdigit():
            raise ValueError(f"{text!r} is not a number")
        value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is out of range {low}-{high}")
    return value


def _field(text: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        span, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if step <= 0:
            raise ValueError(f"step {step_text!r} must be positive")
        if span == "*":
            first, last = low, high
        else:
            start, dash, end = span.partition("-")
            first = _number(start, low, high, names)
            last = _number(end, low, high, names) if dash else (high if step_text else first)
        if first > last:
            raise ValueError(f"range {span!r} runs backwards")
        values.update(range(first, last + 1, step))
    return frozenset(values)
