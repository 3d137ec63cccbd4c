"""AnalyticsService's rules (`kalcifer_api.domain.analytics`): which scopes are asked correctly, and the figures
made from summed counters (rates, node stats with percentiles, funnels, A/B variants with their z-test)."""

from __future__ import annotations

import statistics
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from kalcifer_api.domain.analytics import (
    CounterSum,
    FlowGraphs,
    ab_results,
    flow_summary,
    funnel,
    funnel_node_violations,
    node_stats,
    scope_violations,
    two_proportion_p_value,
)
from kalcifer_common.analytics import CounterName, bucket_estimate, time_bucket
from kalcifer_common.errors import FieldViolation

DAY = date(2026, 3, 2)


def _sum(node_id: str, counter: str, value: int | str, label: str = "", last_day: date = DAY) -> CounterSum:
    return CounterSum(node_id, counter, label, Decimal(value), last_day)


def test_a_scope_is_whole_utc_days_and_a_version_not_below_zero() -> None:
    midnight = datetime(2026, 3, 1, tzinfo=UTC)
    found: list[FieldViolation] = []
    scope = scope_violations(uuid.uuid4(), 2, midnight, midnight + timedelta(days=3), found)
    assert found == []
    assert scope is not None
    assert (scope.first_day, scope.end_day, scope.version_number) == (date(2026, 3, 1), date(2026, 3, 4), 2)
    found = []
    paris_midnight = datetime(2026, 3, 1, tzinfo=UTC) - timedelta(hours=1)
    assert scope_violations(uuid.uuid4(), -1, paris_midnight, paris_midnight - timedelta(days=1), found) is None
    assert [v.field for v in found] == ["version_number", "start_time", "end_time", "end_time"]


def test_a_funnel_names_one_to_twenty_distinct_nodes() -> None:
    assert funnel_node_violations(["a", "b"]) == []
    assert [v.field for v in funnel_node_violations([])] == ["node_ids"]
    assert [v.field for v in funnel_node_violations(["a"] * 21)] == ["node_ids"]
    assert [v.field for v in funnel_node_violations(["a", "", "a"])] == ["node_ids[1]", "node_ids[2]"]


def test_the_summary_rate_is_converted_over_entered() -> None:
    summary = flow_summary(
        [_sum("", CounterName.ENTERED, 8), _sum("", "waiting", 3), _sum("", CounterName.CONVERTED, 2)]
    )
    assert (summary.entered, summary.waiting, summary.converted, summary.conversion_rate) == (8, 3, 2, 0.25)
    assert flow_summary([]).conversion_rate == 0.0


def test_node_stats_read_percentiles_from_buckets_and_the_newest_type() -> None:
    fast, slow = time_bucket(timedelta(milliseconds=2)), time_bucket(timedelta(seconds=30))
    stats = node_stats(
        [
            _sum("w", CounterName.STEP_ENTERED, 3, "wait", DAY - timedelta(days=1)),
            _sum("w", CounterName.STEP_ENTERED, 1, "wait_for_event", DAY),
            _sum("w", CounterName.STEP_COMPLETED, 4),
            _sum("w", CounterName.STEP_BRANCH, 4, "event_received"),
            _sum("w", CounterName.STEP_TIME, 18, str(fast)),
            _sum("w", CounterName.STEP_TIME, 2, str(slow)),
            _sum("gone", CounterName.STEP_WAITING, 0),
        ]
    )
    assert [s.node_id for s in stats] == ["w"]
    (w,) = stats
    assert (w.node_type, w.entered, w.completed, w.branches) == ("wait_for_event", 4, 4, {"event_received": 4})
    assert (w.median_time, w.p95_time) == (bucket_estimate(fast), bucket_estimate(slow))


def test_funnel_rates_are_relative_to_the_first_step() -> None:
    steps = funnel(["a", "b", "c"], [_sum("a", CounterName.REACHED, 10), _sum("b", CounterName.REACHED, 4)])
    assert [(s.count, s.conversion_rate) for s in steps] == [(10, 1.0), (4, 0.4), (0, 0.0)]
    assert [s.conversion_rate for s in funnel(["a", "b"], [])] == [0.0, 0.0]


def test_the_z_test_agrees_with_a_textbook_two_proportion_test() -> None:
    p_value = two_proportion_p_value(200, 1000, 250, 1000)
    assert p_value is not None
    pooled = 450 / 2000
    z = (0.25 - 0.2) / (pooled * (1 - pooled) * (2 / 1000)) ** 0.5
    assert p_value == pytest.approx(2 * (1 - statistics.NormalDist().cdf(z)))
    assert p_value == pytest.approx(0.00742, abs=1e-5)
    assert two_proportion_p_value(0, 10, 0, 12) == 1.0
    assert two_proportion_p_value(5, 0, 1, 3) is None


def test_ab_results_follow_the_config_then_other_variants_each_against_the_first() -> None:
    sums = [
        _sum("ab", CounterName.AB_PARTICIPANTS, 100, "a"),
        _sum("ab", CounterName.AB_CONVERSIONS, 10, "a"),
        _sum("ab", CounterName.AB_PARTICIPANTS, 100, "old"),
        _sum("ab", CounterName.AB_REVENUE, "12.5", "old"),
    ]
    results = ab_results(["a", "b"], sums)
    assert [(r.key, r.participants, r.conversions, r.revenue) for r in results] == [
        ("a", 100, 10, Decimal(0)),
        ("b", 0, 0, Decimal(0)),
        ("old", 100, 0, Decimal("12.5")),
    ]
    assert [r.p_value is None for r in results] == [True, True, False]
    assert results[0].conversion_rate == 0.1


def test_ab_variants_come_from_the_newest_version_where_the_node_splits() -> None:
    v1 = {"nodes": [{"id": "ab", "type": "ab_split", "config": {"variants": [{"key": "x"}, {"key": "y"}]}}]}
    v2 = {"nodes": [{"id": "ab", "type": "condition", "config": {}}, {"id": "c", "type": "exit"}]}
    graphs = FlowGraphs([(2, v2), (1, v1)])
    assert graphs.ab_variants("ab") == ["x", "y"]
    assert graphs.ab_variants("c") is None
    assert graphs.node_ids() == {"ab", "c"}
