"""`bench/results/latency.png`: the latency distributions of a run, as cumulative distributions on a log scale.

A CDF shows the whole distribution (median, tail and the shape between) of every series at once, and puts ours
next to its baselines on the same axes; percentile tables alone hide bimodal shapes and stalls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on the benchmark machine
import matplotlib.pyplot as plt

from bench.harness import RESULTS_DIR

PLOT_PATH = RESULTS_DIR / "latency.png"
PANELS = (("event resume", "IngestEvent resume latency (open loop)"), ("timer lateness", "timer lateness"))


def write_latency_plot(series: Mapping[str, Sequence[float]], title: str, path: Path = PLOT_PATH) -> Path | None:
    """One panel per kind of latency (each series goes to the panel its name mentions, the rest to a third);
    None when there is nothing to plot."""
    panels: dict[str, dict[str, Sequence[float]]] = {heading: {} for _, heading in PANELS}
    other: dict[str, Sequence[float]] = {}
    for name, values in series.items():
        if not values:
            continue
        for marker, heading in PANELS:
            if marker in name:
                panels[heading][name] = values
                break
        else:
            other[name] = values
    if other:
        panels["other latencies"] = other
    panels = {heading: members for heading, members in panels.items() if members}
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6.5), squeeze=False)
    for axis, (heading, members) in zip(axes[0], panels.items(), strict=True):
        for name, values in sorted(members.items()):
            ordered = sorted(max(value, 0.01) for value in values)
            fractions = [(index + 1) / len(ordered) for index in range(len(ordered))]
            axis.step(ordered, fractions, where="post", label=f"{name} (n={len(ordered)})")
        axis.set_xscale("log")
        axis.set_xlabel("ms (log scale; values below 0.01 ms drawn at 0.01)")
        axis.set_ylabel("fraction of calls at or below")
        axis.set_title(heading)
        axis.axhline(0.99, color="grey", linewidth=0.5, linestyle="--")
        axis.axhline(0.5, color="grey", linewidth=0.5, linestyle=":")
        axis.grid(True, which="both", linewidth=0.3)
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
