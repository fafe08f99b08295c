"""The runnable examples in ``scripts/``: the batch preprocessing script and the cluster job."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from atlasloader.store import records
from atlasloader.store.open import open_root

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ATLASLOADER_SCHEDULER"}
    env.update(
        ATLASLOADER=f"{sys.executable} -m atlasloader.cli", PYTHON=sys.executable, COLUMNS="200"
    )
    env.update(extra)
    return env


def _batch(*args: object, **env: str) -> subprocess.CompletedProcess[str]:
    assert BASH is not None
    return subprocess.run(
        [BASH, str(SCRIPTS / "batch_preprocess.sh"), *map(str, args)],
        capture_output=True, text=True, timeout=300, check=False, env=_env(**env),
    )  # fmt: skip


@needs_bash
def test_batch_preprocess_runs_end_to_end(tmp_path) -> None:
    out = tmp_path / "job"
    proc = _batch(out, CELLS="300", GENES="40", N_TOP_GENES="10")
    assert proc.returncode == 0, proc.stderr
    store = out / "atlas.zarr"
    assert proc.stdout.strip().splitlines()[-1] == str(store)
    for step in ("generate", "convert", "preprocess", "setup", "validate", "view"):
        assert f"batch_preprocess: {step}: ok" in proc.stderr
    assert "Data Registry" in proc.stdout  # view's tables
    registry = records.load_registries(open_root(store, mode="r"))["SCVI"]["registry"]
    assert registry["setup_args"]["var_subset"] == "highly_variable"
    assert registry["field_registries"]["X"]["summary_stats"] == {"n_cells": 600, "n_vars": 10}


@needs_bash
def test_batch_preprocess_stops_at_the_failing_step(tmp_path, inputs) -> None:
    proc = _batch(tmp_path / "job", inputs["text"])
    assert proc.returncode == 3
    assert "step 'convert' failed with exit code 3 (bad input or data)" in proc.stderr
    assert "atlasloader: error: " in proc.stderr
    assert "preprocess: ok" not in proc.stderr


def _cluster_job(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "cluster_job.py"), *map(str, args)],
        capture_output=True, text=True, timeout=300, check=False, env=_env(),
    )  # fmt: skip


def test_cluster_job_on_an_existing_cluster(tmp_path, inputs, dask_cluster) -> None:
    out = tmp_path / "job"
    proc = _cluster_job(
        inputs["a"], "--out", out, "--skip-preprocess", "--scheduler",
        dask_cluster.scheduler_address,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    store = out / "atlas.zarr"
    assert proc.stdout.strip().splitlines()[-1] == str(store)
    assert f"running on the dask cluster at {dask_cluster.scheduler_address}" in proc.stderr
    assert "SCVI" in records.load_registries(open_root(store, mode="r"))


def test_cluster_job_with_preprocessing_on_local_workers(tmp_path, inputs) -> None:
    out = tmp_path / "job"
    proc = _cluster_job(
        inputs["a"], inputs["b"], "--out", out, "--workers", "2", "--n-top-genes", "10"
    )
    assert proc.returncode == 0, proc.stderr
    registry = records.load_registries(open_root(out / "atlas.zarr", mode="r"))["SCVI"]
    args = registry["registry"]["setup_args"]
    assert (args["size_factor_key"], args["var_subset"]) == ("size_factor", "highly_variable")


@pytest.mark.skipif(
    importlib.util.find_spec("dask_jobqueue") is not None, reason="dask-jobqueue is installed"
)
def test_cluster_job_slurm_says_what_to_install(tmp_path, inputs) -> None:
    proc = _cluster_job(inputs["a"], "--out", tmp_path, "--slurm")
    assert proc.returncode == 1
    assert "pip install dask-jobqueue" in proc.stderr


@needs_bash
def test_slurm_wrapper_is_valid_bash() -> None:
    assert BASH is not None
    proc = subprocess.run(
        [BASH, "-n", str(SCRIPTS / "slurm_job.sh")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
