"""Smoke run of ``benchmarks/bench_remote.py`` on a tiny store (no timings checked).

The script runs as a user would run it (a subprocess, moto and the proxies in a server process
of their own, every measurement in a fresh process); the test only checks that it finishes and
that ``remote.json`` holds positive cells/s for the local and the remote rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.s3
pytest.importorskip("moto.server", reason="moto[server] is not installed")
pytest.importorskip("s3fs", reason="s3fs is not installed")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_remote.py"


def test_bench_remote_smoke(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--dir",
        str(tmp_path / "data"),
        "--out",
        str(out),
        "--cells",
        "3000",
        "--genes",
        "100",
        "--nnz",
        "20",
        "--categories",
        "4",
        # 8 timed batches of 512 cross an epoch of 3,000 cells: the window has requests.
        "--n-batches",
        "8",
        "--warmup-batches",
        "1",
        "--latencies",
        "10",
        "--no-sparse",
        "--no-zarr",
        "--no-tune",
        "--repeats",
        "0",
        "--min-buffers",
        "1",
        "--replay-seconds",
        "0.2",
        "--probe-requests",
        "10",
        "--timeout",
        "120",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = json.loads((out / "remote.json").read_text())
    assert (out / "remote.md").read_text().startswith("## Remote store benchmark")
    rows = {r["key"]: r for r in report["rows"]}
    for key in ("local-dense", "s3-10-dense"):
        assert rows[key]["error"] is None, rows[key]["error"]
        assert rows[key]["result"]["cells_per_s"] > 0
    # The remote runs went through the proxy and were counted.
    assert rows["s3-10-dense"]["result"]["http"]["requests"] > 0
    assert report["local_cells_per_s"]["dense"] > 0
    assert report["errors"] == {}
    assert "defaults" in report["target"]
