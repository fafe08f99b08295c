"""Smoke test of ``benchmarks/bench_scaling.py``: tiny sizes, every step measured and fitted."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_scaling.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_scaling", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fit_recovers_exponent_and_bytes_per_cell() -> None:
    bench = _module()
    rows = [
        {"n_cells": n, "seconds": 2e-6 * n**1.5, "peak_rss_bytes": 3e8 + 40.0 * n}
        for n in (1_000, 10_000, 100_000)
    ]
    f = bench.fit(rows)
    assert f["time_exponent"] == pytest.approx(1.5)
    assert f["rss_bytes_per_cell"] == pytest.approx(40.0)
    assert f["projected"]["seconds"] == pytest.approx(2e-6 * 1e7**1.5, rel=1e-6)
    assert not f["flat"]  # 4 MB over the range measured, but 400 MB at 10^7 cells
    gentle = [{**r, "peak_rss_bytes": 3e8 + 1.0 * r["n_cells"]} for r in rows]
    assert bench.fit(gentle)["flat"]  # 10 MB at 10^7 cells
    assert bench.fit(rows[:1])["time_exponent"] is None


def test_only_selects_steps_and_their_variants() -> None:
    bench = _module()
    assert bench.select(None) == list(bench.RUNNABLE)
    assert bench.select(["register"]) == ["register", "register-cached"]
    assert bench.select(["loader", "convert"]) == ["convert", "loader-dense", "loader-sparse"]


def test_median_run_keeps_the_middle_of_the_finished_runs() -> None:
    bench = _module()
    runs = [{"cells_per_s": 30e3, "n": 0}, None, {"cells_per_s": 10e3, "n": 1},
            {"cells_per_s": 20e3, "n": 2}]  # fmt: skip
    median = bench.median_run(runs)
    assert median["n"] == 2
    assert median["repeats_cells_per_s"] == [10e3, 20e3, 30e3]
    assert "repeats_cells_per_s" not in runs[0]  # the runs themselves are left as they were
    assert bench.median_run([None, None]) is None
    assert "median of 10k, 20k, 30k" in bench._notes(
        {**median, "timed_batches": 3, "timed_s": 1.0, "timed_cells": 5, "n_cells": 10}
    )


def test_smoke_run_measures_every_step(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--sizes", "2000", "6000",
        "--loader-batches", "3",
        "--loader-repeats", "1",  # one run each: median_run is tested above
        "--warmup-batches", "1",
        "--categories", "10",
        "--dir", str(tmp_path / "data"),
        "--out", str(out),
        "--timeout", "300",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = json.loads((out / "scaling.json").read_text())
    assert report["errors"] == {}
    bench = _module()
    seen = {(r["step"], r["n_cells"]) for r in report["measurements"]}
    assert seen == {(s, n) for s in bench.STEPS for n in (2000, 6000)}
    for r in report["measurements"]:
        assert r["seconds"] > 0, r
        assert r["peak_rss_bytes"] > 0, r
        assert r.get("as_intended", True), r  # first registration was first, cached reused
    for step in bench.STEPS:
        f = report["fits"][step]
        assert math.isfinite(f["time_exponent"]), (step, f)
        assert math.isfinite(f["rss_bytes_per_cell"]), (step, f)
    for r in report["measurements"]:
        if r["step"].startswith("loader"):
            assert r["repeats_cells_per_s"] == [r["cells_per_s"]]
    md = (out / "scaling.md").read_text()
    assert "| loader-dense | 6,000 |" in md
    assert "| loader-dense | 2,000, 6,000 |" in md  # its fit
    assert (out / "scaling.png").stat().st_size > 0
    for d in report["disk"]["sizes"]:
        assert d["store_bytes"] > 0
        assert d["h5ad_bytes"] > 0
