"""bench/results/latency.png is drawn from whatever latency series a run recorded."""

from __future__ import annotations

from pathlib import Path

from bench.plot import write_latency_plot


def test_the_plot_is_a_png_with_a_panel_per_kind_of_latency(tmp_path: Path) -> None:
    series = {
        "ours: event resume @ 200/s": [1.0, 2.0, 40.0],
        "temporal: event resume @ 200/s": [10.0, 20.0],
        "ours: timer lateness @ 1000/s": [-1.0, 5.0, 300.0],
        "empty": [],
    }

    path = write_latency_plot(series, "test", tmp_path / "latency.png")

    assert path is not None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_to_plot_writes_nothing(tmp_path: Path) -> None:
    assert write_latency_plot({"empty": []}, "test", tmp_path / "latency.png") is None
    assert not (tmp_path / "latency.png").exists()
