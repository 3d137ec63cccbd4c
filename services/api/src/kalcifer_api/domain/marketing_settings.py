"""A journey's marketing settings (SPEC 7) and their validation, one rule per setting.

Settings are stored as plain JSON on the journey row and read by the engine and the scheduler, so what is
accepted here is exactly what they can act on: a cron they can schedule (`kalcifer_common.cron`, the scheduler's own
rule), durations they can parse, CEL filters that compile, IANA timezones. Every violation names its field inside the
`Journey` message (`frequency_cap.time_window`, `goals[1].name`, `quiet_hours.timezone`), all of them at once.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kalcifer_common.cron import cron_problem
from kalcifer_common.durations import DurationError, parse_duration
from kalcifer_common.errors import FieldViolation
from kalcifer_common.expressions import expression_problem

from kalcifer_api.domain.marketing_common import timezone_problem

RE_ENTRY_POLICIES: Final = ("after_exit", "never", "always")
CAP_CHANNELS: Final = ("email", "sms", "push", "whatsapp", "in_app")
MAX_GOALS: Final = 50
MAX_EXIT_CRITERIA: Final = 50
MAX_EVENT_TYPE_LENGTH: Final = 200
MAX_GOAL_NAME_LENGTH: Final = 200
_CLOCK: Final = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_EVENT_TYPE: Final = re.compile(r"[A-Za-z0-9_.:\-/]+")


@dataclass(frozen=True, slots=True)
class MarketingSettings:
    """What makes a flow a campaign. Unset optional settings are None (or empty lists)."""

    audience_segment_id: uuid.UUID | None = None
    entry_schedule: dict[str, Any] | None = None  # {"cron", "timezone"}
    goals: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "event_type", "filter"}]
    exit_criteria: list[dict[str, Any]] = field(default_factory=list)  # [{"event_type", "filter"}]
    frequency_cap: dict[str, Any] | None = None  # {"max_messages", "time_window", "channel"}
    quiet_hours: dict[str, Any] | None = None  # {"start", "end", "timezone"}
    re_entry: str = "after_exit"


# --- one validator per setting ---------------------------------------------------------------------------------


def filter_problem(expression: str) -> str | None:
    """Why a CEL filter may not be stored (in one line), or None; empty filters are fine. The same rule as the
    engine's for node configs (SPEC 10 limits included), since the engine evaluates these too."""
    return expression_problem(expression) if expression else None


def _event_type_problem(event_type: str) -> str | None:
    if not event_type:
        return "is required"
    if len(event_type) > MAX_EVENT_TYPE_LENGTH:
        return f"must be at most {MAX_EVENT_TYPE_LENGTH} characters"
    if not _EVENT_TYPE.fullmatch(event_type):
        return f"{event_type!r} may only hold letters, digits and _ . : - /"
    return None


def entry_schedule_violations(schedule: dict[str, Any] | None, path: str = "entry_schedule") -> list[FieldViolation]:
    """The cron must parse; the timezone, when given, must be an IANA zone."""
    if schedule is None:
        return []
    violations: list[FieldViolation] = []
    cron = str(schedule.get("cron", ""))
    problem = cron_problem(cron) if cron else "is required"
    if problem:
        violations.append(FieldViolation(f"{path}.cron", problem))
    timezone = str(schedule.get("timezone", ""))
    if timezone and (problem := timezone_problem(timezone)):
        violations.append(FieldViolation(f"{path}.timezone", problem))
    return violations


def goal_violations(goals: Sequence[dict[str, Any]], path: str = "goals") -> list[FieldViolation]:
    """Each goal: a name unique in the journey, an event type, a filter that compiles."""
    if len(goals) > MAX_GOALS:
        return [FieldViolation(path, f"must hold at most {MAX_GOALS} goals")]
    violations: list[FieldViolation] = []
    seen: set[str] = set()
    for index, goal in enumerate(goals):
        where = f"{path}[{index}]"
        name = str(goal.get("name", ""))
        if not name.strip():
            violations.append(FieldViolation(f"{where}.name", "is required"))
        elif len(name) > MAX_GOAL_NAME_LENGTH:
            violations.append(FieldViolation(f"{where}.name", f"must be at most {MAX_GOAL_NAME_LENGTH} characters"))
        elif name in seen:
            violations.append(FieldViolation(f"{where}.name", f"{name!r} is already the name of another goal"))
        seen.add(name)
        if problem := _event_type_problem(str(goal.get("event_type", ""))):
            violations.append(FieldViolation(f"{where}.event_type", problem))
        if problem := filter_problem(str(goal.get("filter", ""))):
            violations.append(FieldViolation(f"{where}.filter", problem))
    return violations


def exit_criteria_violations(criteria: Sequence[dict[str, Any]], path: str = "exit_criteria") -> list[FieldViolation]:
    """Each exit criterion: an event type and a filter that compiles."""
    if len(criteria) > MAX_EXIT_CRITERIA:
        return [FieldViolation(path, f"must hold at most {MAX_EXIT_CRITERIA} exit criteria")]
    violations: list[FieldViolation] = []
    for index, criterion in enumerate(criteria):
        where = f"{path}[{index}]"
        if problem := _event_type_problem(str(criterion.get("event_type", ""))):
            violations.append(FieldViolation(f"{where}.event_type", problem))
        if problem := filter_problem(str(criterion.get("filter", ""))):
            violations.append(FieldViolation(f"{where}.filter", problem))
    return violations


def frequency_cap_violations(cap: dict[str, Any] | None, path: str = "frequency_cap") -> list[FieldViolation]:
    """max_messages >= 1, time_window a duration ("1d"), channel empty or a messaging channel."""
    if cap is None:
        return []
    violations: list[FieldViolation] = []
    max_messages = cap.get("max_messages", 0)
    if not isinstance(max_messages, int) or isinstance(max_messages, bool) or max_messages < 1:
        violations.append(FieldViolation(f"{path}.max_messages", "must be 1 or more"))
    window = str(cap.get("time_window", ""))
    if not window:
        violations.append(FieldViolation(f"{path}.time_window", "is required (a duration such as '1d' or '12h')"))
    else:
        try:
            if parse_duration(window).total_seconds() <= 0:
                violations.append(FieldViolation(f"{path}.time_window", "must be longer than zero"))
        except DurationError as error:
            violations.append(FieldViolation(f"{path}.time_window", str(error)))
    channel = str(cap.get("channel", ""))
    if channel and channel not in CAP_CHANNELS:
        violations.append(
            FieldViolation(f"{path}.channel", f"{channel!r} is not a channel (one of {', '.join(CAP_CHANNELS)})")
        )
    return violations


def quiet_hours_violations(quiet: dict[str, Any] | None, path: str = "quiet_hours") -> list[FieldViolation]:
    """start and end as "HH:MM" (24-hour), different from each other; timezone empty or an IANA zone."""
    if quiet is None:
        return []
    violations: list[FieldViolation] = []
    for key in ("start", "end"):
        value = str(quiet.get(key, ""))
        if not value:
            violations.append(FieldViolation(f"{path}.{key}", "is required (a local time such as '22:00')"))
        elif not _CLOCK.fullmatch(value):
            violations.append(FieldViolation(f"{path}.{key}", f"{value!r} is not a 24-hour time 'HH:MM'"))
    if not violations and quiet.get("start") == quiet.get("end"):
        violations.append(FieldViolation(f"{path}.end", "must differ from start (the window would be empty)"))
    timezone = str(quiet.get("timezone", ""))
    if timezone and (problem := timezone_problem(timezone)):
        violations.append(FieldViolation(f"{path}.timezone", problem))
    return violations


def re_entry_violations(re_entry: str, path: str = "re_entry") -> list[FieldViolation]:
    """One of the policies of `ReEntryPolicy`."""
    if re_entry not in RE_ENTRY_POLICIES:
        return [FieldViolation(path, f"{re_entry!r} is not a re-entry policy")]
    return []


SETTING_VALIDATORS: Final[dict[str, Callable[[Any], list[FieldViolation]]]] = {
    "entry_schedule": entry_schedule_violations,
    "goals": goal_violations,
    "exit_criteria": exit_criteria_violations,
    "frequency_cap": frequency_cap_violations,
    "quiet_hours": quiet_hours_violations,
    "re_entry": re_entry_violations,
}


def settings_violations(settings: MarketingSettings, fields: frozenset[str] | None = None) -> list[FieldViolation]:
    """Every problem of the settings being written (all of them by default). The audience segment's existence is
    checked against the database by the repository; here only its shape matters, and the wire mapper parsed it."""
    violations: list[FieldViolation] = []
    for name, validate in SETTING_VALIDATORS.items():
        if fields is None or name in fields:
            violations += validate(getattr(settings, name))
    return violations
