"""Five-field cron (`kalcifer_common.cron`): what is accepted and why the rest is not, minute matching against a
plain reading of cron, fire times across daylight saving time, and the API's check agreeing with the scheduler."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import CroniterBadDateError, croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kalcifer_common.cron import CronError, CronSchedule, cron_problem

MINUTE = timedelta(minutes=1)
NEW_YORK = ZoneInfo("America/New_York")
ZONES = (
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "America/Santiago",  # its spring-forward skips midnight
    "Australia/Lord_Howe",  # half an hour of daylight saving time
    "Asia/Kathmandu",
    "Pacific/Chatham",
)
# (lowest, highest, names of lowest, lowest + 1, ...) of the five fields, as the grammar writes them.
FIELDS: tuple[tuple[int, int, tuple[str, ...]], ...] = (
    (0, 59, ()),
    (0, 23, ()),
    (1, 31, ()),
    (1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    (0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)


# --- a plain reading of cron, to hold croniter's expansion against -------------------------------------------


def reference_values(text: str, index: int) -> set[int]:
    low, high, names = FIELDS[index]

    def bound(token: str) -> int:
        return low + names.index(token.upper()) if token.upper() in names else int(token)

    values: set[int] = set()
    for item in text.split(","):
        span, slash, step = item.partition("/")
        if span == "*":
            first, last = low, high
        else:
            start, dash, end = span.partition("-")
            first = bound(start)
            last = bound(end) if dash else (high if slash else first)
        values.update(range(first, last + 1, int(step) if slash else 1))
    return {value % 7 for value in values} if index == 4 else values


def reference_matches(expression: str, moment: datetime) -> bool:
    minute, hour, day, month, weekday = expression.split()
    if (
        moment.minute not in reference_values(minute, 0)
        or moment.hour not in reference_values(hour, 1)
        or moment.month not in reference_values(month, 3)
    ):
        return False
    day_ok = moment.day in reference_values(day, 2)
    weekday_ok = moment.isoweekday() % 7 in reference_values(weekday, 4)
    if day == "*" or weekday == "*":
        return day_ok and weekday_ok
    return day_ok or weekday_ok


@st.composite
def cron_fields(draw: st.DrawFn, index: int) -> str:
    """One field in the accepted grammar: a list of `*`, N, N-M and N/step items, with or without steps."""
    low, high, names = FIELDS[index]

    def bound(value: int) -> str:
        if names and value - low < len(names) and draw(st.booleans()):
            name = names[value - low]
            return draw(st.sampled_from((name, name.lower(), name.title())))
        return draw(st.sampled_from((str(value), f"0{value}")))

    items = []
    for _ in range(draw(st.integers(1, 3))):
        first, last = sorted((draw(st.integers(low, high)), draw(st.integers(low, high))))
        step = draw(st.integers(1, high + 2))
        items.append(
            draw(
                st.sampled_from(
                    (
                        "*",
                        f"*/{step}",
                        bound(first),
                        f"{bound(first)}-{bound(last)}",
                        f"{bound(first)}-{bound(last)}/{step}",
                        f"{bound(first)}/{step}",
                    )
                )
            )
        )
    return ",".join(items)


@st.composite
def cron_expressions(draw: st.DrawFn) -> str:
    fields = [draw(st.one_of(st.just("*"), cron_fields(index))) for index in range(5)]
    return draw(st.sampled_from((" ", "  ", "\t"))).join(fields)


# Tokens that croniter (or a careless parser) reads and the grammar does not.
FOREIGN = (
    "L",
    "15W",
    "5#3",
    "?",
    "H",
    "H/5",
    "5L",
    "L5",
    "*/",
    "5/",
    "5-",
    "-5",
    "1-2-3",
    "FRI-MON",
    "٣",
    "²",
    "@daily",
)


@st.composite
def near_crons(draw: st.DrawFn) -> str:
    """Accepted expressions with one field replaced, some fields added or dropped, or made up from scratch."""
    fields = draw(cron_expressions()).split()
    choice = draw(st.integers(0, 3))
    if choice == 0:
        fields[draw(st.integers(0, 4))] = draw(st.sampled_from(FOREIGN))
    elif choice == 1:
        fields = fields + draw(st.lists(st.sampled_from(("0", "*", "2026", "*/5")), min_size=1, max_size=2))
    elif choice == 2:
        fields = fields[: draw(st.integers(0, 4))]
    else:
        return draw(st.text(alphabet="0123456789*/-, LW#?@HJANMONSUN", max_size=24))
    return " ".join(fields)


# --- accepted, refused, and why ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cron",
    [
        "0 9 * * 1",
        "*/15 * * * *",
        "0 0 1 JAN-JUN *",
        "30 8-18/2 * * MON-FRI",
        "0 0 * * 7",
        "5,10,15 1 1-31 12 sun",
        "0 0 29 2 *",  # every leap year
        "0 0 31 2 1",  # February 31st never comes, Mondays in February do
        "59/15 * * * *",
        "*/100 * * * *",
        "0 0 * 5-5 *",
        "0\t9  * * 1",
    ],
)
def test_valid_crons(cron: str) -> None:
    assert cron_problem(cron) is None


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("", "must have 5 fields"),
        ("0 9 * *", "must have 5 fields"),
        ("0 9 * * * *", "must have 5 fields (minute hour day-of-month month day-of-week), not 6"),
        ("0 0 9 * * * 2026", "must have 5 fields (minute hour day-of-month month day-of-week), not 7"),
        ("@hourly", "not 1; macros such as @daily are not supported"),
        ("60 * * * *", "minute 60 is out of range 0-59"),
        ("0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 0 0 * *", "day of month 0 is out of range 1-31"),
        ("0 0 * 13 *", "month 13 is out of range 1-12"),
        ("0 0 * 0 *", "month 0 is out of range 1-12"),
        ("0 0 * * 8", "day of week 8 is out of range 0-7"),
        ("0 " + "1" * 5000 + " * * *", "hour 111111111... is out of range 0-23"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("*/x * * * *", "step 'x' must be a positive number"),
        ("*/ * * * *", "minute step '' must be a positive number"),
        ("0 0 * * 5-1", "range '5-1' runs backwards"),
        ("0 0 * NOV-FEB *", "month range 'NOV-FEB' runs backwards"),
        ("0 0 * FOO *", "month 'FOO' is not a number"),
        ("0 0 * * MON-FOO", "day of week 'FOO' is not a number"),
        ("0 0 * MON *", "month 'MON' is not a number or a name (JAN-DEC)"),
        ("a b c d e", "minute 'a' is not a number"),
        ("0 0 * JAN *,", "is not a number"),
        ("0 0 L * *", "day of month 'L' is not a number"),
        ("0 0 15W * *", "day of month '15W' is not a number"),
        ("0 0 * * 5#3", "day of week '5#3' is not a number"),
        ("0 0 * * 5L", "day of week '5L' is not a number"),
        ("0 0 ? * 1", "day of month '?' is not a number"),
        ("H * * * *", "minute 'H' is not a number"),
        ("٣ * * * *", "minute '٣' is not a number"),
        ("0 0 30 2 *", "'0 0 30 2 *' never fires: day of month 30 never occurs in FEB"),
        ("0 0 31 4,6 *", "never fires: day of month 31 never occurs in APR, JUN"),
    ],
)
def test_invalid_crons_say_why(cron: str, fragment: str) -> None:
    problem = cron_problem(cron)
    assert problem is not None
    assert fragment in problem
    with pytest.raises(CronError) as raised:
        CronSchedule.parse(cron)
    assert str(raised.value) == problem


@pytest.mark.parametrize("token", FOREIGN)
@pytest.mark.parametrize("index", range(5))
def test_what_croniter_reads_beyond_the_grammar_is_refused_in_every_field(token: str, index: int) -> None:
    fields = ["*"] * 5
    fields[index] = token
    assert cron_problem(" ".join(fields)) is not None


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 * * * 30",  # seconds
        "0 0 1 1 * 0 2030",  # seconds and years
        "@daily",
        "0 0 L * *",
        "0 0 15W * *",
        "0 0 * * 5#3",
        "0 0 * * L5",  # the last Friday
        "0 0 ? * 1",
        "0 0 * * FRI-MON",  # croniter wraps it round the week
        "0 0 30 2 *",  # croniter takes it, and then finds no date
    ],
)
def test_croniter_would_take_it_the_check_does_not(expression: str) -> None:
    assert croniter.is_valid(expression)
    assert cron_problem(expression) is not None


@pytest.mark.parametrize(
    "expression", ["", "* * * *", "60 * * * *", "* * * * 8", "*/0 * * * *", "5-1 * * * *", "a * * * *"]
)
def test_malformed_crons_are_refused(expression: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        CronSchedule.parse(expression)


@given(st.integers(0, 59), st.integers(0, 23), st.integers(1, 31), st.integers(1, 12), st.integers(0, 7))
def test_every_in_range_cron_is_valid(minute: int, hour: int, day: int, month: int, weekday: int) -> None:
    assert cron_problem(f"{minute} {hour} {day} {month} {weekday}") is None


@given(st.text(max_size=30))
def test_cron_check_never_raises(text: str) -> None:
    problem = cron_problem(text)
    assert problem is None or isinstance(problem, str)


# --- minutes matched as cron reads them ----------------------------------------------------------------------


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
        # Where croniter alone would read otherwise:
        ("0 0 * 5-5 *", datetime(2026, 6, 1, 0, 0), False),  # an equal range is one month, not every month
        ("0 0 * * 5/2", datetime(2026, 11, 29, 0, 0), True),  # FRI/2 runs to 7: Friday and Sunday
        ("0 0 1-31 * */2", datetime(2026, 11, 30, 0, 0), True),  # both restricted, one is every day: every day
        ("0 0 13 * *,5", datetime(2026, 11, 14, 0, 0), True),  # `*,5` is every weekday, and restricted
    ],
)
def test_cron_matches_like_cron(expression: str, moment: datetime, expected: bool) -> None:
    assert CronSchedule.parse(expression).matches(moment) is expected
    assert reference_matches(expression, moment) is expected


@settings(max_examples=300)
@given(cron_expressions(), st.lists(st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1)), min_size=1, max_size=5))
def test_every_accepted_expression_matches_the_minutes_cron_reads_it_to(
    expression: str, moments: list[datetime]
) -> None:
    problem = cron_problem(expression)
    if problem is not None:  # only an expression that never fires is refused here
        assert "never fires" in problem
        return
    schedule = CronSchedule.parse(expression)
    for moment in moments:
        assert schedule.matches(moment) is reference_matches(expression, moment)


def test_an_entry_slot_is_read_in_the_schedules_timezone() -> None:
    nine_in_paris = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    schedule = CronSchedule.parse("0 9 * * 1")
    assert schedule.matches(nine_in_paris.astimezone(ZoneInfo("Europe/Paris")))
    assert not schedule.matches(nine_in_paris)
    assert not schedule.matches((nine_in_paris + timedelta(minutes=1)).astimezone(ZoneInfo("Europe/Paris")))
    paris = ZoneInfo("Europe/Paris")
    assert schedule.fires_at(nine_in_paris, paris)
    assert schedule.fires_at(nine_in_paris + timedelta(seconds=59), paris)
    assert not schedule.fires_at(nine_in_paris + MINUTE, paris)
    assert not schedule.fires_at(nine_in_paris + timedelta(hours=1), paris)
    assert schedule.fires_at(nine_in_paris + timedelta(hours=1), UTC)


# --- the API's check and the scheduler agree -----------------------------------------------------------------


def every_wall_time(schedule: CronSchedule, after: datetime) -> croniter[datetime]:
    """croniter walking the schedule's wall times (naive) from `after`, on the sets the module read."""
    fields = (schedule.minutes, schedule.hours, schedule.days, schedule.months, schedule.weekdays)
    full = (60, 24, 31, 12, 7)
    expression = " ".join(
        "*" if len(values) == size else ",".join(map(str, sorted(values)))
        for values, size in zip(fields, full, strict=True)
    )
    return croniter(expression, after, ret_type=datetime, day_or=True)


@settings(max_examples=300)
@given(
    st.one_of(cron_expressions(), near_crons()),
    st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1)),
    st.sampled_from(ZONES),
)
def test_what_the_check_accepts_the_scheduler_can_schedule(expression: str, after: datetime, zone_name: str) -> None:
    problem = cron_problem(expression)
    if problem is not None:
        with pytest.raises(CronError):
            CronSchedule.parse(expression)
        return
    schedule = CronSchedule.parse(expression)
    wall = every_wall_time(schedule, after).get_next(datetime)  # never "failed to find next date"
    assert wall > after
    assert schedule.matches(wall)
    assert isinstance(schedule.fires_at(after.replace(tzinfo=UTC), ZoneInfo(zone_name)), bool)


@given(
    st.sets(st.integers(27, 31), min_size=1, max_size=3),
    st.sets(st.integers(1, 12), min_size=1, max_size=3),
    st.sampled_from(("*", "1", "MON-FRI")),
)
def test_only_an_expression_that_never_fires_is_refused_as_such(days: set[int], months: set[int], weekday: str) -> None:
    day_field, month_field = ",".join(map(str, sorted(days))), ",".join(map(str, sorted(months)))
    expression = f"0 0 {day_field} {month_field} {weekday}"
    # Weekdays come every month; otherwise one of its days must exist in one of its months, leap years included.
    possible = weekday != "*" or any(day <= calendar.monthrange(2028, month)[1] for day in days for month in months)
    assert (cron_problem(expression) is None) is possible
    if not possible:
        with pytest.raises(CroniterBadDateError):
            croniter(expression, datetime(2000, 1, 1)).get_next(datetime)


# --- daylight saving time ------------------------------------------------------------------------------------


def fire_minutes(schedule: CronSchedule, after: datetime, until: datetime, zone: ZoneInfo) -> list[datetime]:
    """The UTC minutes in (after, until] at which the schedule fires."""
    fires = []
    minute = after + MINUTE
    while minute <= until:
        if schedule.fires_at(minute, zone):
            fires.append(minute)
        minute += MINUTE
    return fires


def instants_of(wall: datetime, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants a naive wall time stands for in `zone`: none in a spring-forward gap, two in a repeat."""
    instants = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall and instant not in instants:
            instants.append(instant)
    return instants


def transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    """The UTC minutes at which the zone's offset changes in `year`."""
    found = []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    while moment.year == year:
        following = moment + timedelta(hours=1)
        offset = moment.astimezone(zone).utcoffset()
        if offset != following.astimezone(zone).utcoffset():
            change = moment
            while change.astimezone(zone).utcoffset() == offset:
                change += MINUTE
            found.append(change)
        moment = following
    return found


@pytest.mark.parametrize(
    ("expression", "start", "end", "expected"),
    [
        # Spring forward (02:00 -> 03:00): a skipped time fires at 03:00, once however many skipped times match.
        ("30 2 * * *", datetime(2026, 3, 7, 12), datetime(2026, 3, 9, 12), ["03-08T03:00-04:00", "03-09T02:30-04:00"]),
        (
            "*/20 2-3 8 3 *",
            datetime(2026, 3, 8, 5),
            datetime(2026, 3, 8, 9),
            ["03-08T03:00-04:00", "03-08T03:20-04:00", "03-08T03:40-04:00"],
        ),
        # Fall back (02:00 -> 01:00): a repeated time fires once, on its first pass...
        (
            "30 1 * * *",
            datetime(2026, 10, 31, 12),
            datetime(2026, 11, 2, 12),
            ["11-01T01:30-04:00", "11-02T01:30-05:00"],
        ),
        (
            "0,30 1 1 11 *",
            datetime(2026, 11, 1, 4),
            datetime(2026, 11, 1, 8),
            ["11-01T01:00-04:00", "11-01T01:30-04:00"],
        ),
        # ...while a schedule that fires every hour follows the clock: both passes, and nothing in a gap.
        (
            "0,30 * 1 11 *",
            datetime(2026, 11, 1, 4, 45),
            datetime(2026, 11, 1, 7),
            ["11-01T01:00-04:00", "11-01T01:30-04:00", "11-01T01:00-05:00", "11-01T01:30-05:00", "11-01T02:00-05:00"],
        ),
        (
            "30 * 8 3 *",
            datetime(2026, 3, 8, 5),
            datetime(2026, 3, 8, 8),
            ["03-08T00:30-05:00", "03-08T01:30-05:00", "03-08T03:30-04:00"],
        ),
    ],
)
def test_daylight_saving_time_in_new_york(expression: str, start: datetime, end: datetime, expected: list[str]) -> None:
    fires = fire_minutes(CronSchedule.parse(expression), start.replace(tzinfo=UTC), end.replace(tzinfo=UTC), NEW_YORK)
    assert [fire.astimezone(NEW_YORK).isoformat(timespec="minutes")[5:] for fire in fires] == expected


def test_a_half_hour_shift_is_handled_too() -> None:
    lord_howe = ZoneInfo("Australia/Lord_Howe")  # 02:00 -> 02:30 on 2026-10-04, 02:00 -> 01:30 on 2026-04-05
    spring = fire_minutes(
        CronSchedule.parse("0,15 2 4 10 *"),
        datetime(2026, 10, 3, 14, tzinfo=UTC),
        datetime(2026, 10, 3, 17, tzinfo=UTC),
        lord_howe,
    )
    assert [fire.astimezone(lord_howe).isoformat(timespec="minutes")[5:] for fire in spring] == ["10-04T02:30+11:00"]
    autumn = fire_minutes(
        CronSchedule.parse("45 1 5 4 *"),
        datetime(2026, 4, 4, 13, tzinfo=UTC),
        datetime(2026, 4, 4, 17, tzinfo=UTC),
        lord_howe,
    )
    assert [fire.astimezone(lord_howe).isoformat(timespec="minutes")[5:] for fire in autumn] == ["04-05T01:45+11:00"]


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(ZONES[1:]),
    st.integers(2020, 2030),
    st.data(),
    cron_fields(0),
    st.one_of(st.just("*"), cron_fields(1)),
)
def test_around_a_transition_each_wall_time_fires_once_or_follows_the_clock(
    zone_name: str, year: int, data: st.DataObject, minutes: str, hours: str
) -> None:
    zone = ZoneInfo(zone_name)
    changes = transitions(zone, year)
    assume(changes)
    change = data.draw(st.sampled_from(changes))
    after = change - timedelta(minutes=data.draw(st.integers(1, 200)))
    until = change + timedelta(minutes=data.draw(st.integers(0, 200)))
    schedule = CronSchedule.parse(f"{minutes} {hours} * * *")
    every_hour = schedule.hours == frozenset(range(24))
    # Walk the matching wall times with croniter and place each on the time line.
    expected: set[datetime] = set()
    walls = every_wall_time(schedule, (after - timedelta(hours=6)).astimezone(zone).replace(tzinfo=None))
    while (wall := walls.get_next(datetime)) < (until + timedelta(hours=6)).astimezone(zone).replace(tzinfo=None):
        instants = instants_of(wall, zone)
        if every_hour:
            expected.update(instants)  # every pass of the wall time, none if it was skipped
        elif instants:
            expected.add(instants[0])  # the first pass only
        else:  # skipped: the first wall time after the gap that exists
            shown = wall
            while not instants_of(shown, zone):
                shown += MINUTE
            expected.add(instants_of(shown, zone)[0])
    assert fire_minutes(schedule, after, until, zone) == sorted(i for i in expected if after < i <= until)
