"""What every benchmark shares: a measured figure next to its raw baseline, a printed table, a JSON record.

A benchmark module exposes `async def run(env: BenchEnv) -> list[Comparison]`; `python -m bench` runs them all
(or the ones named on the command line), prints one table and writes `bench/results/<name>.json`, an artefact
of that run (git ignores it; the README keeps a dated table of the latest figures).
The machine is shared and noisy: report medians (and p99 where the tail matters), and always the ratio to a
baseline measured in the same run, never an absolute target alone.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


@dataclass
class RunReport:
    """What the benchmarks of one run measured for `bench/results/latest.json` (see report.py): figure objects by
    name, and raw latency samples (ms) by series for the plot."""

    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchEnv:
    """Where a benchmark may put its load: a scratch database and Redis db of its own (dropped afterwards), and
    the run's report, which later benchmarks of the same run may read (Temporal is compared with our figures)."""

    database_url: str
    redis_url: str
    work_dir: Path
    report: RunReport = field(default_factory=RunReport)


@dataclass(frozen=True)
class Comparison:
    """One figure of ours next to the raw baseline it is judged against (same unit, same run)."""

    name: str
    unit: str
    ours: float
    baseline: float
    baseline_name: str
    higher_is_better: bool = True
    extra: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """ours / baseline (1.0 = as good as the raw baseline when higher is better)."""
        return self.ours / self.baseline if self.baseline else float("inf")


def median(values: Sequence[float]) -> float:
    """The median, 0.0 for no values."""
    return statistics.median(values) if values else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank, 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    # the smallest value with at least q% of the values at or below it (q * n first: 0.99 * 100 is not 99.0)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered) / 100) - 1))
    return ordered[rank]


def table(rows: Sequence[Comparison]) -> str:
    """A plain-text table of comparisons."""
    width = max([44, *(len(row.name) for row in rows)])
    header = f"{'benchmark':<{width}} {'ours':>12} {'baseline':>12} {'ratio':>7}  unit / baseline"
    lines = [header, "-" * len(header)]
    for row in rows:
        figures = f"{row.ours:>12.2f} {row.baseline:>12.2f} {row.ratio:>7.2f}"
        lines.append(f"{row.name:<{width}} {figures}  {row.unit} / {row.baseline_name}")
    return "\n".join(lines)


def write_results(name: str, rows: Sequence[Comparison]) -> Path:
    """Write `bench/results/<name>.json` and return its path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = [asdict(row) | {"ratio": row.ratio} for row in rows]
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
