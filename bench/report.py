"""`bench/results/latest.json`: the figures of one `make bench` run, shaped as issue #11 asks, with their targets.

Benchmarks put their figures into a `RunReport` (one object per figure: `trigger_throughput`, `event_resume`,
`timer_lateness`, ...) and their raw latency samples (for the plot); `assemble` adds the run's metadata, the
pass/fail of every target and every benchmark's comparison rows, and `write_latest` writes it. The summaries here
are pure functions of samples so that a unit test can check the JSON's shape without running a benchmark.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.harness import RESULTS_DIR, Comparison, RunReport, percentile

LATEST_PATH = RESULTS_DIR / "latest.json"

# The workloads compared with Temporal, each (figure, field, unit, higher is better).
TEMPORAL_WORKLOADS: tuple[tuple[str, str, str, bool], ...] = (
    ("trigger_throughput", "value", "instances/s", True),
    ("event_resume", "p50_ms", "ms", False),
    ("event_resume", "p99_ms", "ms", False),
    ("event_resume_500", "p50_ms", "ms", False),
    ("event_resume_500", "p99_ms", "ms", False),
    ("timer_lateness", "p50_ms", "ms", False),
    ("timer_lateness", "p99_ms", "ms", False),
)


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """count, p50, p99 and max of latencies in ms (0.0 for none), rounded to 0.01 ms."""
    return {
        "count": len(samples_ms),
        "p50_ms": round(percentile(samples_ms, 50), 2),
        "p99_ms": round(percentile(samples_ms, 99), 2),
        "max_ms": round(max(samples_ms, default=0.0), 2),
    }


def ratio(ours: float, theirs: float) -> float | None:
    """ours / theirs, None when there is nothing to divide by (JSON has no infinity)."""
    if not theirs or math.isnan(theirs) or math.isnan(ours):
        return None
    return round(ours / theirs, 3)


def throughput_figure(value: float, baseline: float, **extra: Any) -> dict[str, Any]:
    """`trigger_throughput`: {value, baseline, ratio} plus whatever explains them."""
    return {"value": round(value, 1), "baseline": round(baseline, 1), "ratio": ratio(value, baseline), **extra}


def event_resume_figure(rate_per_s: float, latencies_ms: Sequence[float], errors: int, **extra: Any) -> dict[str, Any]:
    """`event_resume`: the offered rate, p50/p99 of the answered calls (from their scheduled send), errors."""
    return {"rate_per_s": rate_per_s, **latency_summary(latencies_ms), "errors": errors, **extra}


def event_resume_rounds_figure(
    rate_per_s: float, rounds_ms: Sequence[Sequence[float]], errors: int, **extra: Any
) -> dict[str, Any]:
    """`event_resume` over several rounds at one rate: p50 and p99 are the medians of the rounds' own (the machine
    is shared: one round's tail can be another process's burst), `max_ms` the largest of all, every round listed."""
    summaries = [latency_summary(samples) for samples in rounds_ms]
    return {
        "rate_per_s": rate_per_s,
        "count": sum(int(summary["count"]) for summary in summaries),
        "p50_ms": round(statistics.median(float(summary["p50_ms"]) for summary in summaries), 2),
        "p99_ms": round(statistics.median(float(summary["p99_ms"]) for summary in summaries), 2),
        "max_ms": max((float(summary["max_ms"]) for summary in summaries), default=0.0),
        "errors": errors,
        "rounds": [{key: summary[key] for key in ("count", "p50_ms", "p99_ms", "max_ms")} for summary in summaries],
        **extra,
    }


def timer_figure(
    offered_per_s: float, lateness_ms: Sequence[float], raw_arq_lateness_ms: Sequence[float], **extra: Any
) -> dict[str, Any]:
    """`timer_lateness`: p50/p99 from fire time to the resumed step, `early` (< 0), raw arq's p50/p99 alongside."""
    raw = latency_summary(raw_arq_lateness_ms)
    return {
        "offered_per_s": offered_per_s,
        **latency_summary(lateness_ms),
        "early": sum(1 for value in lateness_ms if value < 0),
        "raw_arq_p50_ms": raw["p50_ms"],
        "raw_arq_p99_ms": raw["p99_ms"],
        "raw_arq_early": sum(1 for value in raw_arq_lateness_ms if value < 0),
        **extra,
    }


def waiting_memory_figure(
    rss_growth_bytes: float, db_growth_bytes: float, instances: int, **extra: Any
) -> dict[str, Any]:
    """`waiting_memory`: engine RSS growth per 100k waiting instances (MB) and database bytes per instance."""
    return {
        "engine_rss_growth_mb_per_100k": round(rss_growth_bytes / 2**20 * 100_000 / instances, 1),
        "db_bytes_per_waiting_instance": round(db_growth_bytes / instances),
        "instances": instances,
        **extra,
    }


def temporal_comparison(ours: Mapping[str, Mapping[str, Any]], theirs: Mapping[str, Any]) -> dict[str, Any]:
    """Temporal's figures next to ours from the same run: one {ours, theirs, ratio (ours/theirs)} per workload.

    `theirs` is what the Temporal benchmark measured (the same figure objects as ours, plus `server`/`sdk`), or
    {"unavailable": reason}; a workload either side did not measure gets ratio None.
    """
    if "unavailable" in theirs:
        return dict(theirs)
    compared: dict[str, Any] = {key: value for key, value in theirs.items() if not isinstance(value, dict)}
    for figure, name, unit, higher_is_better in TEMPORAL_WORKLOADS:
        mine = ours.get(figure, {}).get(name)
        other = theirs.get(figure, {}).get(name)
        compared[f"{figure}.{name}"] = {
            "ours": mine,
            "theirs": other,
            "ratio": ratio(mine, other) if mine is not None and other is not None else None,
            "unit": unit,
            "higher_is_better": higher_is_better,
        }
    compared["measured"] = {key: value for key, value in theirs.items() if isinstance(value, dict)}
    return compared


@dataclass(frozen=True)
class Target:
    """A goal of issue #11 for a figure of latest.json, judged pass/fail on each run."""

    figure: str
    goal: str
    check: Callable[[Mapping[str, Any]], bool | None]  # None: not measured in this run


def _get(figures: Mapping[str, Any], path: str) -> Any:
    value: Any = figures
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _at_most(path: str, limit: float) -> Callable[[Mapping[str, Any]], bool | None]:
    def check(figures: Mapping[str, Any]) -> bool | None:
        value = _get(figures, path)
        return None if value is None else bool(value <= limit)

    return check


def _at_least(path: str, limit: float) -> Callable[[Mapping[str, Any]], bool | None]:
    def check(figures: Mapping[str, Any]) -> bool | None:
        value = _get(figures, path)
        return None if value is None else bool(value >= limit)

    return check


def _timer_target(figures: Mapping[str, Any]) -> bool | None:
    timer = figures.get("timer_lateness")
    if not timer:
        return None
    return bool(timer["offered_per_s"] >= 1000 and timer["p99_ms"] <= 250 and timer["early"] == 0)


def _event_target(figures: Mapping[str, Any]) -> bool | None:
    event = figures.get("event_resume")
    if not event:
        return None
    return bool(event["rate_per_s"] >= 200 and event["p99_ms"] <= 50 and event["errors"] == 0)


def _temporal_target(figures: Mapping[str, Any]) -> bool | None:
    temporal = figures.get("temporal")
    if not temporal:
        return None
    if "unavailable" in temporal:
        return False
    return all(
        isinstance(temporal.get(f"{figure}.{name}"), Mapping) and temporal[f"{figure}.{name}"]["ratio"] is not None
        for figure, name, _, _ in TEMPORAL_WORKLOADS
    )


TARGETS: tuple[Target, ...] = (
    Target("trigger_throughput.ratio", ">= 0.5", _at_least("trigger_throughput.ratio", 0.5)),
    Target("event_resume.p99_ms", "<= 50 at >= 200/s offered, 0 errors", _event_target),
    Target("timer_lateness.p99_ms", "<= 250 at >= 1,000/s offered, early = 0", _timer_target),
    Target(
        "waiting_memory.engine_rss_growth_mb_per_100k",
        "<= 50",
        _at_most("waiting_memory.engine_rss_growth_mb_per_100k", 50),
    ),
    Target(
        "waiting_memory.db_bytes_per_waiting_instance",
        "<= 4,096",
        _at_most("waiting_memory.db_bytes_per_waiting_instance", 4096),
    ),
    Target("temporal", "every ratio reported", _temporal_target),
    Target("run.duration_s", "<= 1,500 (make bench within 25 minutes)", _at_most("run.duration_s", 1500)),
)


def judge(figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target with its current value and pass (true/false), or null when this run did not measure it."""
    verdicts: list[dict[str, Any]] = []
    for target in TARGETS:
        value = _get(figures, target.figure)
        shown = value if not isinstance(value, Mapping) else None
        verdicts.append({"figure": target.figure, "target": target.goal, "value": shown, "pass": target.check(figures)})
    return verdicts


def assemble(report: RunReport, comparisons: Sequence[Comparison], run: Mapping[str, Any]) -> dict[str, Any]:
    """The whole latest.json: run metadata, the figures, the targets judged, every comparison row of the run."""
    figures: dict[str, Any] = {"run": dict(run), **report.figures}
    if "temporal" in figures:
        figures["temporal"] = temporal_comparison(report.figures, figures["temporal"])
    figures["targets"] = judge(figures)
    figures["comparisons"] = [asdict(row) | {"ratio": ratio(row.ours, row.baseline)} for row in comparisons]
    return figures


def targets_table(verdicts: Sequence[Mapping[str, Any]]) -> str:
    """The targets as printed after the benchmarks' table."""
    lines = [
        "target                                          goal                                      value   verdict"
    ]
    for verdict in verdicts:
        state = {True: "pass", False: "FAIL", None: "not measured"}[verdict["pass"]]
        value = "" if verdict["value"] is None else f"{verdict['value']}"
        lines.append(f"{verdict['figure']:<47} {verdict['target']:<41} {value:>7}   {state}")
    return "\n".join(lines)


def write_latest(payload: Mapping[str, Any], path: Path = LATEST_PATH) -> Path:
    """Write latest.json (NaN and infinities become null: strict JSON readers refuse them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(payload), indent=2, default=str) + "\n")
    return path


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
