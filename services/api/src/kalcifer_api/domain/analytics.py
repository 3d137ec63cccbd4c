"""AnalyticsService as plain Python: what a request may ask, and the figures made from summed counters.

The engine keeps the counters (`kalcifer_common.analytics` says what each counts and under which day and version);
the API sums their shards over the days and version asked for (`repo.analytics`) and makes the answers here:
rates, percentiles of the times at a node from their log buckets, and a two-proportion z-test per A/B variant.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from kalcifer_common.analytics import (
    CounterName,
    bucket_estimate,
    percentile_bucket,
    step_counter,
)
from kalcifer_common.errors import FieldViolation
from kalcifer_common.statuses import InstanceStatus, StepStatus

MAX_FUNNEL_NODES = 20
AB_SPLIT = "ab_split"


@dataclass(frozen=True, slots=True)
class AnalyticsScope:
    """Whose counters to sum: one flow of the caller, one version (0 = all), UTC days [first_day, end_day)."""

    flow_id: uuid.UUID
    version_number: int = 0
    first_day: date | None = None
    end_day: date | None = None


def _day_bound(moment: datetime | None, field_name: str, violations: list[FieldViolation]) -> date | None:
    if moment is None:
        return None
    utc = moment.astimezone(UTC)
    if utc.timetz() != time(0, tzinfo=UTC):
        violations.append(
            FieldViolation(field_name, f"{utc.isoformat()} is not a UTC midnight (analytics are kept per UTC day)")
        )
        return None
    return utc.date()


def scope_violations(
    flow_id: uuid.UUID | None,
    version_number: int,
    start_time: datetime | None,
    end_time: datetime | None,
    violations: list[FieldViolation],
) -> AnalyticsScope | None:
    """The scope of a request, or None with its problems added to `violations` (the servicer has parsed the flow
    id and the timestamps, adding their own)."""
    if version_number < 0:
        violations.append(FieldViolation("version_number", "must not be negative (0 = all versions)"))
    first_day = _day_bound(start_time, "start_time", violations)
    end_day = _day_bound(end_time, "end_time", violations)
    if start_time is not None and end_time is not None and end_time < start_time:
        violations.append(FieldViolation("end_time", "must not be before start_time"))
    if violations or flow_id is None:
        return None
    return AnalyticsScope(flow_id, version_number, first_day, end_day)


def funnel_node_violations(node_ids: Sequence[str]) -> list[FieldViolation]:
    """A funnel names 1 to 20 distinct, non-empty node ids."""
    if not node_ids:
        return [FieldViolation("node_ids", "is required (1 to 20 node ids, in funnel order)")]
    if len(node_ids) > MAX_FUNNEL_NODES:
        return [FieldViolation("node_ids", f"must name at most {MAX_FUNNEL_NODES} nodes")]
    found: list[FieldViolation] = []
    first_at: dict[str, int] = {}
    for index, node_id in enumerate(node_ids):
        if not node_id:
            found.append(FieldViolation(f"node_ids[{index}]", "must not be empty"))
        elif node_id in first_at:
            found.append(FieldViolation(f"node_ids[{index}]", f"repeats node_ids[{first_at[node_id]}]"))
        else:
            first_at[node_id] = index
    return found


@dataclass(frozen=True, slots=True)
class FlowGraphs:
    """The graphs of the flow's versions asked about (one version, or all), newest first."""

    graphs: Sequence[tuple[int, Mapping[str, Any]]]

    def _nodes(self) -> list[tuple[int, Mapping[str, Any]]]:
        found: list[tuple[int, Mapping[str, Any]]] = []
        for version_number, graph in self.graphs:
            nodes = graph.get("nodes")
            for node in nodes if isinstance(nodes, list) else []:
                if isinstance(node, Mapping) and isinstance(node.get("id"), str):
                    found.append((version_number, node))
        return found

    def node_ids(self) -> set[str]:
        """Every node id of these versions."""
        return {str(node["id"]) for _, node in self._nodes()}

    def ab_variants(self, node_id: str) -> list[str] | None:
        """The variant keys of `node_id` as an ab_split node of the newest version where it is one, in config
        order; None when it is an ab_split node in none of them."""
        for _, node in self._nodes():
            if node["id"] == node_id and node.get("type") == AB_SPLIT:
                config = node.get("config")
                variants = config.get("variants") if isinstance(config, Mapping) else None
                keys = [v.get("key") for v in variants if isinstance(v, Mapping)] if isinstance(variants, list) else []
                return list(dict.fromkeys(key for key in keys if isinstance(key, str) and key))
        return None


def unknown_node_violations(node_ids: Sequence[str], graphs: FlowGraphs, version_number: int) -> list[FieldViolation]:
    """One violation per funnel node that is not a node of the version (of any version when 0)."""
    known = graphs.node_ids()
    where = f"version {version_number}" if version_number else "any version"
    return [
        FieldViolation(f"node_ids[{index}]", f"{node_id!r} is not a node of {where} of the flow")
        for index, node_id in enumerate(node_ids)
        if node_id not in known
    ]


@dataclass(frozen=True, slots=True)
class CounterSum:
    """One counter of one node summed over shards, days and versions (`last_day`: the newest day it counts)."""

    node_id: str
    counter: str
    label: str
    value: Decimal
    last_day: date


@dataclass(frozen=True, slots=True)
class FlowSummary:
    """GetFlowSummary."""

    entered: int = 0
    running: int = 0
    waiting: int = 0
    paused: int = 0
    completed: int = 0
    failed: int = 0
    exited: int = 0
    converted: int = 0

    @property
    def conversion_rate(self) -> float:
        """converted / entered; 0 when nothing entered."""
        return self.converted / self.entered if self.entered else 0.0


SUMMARY_COUNTERS = (CounterName.ENTERED, CounterName.CONVERTED, *InstanceStatus)


def flow_summary(sums: Sequence[CounterSum]) -> FlowSummary:
    """The summary from the flow counters."""
    totals = {row.counter: int(row.value) for row in sums}
    return FlowSummary(
        entered=totals.get(CounterName.ENTERED, 0),
        running=totals.get(InstanceStatus.RUNNING, 0),
        waiting=totals.get(InstanceStatus.WAITING, 0),
        paused=totals.get(InstanceStatus.PAUSED, 0),
        completed=totals.get(InstanceStatus.COMPLETED, 0),
        failed=totals.get(InstanceStatus.FAILED, 0),
        exited=totals.get(InstanceStatus.EXITED, 0),
        converted=totals.get(CounterName.CONVERTED, 0),
    )


@dataclass(frozen=True, slots=True)
class NodeStatsRecord:
    """GetNodeStats, one node."""

    node_id: str
    node_type: str = ""
    entered: int = 0
    completed: int = 0
    failed: int = 0
    waiting: int = 0
    skipped: int = 0
    cancelled: int = 0
    branches: dict[str, int] = field(default_factory=dict)
    median_time: timedelta | None = None
    p95_time: timedelta | None = None


NODE_COUNTERS = (
    CounterName.STEP_ENTERED,
    *(step_counter(status) for status in StepStatus),
    CounterName.STEP_BRANCH,
    CounterName.STEP_TIME,
)


def node_stats(sums: Sequence[CounterSum]) -> list[NodeStatsRecord]:
    """Per-node stats from the step counters, ordered by node id; a node without steps in the range is left out."""
    by_node: dict[str, list[CounterSum]] = {}
    for row in sums:
        by_node.setdefault(row.node_id, []).append(row)
    records: list[NodeStatsRecord] = []
    for node_id in sorted(by_node):
        rows = by_node[node_id]
        entered = [row for row in rows if row.counter == CounterName.STEP_ENTERED and row.value]
        if not entered:
            continue
        totals: dict[str, int] = {}
        branches: dict[str, int] = {}
        buckets: dict[int, int] = {}
        for row in rows:
            if row.counter == CounterName.STEP_BRANCH:
                branches[row.label] = int(row.value)
            elif row.counter == CounterName.STEP_TIME:
                buckets[int(row.label)] = int(row.value)
            else:
                totals[row.counter] = totals.get(row.counter, 0) + int(row.value)
        median, p95 = percentile_bucket(buckets, 50), percentile_bucket(buckets, 95)
        records.append(
            NodeStatsRecord(
                node_id=node_id,
                node_type=max(entered, key=lambda row: (row.last_day, row.value)).label,
                entered=totals.get(CounterName.STEP_ENTERED, 0),
                completed=totals.get(CounterName.STEP_COMPLETED, 0),
                failed=totals.get(CounterName.STEP_FAILED, 0),
                waiting=totals.get(CounterName.STEP_WAITING, 0),
                skipped=totals.get(CounterName.STEP_SKIPPED, 0),
                cancelled=totals.get(CounterName.STEP_CANCELLED, 0),
                branches={key: count for key, count in sorted(branches.items()) if count},
                median_time=None if median is None else bucket_estimate(median),
                p95_time=None if p95 is None else bucket_estimate(p95),
            )
        )
    return records


@dataclass(frozen=True, slots=True)
class FunnelStepRecord:
    """GetFunnel, one step."""

    node_id: str
    count: int
    conversion_rate: float


def funnel(node_ids: Sequence[str], sums: Sequence[CounterSum]) -> list[FunnelStepRecord]:
    """The funnel's steps in request order, from the `reached` counters."""
    reached: dict[str, int] = {}
    for row in sums:
        reached[row.node_id] = reached.get(row.node_id, 0) + int(row.value)
    counts = [reached.get(node_id, 0) for node_id in node_ids]
    first = counts[0] if counts else 0
    return [
        FunnelStepRecord(node_id, count, (1.0 if index == 0 else count / first) if first else 0.0)
        for index, (node_id, count) in enumerate(zip(node_ids, counts, strict=True))
    ]


@dataclass(frozen=True, slots=True)
class AbVariantRecord:
    """GetAbResults, one variant."""

    key: str
    participants: int = 0
    conversions: int = 0
    revenue: Decimal = Decimal(0)
    p_value: float | None = None

    @property
    def conversion_rate(self) -> float:
        """conversions / participants; 0 without participants."""
        return self.conversions / self.participants if self.participants else 0.0


AB_COUNTERS = (CounterName.AB_PARTICIPANTS, CounterName.AB_CONVERSIONS, CounterName.AB_REVENUE)


def two_proportion_p_value(base_conversions: int, base_total: int, conversions: int, total: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test of conversions/total against base_conversions/
    base_total; None when either has no participants, 1.0 when the pooled rate is 0 or 1."""
    if base_total <= 0 or total <= 0:
        return None
    pooled = (base_conversions + conversions) / (base_total + total)
    variance = pooled * (1 - pooled) * (1 / base_total + 1 / total)
    if variance <= 0:
        return 1.0
    z = (conversions / total - base_conversions / base_total) / math.sqrt(variance)
    return math.erfc(abs(z) / math.sqrt(2))


def ab_results(variants: Sequence[str], sums: Sequence[CounterSum]) -> list[AbVariantRecord]:
    """Per-variant results in config order (then other variants that have counters, by key), each tested against
    the first."""
    totals: dict[str, dict[str, Decimal]] = {}
    for row in sums:
        per_variant = totals.setdefault(row.label, {})
        per_variant[row.counter] = per_variant.get(row.counter, Decimal(0)) + row.value
    others = sorted(key for key, values in totals.items() if key not in variants and any(values.values()))
    records: list[AbVariantRecord] = []
    for key in [*variants, *others]:
        values = totals.get(key, {})
        participants = int(values.get(CounterName.AB_PARTICIPANTS, 0))
        conversions = int(values.get(CounterName.AB_CONVERSIONS, 0))
        p_value = None
        if records:
            base = records[0]
            p_value = two_proportion_p_value(base.conversions, base.participants, conversions, participants)
        records.append(
            AbVariantRecord(key, participants, conversions, values.get(CounterName.AB_REVENUE, Decimal(0)), p_value)
        )
    return records
