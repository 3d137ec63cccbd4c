"""What a transaction's `Tally` adds to the analytics counters for each thing that happens to an instance, a step
or an A/B assignment: changes net out within a transaction, nothing is counted twice, and rows come in key order."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from kalcifer_common.analytics import FLOW_ITSELF, CounterName
from kalcifer_engine.domain.tallies import (
    Assignment,
    Cohort,
    ConversionRecorded,
    CounterKey,
    StepFacts,
    Tally,
)

TENANT, FLOW = uuid.uuid4(), uuid.uuid4()
MONDAY = datetime(2026, 3, 2, 23, 59, 59, tzinfo=UTC)
COHORT = Cohort.of(TENANT, FLOW, 1, MONDAY)


def _flow(counter: str, version: int = 1, day: date | None = None) -> CounterKey:
    return CounterKey(FLOW, FLOW_ITSELF, counter, day or MONDAY.date(), version)


def _values(tally: Tally) -> dict[CounterKey, int | Decimal]:
    return {key: amount for _, key, amount in tally.rows()}


def test_an_instance_that_enters_and_waits_in_one_run_counts_entered_and_waiting_only() -> None:
    tally = Tally()
    tally.instance_entered(COHORT)
    tally.status_changed(COHORT, "running", "waiting")
    assert _values(tally) == {_flow(CounterName.ENTERED): 1, _flow("waiting"): 1}


def test_a_status_change_moves_one_instance_between_status_counters_of_its_enter_day() -> None:
    tally = Tally()
    tally.status_changed(Cohort.of(TENANT, FLOW, 1, MONDAY + timedelta(days=3)), "waiting", "completed", 4)
    thursday = (MONDAY + timedelta(days=3)).date()
    assert _values(tally) == {_flow("waiting", day=thursday): -4, _flow("completed", day=thursday): 4}
    tally.status_changed(COHORT, "paused", "paused")
    assert len(tally.rows()) == 2, "no change, no counter"


def test_a_migrated_instance_takes_everything_it_counts_to_its_new_version() -> None:
    tally = Tally()
    tally.version_changed(COHORT, 2, status="waiting", converted=True)
    assert _values(tally) == {
        _flow(CounterName.ENTERED): -1,
        _flow("waiting"): -1,
        _flow(CounterName.CONVERTED): -1,
        _flow(CounterName.ENTERED, 2): 1,
        _flow("waiting", 2): 1,
        _flow(CounterName.CONVERTED, 2): 1,
    }


def test_a_wait_step_counts_waiting_then_its_outcome_branch_and_time_under_its_start_day() -> None:
    started = MONDAY
    waiting = StepFacts("hold", "wait_for_event", 1, started, "waiting")
    resolved = StepFacts(
        "hold", "wait_for_event", 1, started, "completed", {"branch": "event_received"}, started + timedelta(hours=2)
    )
    tally = Tally()
    tally.step_written(TENANT, FLOW, waiting)
    tally.step_changed(TENANT, FLOW, resolved, "waiting")
    day = started.date()
    assert _values(tally) == {
        CounterKey(FLOW, "hold", CounterName.STEP_ENTERED, day, 1, "wait_for_event"): 1,
        CounterKey(FLOW, "hold", CounterName.STEP_COMPLETED, day, 1): 1,
        CounterKey(FLOW, "hold", CounterName.STEP_BRANCH, day, 1, "event_received"): 1,
        # 2 h is 7.2e6 ms; the bounds 1 ms * 2^(i/4) for i = 0..91 lie below it (4 * log2(7.2e6) = 91.1).
        CounterKey(FLOW, "hold", CounterName.STEP_TIME, day, 1, "92"): 1,
    }


def test_a_cancelled_wait_has_no_time_at_its_node() -> None:
    cancelled = StepFacts("hold", "wait", 1, MONDAY, "cancelled", None, MONDAY + timedelta(minutes=5))
    tally = Tally()
    tally.step_changed(TENANT, FLOW, cancelled, "waiting")
    assert {key.counter for key in _values(tally)} == {CounterName.STEP_WAITING, CounterName.STEP_CANCELLED}


def test_a_conversion_counts_the_instance_once_and_each_assignment_it_follows() -> None:
    assignment = Assignment("ab", "b", 1, MONDAY - timedelta(days=1))
    tally = Tally()
    first = ConversionRecorded(inserted=True, converted_before=False, assignments=((assignment, True),))
    again = ConversionRecorded(inserted=True, converted_before=True, assignments=((assignment, False),))
    duplicate_goal = ConversionRecorded(inserted=False, converted_before=True, assignments=((assignment, False),))
    tally.conversion_recorded(COHORT, first, Decimal("4.5"))
    tally.conversion_recorded(COHORT, again, Decimal("10"))
    tally.conversion_recorded(COHORT, duplicate_goal, Decimal("99"))
    sunday = assignment.assign_time.date()
    assert _values(tally) == {
        _flow(CounterName.CONVERTED): 1,
        CounterKey(FLOW, "ab", CounterName.AB_CONVERSIONS, sunday, 1, "b"): 1,
        CounterKey(FLOW, "ab", CounterName.AB_REVENUE, sunday, 1, "b"): Decimal("14.5"),
    }


def test_tallies_merge_and_list_their_rows_in_key_order_without_zeros() -> None:
    one, other = Tally(), Tally()
    one.node_reached(COHORT, "z", 1)
    other.node_reached(COHORT, "a", 1)
    other.status_changed(COHORT, "running", "waiting")
    other.status_changed(COHORT, "waiting", "running")
    one.extend(other)
    assert [key.node_id for _, key, _ in one.rows()] == ["a", "z"]
    assert all(tenant == TENANT for tenant, _, _ in one.rows())
    assert not Tally()
