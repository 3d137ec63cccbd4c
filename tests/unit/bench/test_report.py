"""bench/results/latest.json has the objects issue #11 asks for, built from synthetic samples (no benchmark runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.harness import Comparison, RunReport
from bench.report import (
    assemble,
    event_resume_figure,
    event_resume_rounds_figure,
    throughput_figure,
    timer_figure,
    waiting_memory_figure,
    write_latest,
)

REQUIRED: dict[str, set[str]] = {
    "trigger_throughput": {"value", "baseline", "ratio"},
    "event_resume": {"rate_per_s", "p50_ms", "p99_ms", "errors"},
    "event_resume_500": {"rate_per_s", "p50_ms", "p99_ms", "errors"},
    "timer_lateness": {"offered_per_s", "p50_ms", "p99_ms", "early", "raw_arq_p99_ms"},
    "waiting_memory": {"engine_rss_growth_mb_per_100k", "db_bytes_per_waiting_instance"},
}


def _report(lateness_ms: list[float]) -> RunReport:
    report = RunReport()
    figures = report.figures
    figures["trigger_throughput"] = throughput_figure(400.0, 1000.0)
    figures["event_resume"] = event_resume_figure(200, [float(n) for n in range(1, 101)], 0)
    figures["event_resume_500"] = event_resume_figure(500, [float(n) for n in range(1, 201)], 3)
    figures["timer_lateness"] = timer_figure(1000, lateness_ms, [5.0] * 100)
    figures["waiting_memory"] = waiting_memory_figure(4 * 2**20, 20_000 * 3000, 20_000)
    figures["temporal"] = {
        "server": "temporal x",
        "trigger_throughput": {"value": 100.0},
        "event_resume": {"p50_ms": 20.0, "p99_ms": 40.0},
        "event_resume_500": {"p50_ms": 30.0, "p99_ms": 80.0},
        "timer_lateness": {"p50_ms": 50.0, "p99_ms": 500.0},
    }
    return report


def _written(report: RunReport, tmp_path: Path, rows: list[Comparison] | None = None) -> dict[str, Any]:
    payload = assemble(report, rows or [], {"duration_s": 600})
    loaded: dict[str, Any] = json.loads(write_latest(payload, tmp_path / "latest.json").read_text())
    return loaded


def test_latest_json_has_every_required_object_and_field(tmp_path: Path) -> None:
    latest = _written(_report([10.0] * 100), tmp_path)

    for name, fields in REQUIRED.items():
        assert fields <= latest[name].keys(), f"{name} lacks {fields - latest[name].keys()}"
    assert latest["trigger_throughput"]["ratio"] == 0.4
    assert latest["event_resume"]["p50_ms"] == 50.0
    assert latest["event_resume"]["p99_ms"] == 99.0
    assert latest["event_resume_500"]["errors"] == 3
    assert latest["waiting_memory"]["engine_rss_growth_mb_per_100k"] == 20.0
    assert latest["waiting_memory"]["db_bytes_per_waiting_instance"] == 3000


def test_every_temporal_workload_gets_ours_theirs_and_a_ratio(tmp_path: Path) -> None:
    temporal = _written(_report([10.0] * 100), tmp_path)["temporal"]

    assert temporal["trigger_throughput.value"] == {
        "ours": 400.0,
        "theirs": 100.0,
        "ratio": 4.0,
        "unit": "instances/s",
        "higher_is_better": True,
    }
    assert temporal["timer_lateness.p99_ms"]["ratio"] == 0.02
    assert temporal["event_resume_500.p99_ms"]["theirs"] == 80.0
    assert temporal["server"] == "temporal x"


def test_targets_are_judged_pass_or_fail(tmp_path: Path) -> None:
    verdicts = {v["figure"]: v["pass"] for v in _written(_report([10.0] * 100), tmp_path)["targets"]}

    assert verdicts == {
        "trigger_throughput.ratio": False,  # 0.4 < 0.5
        "event_resume.p99_ms": False,  # 99 ms > 50 ms
        "timer_lateness.p99_ms": True,
        "waiting_memory.engine_rss_growth_mb_per_100k": True,
        "waiting_memory.db_bytes_per_waiting_instance": True,
        "temporal": True,
        "run.duration_s": True,
    }


def test_an_early_timer_is_counted_and_fails_its_target(tmp_path: Path) -> None:
    latest = _written(_report([10.0] * 99 + [-1.0]), tmp_path)

    assert latest["timer_lateness"]["early"] == 1
    assert {v["figure"]: v["pass"] for v in latest["targets"]}["timer_lateness.p99_ms"] is False


def test_unavailable_temporal_is_reported_as_such_and_fails_its_target(tmp_path: Path) -> None:
    report = _report([10.0] * 100)
    report.figures["temporal"] = {"unavailable": "no temporal CLI"}

    latest = _written(report, tmp_path)

    assert latest["temporal"] == {"unavailable": "no temporal CLI"}
    assert {v["figure"]: v["pass"] for v in latest["targets"]}["temporal"] is False


def test_figures_not_measured_are_not_judged_and_nan_is_written_as_null(tmp_path: Path) -> None:
    report = RunReport()
    rows = [Comparison("x", "ms", math.nan, 1.0, "b", higher_is_better=False)]

    latest = _written(report, tmp_path, rows)

    assert {v["figure"]: v["pass"] for v in latest["targets"]}["trigger_throughput.ratio"] is None
    assert latest["comparisons"][0]["ours"] is None
    assert latest["comparisons"][0]["ratio"] is None


def test_event_resume_over_rounds_takes_the_medians_of_the_rounds() -> None:
    calm = [float(n) for n in range(1, 101)]  # p50 50, p99 99
    calmer = [n / 2 for n in calm]  # p50 25, p99 49.5
    stormy = [*calm[:-2], 900.0, 1000.0]  # p99 900: one round's tail
    figure = event_resume_rounds_figure(200, [calm, stormy, calmer], 1)

    assert (figure["p50_ms"], figure["p99_ms"]) == (50.0, 99.0)
    assert figure["max_ms"] == 1000.0
    assert figure["count"] == 300
    assert figure["errors"] == 1
    assert [round_["p99_ms"] for round_ in figure["rounds"]] == [99.0, 900.0, 49.5]
