"""``benchmarks/bench_gpu.py`` as a user runs it: the no-GPU refusal and the CPU smoke mode."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"
NO_CUDA = "bench_gpu: no CUDA device: the GPU figures need a machine with a GPU"
ATLASLOADER_ROWS = (
    "loader-host",
    "loader-dense",
    "loader-sparse",
    "train",
    "train-device",
    "train-sparse",
)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.skipif(_cuda(), reason="a CUDA device is available: the script would run")
def test_without_cuda_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    proc = _run("--dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == NO_CUDA
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "data").exists()  # refused before generating anything
    assert not (tmp_path / "out" / "gpu.json").exists()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    tmp = tmp_path_factory.mktemp("bench_gpu")
    out = tmp / "out"
    proc = _run(
        "--allow-cpu",
        *("--dir", str(tmp / "data"), "--out", str(out)),
        *("--cells", "2000", "--genes", "100", "--nnz", "20", "--categories", "4"),
        *("--n-batches", "4", "--warmup-batches", "1", "--repeats", "1"),
        *("--steps", "3", "--warmup-steps", "1"),
        # This interpreter has no annbatch: the peer row must say so rather than fail.
        *("--python-peers", sys.executable),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text()


def test_smoke_run_measures_every_atlasloader_row(smoke: tuple[dict[str, Any], str]) -> None:
    report, _ = smoke
    rows = report["rows"]
    assert report["errors"] == {}
    for key in ATLASLOADER_ROWS:
        assert rows[key]["status"] == "ok", key
        assert rows[key]["cells_per_s"] > 0, key
    assert rows["loader-dense"]["x_shape"] == [512, 100]
    # The same seed gives the same cells: densified on the CPU or on the device, same values.
    assert rows["loader-dense"]["checksums"] == pytest.approx(rows["loader-sparse"]["checksums"])
    assert rows["train"]["steps_timed"] == 3
    assert report["config"]["cells"] == 2000
    assert report["device"]["torch"]


def test_smoke_run_reports_annbatch_and_writes_the_table(
    smoke: tuple[dict[str, Any], str],
) -> None:
    report, md = smoke
    annbatch = report["rows"]["annbatch"]
    if importlib.util.find_spec("annbatch") is None:
        assert annbatch["status"] == "not installed"
        assert "not installed" in md
    else:
        assert annbatch["status"] == "ok"
    assert "| runner | what | cells/s | notes |" in md
    assert report["device"]["name"] in md
    assert f"torch {report['device']['torch']}" in md
    for key in ATLASLOADER_ROWS:
        assert f"`{key}`" in md
