"""Five-field cron expressions: the one grammar that the API validates journeys' entry schedules with and that the
scheduler fires them by. croniter expands the fields; this module decides what is accepted, says why anything else is
not, keeps croniter from reading cron differently where it would, and says which minutes a schedule fires at.

Grammar: exactly five whitespace-separated fields, minute (0-59), hour (0-23), day of month (1-31), month (1-12 or
JAN-DEC) and day of week (0-7, both 0 and 7 being Sunday, or SUN-SAT); names in any case. A field is a comma-separated
list of `*`, `N` or `N-M` (M not below N), each optionally followed by `/step`, a positive number (`N/step` runs from
N to the end of the field). Nothing else that croniter reads is accepted: no seconds or year fields, no `@daily`-style
macros, no `L`, `W`, `#`, `?` or `H`, no wrapping ranges such as `FRI-MON`. An expression that can never fire
(`0 0 30 2 *`) is refused too.

Days: as in cron, when both day fields are restricted (neither is exactly `*`) a day matches if either does;
otherwise it must match both (`0 9 * * 1` is Mondays, `0 0 13 * 5` is every 13th and every Friday).

Time zones: a schedule is read on a zone's wall clock, minute by minute (`CronSchedule.fires_at`). Around daylight
saving time, a schedule that fires every hour (its hour field allows all 24) just follows the clock: it fires on both
passes of a repeated hour and not in a skipped one. Any other fires a repeated wall time once, on its first pass, and
a skipped one at the first minute after the gap (once, however many skipped wall times match): a daily 02:30 still
fires once on the nights the clocks change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

from croniter import CroniterError, croniter

_MONTH_NAMES: Final = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAY_NAMES: Final = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# The longest each month can be (February in leap years): a day of month that no allowed month has never comes.
_LONGEST_MONTH: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# More digits than this are out of range in any field (and would be slow or refused by int()).
_MAX_DIGITS: Final = 9
_FIELD_LABELS: Final = "minute hour day-of-month month day-of-week"
_ONE_MINUTE: Final = timedelta(minutes=1)


class CronError(ValueError):
    """An expression that is not an accepted five-field cron; the message says why."""


@dataclass(frozen=True, slots=True)
class _Field:
    label: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names of low, low + 1, ...

    def number(self, text: str) -> int:
        """The value of one bound: a number in range or, where the field has names, a name."""
        upper = text.upper() if text.isascii() else ""
        if upper in self.names:
            return self.low + self.names.index(upper)
        if not (text.isascii() and text.isdigit()):
            hint = f" or a name ({self.names[0]}-{self.names[-1]})" if self.names else ""
            raise CronError(f"{self.label} {text!r} is not a number{hint}")
        digits = text.lstrip("0") or "0"
        if len(digits) > _MAX_DIGITS:
            raise CronError(f"{self.label} {digits[:_MAX_DIGITS]}... is out of range {self.low}-{self.high}")
        if not self.low <= int(digits) <= self.high:
            raise CronError(f"{self.label} {digits} is out of range {self.low}-{self.high}")
        return int(digits)


_MINUTE, _HOUR, _DAY, _MONTH, _WEEKDAY = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTH_NAMES),
    _Field("day of week", 0, 7, _WEEKDAY_NAMES),
)
_FIELDS: Final = (_MINUTE, _HOUR, _DAY, _MONTH, _WEEKDAY)
# What each field can hold once read (day of week 7 is read as 0, Sunday).
_FULL: Final = (
    frozenset(range(60)),
    frozenset(range(24)),
    frozenset(range(1, 32)),
    frozenset(range(1, 13)),
    frozenset(range(7)),
)


def _step(text: str, item_field: _Field) -> int:
    digits = text.lstrip("0")
    if not (text.isascii() and text.isdigit()) or not digits:
        raise CronError(f"{item_field.label} step {text!r} must be a positive number")
    # Any step wider than the field takes the first value only: cap it (and never read thousands of digits).
    return min(int(digits[: _MAX_DIGITS + 1]), item_field.high + 1)


def _croniter_item(item: str, item_field: _Field) -> str:
    """One list item checked, in a form croniter expands as cron does.

    croniter expands `N-N` to the whole field, reads day of week `N/step` up to 6 rather than 7 and wraps backwards
    ranges; so single values are written alone and a day-of-week range reaching 7 is cut at 6, plus Sunday (0) when
    the step lands on 7.
    """
    span, slash, step_text = item.partition("/")
    step = _step(step_text, item_field) if slash else 1
    if span == "*":
        return f"*/{step}" if slash else "*"
    start, dash, end = span.partition("-")
    first = item_field.number(start)
    if dash:
        last = item_field.number(end)
        if first > last:
            raise CronError(f"{item_field.label} range {span!r} runs backwards")
    else:
        last = item_field.high if slash else first
    if item_field is _WEEKDAY and last == 7:
        sunday = ["0"] if (7 - first) % step == 0 else []
        if first == 7:
            return "0"
        return ",".join([f"{first}-6/{step}" if first < 6 else "6", *sunday])
    return f"{first}-{last}/{step}" if first < last else str(first)


def _values(expanded: Sequence[int | str], full: frozenset[int]) -> frozenset[int]:
    if "*" in expanded:
        return full
    return frozenset(int(value) for value in expanded)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed expression: what each field allows, and how its two day fields combine."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    # True when both day fields are restricted: a day matches if either does (else it must match both).
    day_or: bool

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        """Parse; raises CronError (a ValueError) saying why anything else is not an accepted five-field cron."""
        fields = expression.split()
        if len(fields) != len(_FIELDS):
            macro = "; macros such as @daily are not supported" if expression.strip().startswith("@") else ""
            raise CronError(f"{expression!r} must have 5 fields ({_FIELD_LABELS}), not {len(fields)}{macro}")
        try:
            items = [
                ",".join(_croniter_item(item, item_field) for item in text.split(","))
                for text, item_field in zip(fields, _FIELDS, strict=True)
            ]
        except CronError as error:
            raise CronError(f"{expression!r} is not a cron expression: {error}") from None
        try:
            expanded, _ = croniter.expand(" ".join(items))
        except CroniterError as error:  # pragma: no cover - the checks above leave croniter nothing to refuse
            raise CronError(f"{expression!r} is not a cron expression: {error}") from None
        minutes, hours, days, months, weekdays = (
            _values(values, full) for values, full in zip(expanded, _FULL, strict=True)
        )
        restricted = fields[2] != "*" and fields[4] != "*"
        if restricted and (days == _FULL[2] or weekdays == _FULL[4]):
            days, weekdays = _FULL[2], _FULL[4]  # either is every day, so their union is too
        day_or = restricted and days != _FULL[2]
        if weekdays == _FULL[4] and not any(day <= _LONGEST_MONTH[month - 1] for day in days for month in months):
            listed = ", ".join(str(day) for day in sorted(days))
            names = ", ".join(_MONTH_NAMES[month - 1] for month in sorted(months))
            raise CronError(f"{expression!r} never fires: day of month {listed} never occurs in {names}")
        return cls(expression, minutes, hours, days, months, weekdays, day_or)

    def matches(self, local: datetime) -> bool:
        """Whether the wall-clock minute `local` is one of the schedule's (its zone and fold are not looked at)."""
        if local.minute not in self.minutes or local.hour not in self.hours or local.month not in self.months:
            return False
        day_ok = local.day in self.days
        weekday_ok = local.isoweekday() % 7 in self.weekdays
        return (day_ok or weekday_ok) if self.day_or else (day_ok and weekday_ok)

    def fires_at(self, instant: datetime, zone: tzinfo) -> bool:
        """Whether the schedule, read on the wall clock of `zone` (a zoneinfo.ZoneInfo, or UTC), fires at the minute
        of `instant` (timezone-aware). Daylight saving time as the module says."""
        if instant.tzinfo is None:
            raise ValueError("instant must be timezone-aware")
        minute = instant.astimezone(UTC).replace(second=0, microsecond=0)
        local = minute.astimezone(zone)  # fold 1 on the second pass of a repeated wall time
        if self.hours == _FULL[1]:
            return self.matches(local)
        if self.matches(local) and not local.fold:
            return True
        # The wall times between the previous minute's and this one's never showed (a spring-forward skipped them).
        skipped = (minute - _ONE_MINUTE).astimezone(zone).replace(tzinfo=None) + _ONE_MINUTE
        shown = local.replace(tzinfo=None)
        while skipped < shown:
            if self.matches(skipped):
                return True
            skipped += _ONE_MINUTE
        return False


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not an accepted five-field cron ("0 9 * * 1"), or None when it is one."""
    try:
        CronSchedule.parse(expression)
    except CronError as error:
        return str(error)
    return None
