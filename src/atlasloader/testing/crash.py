"""A crash harness: SIGKILL an operation at points spread over its run, then check the store.

For each operation (:data:`OPS`) a pristine input is built once, a clean child process runs the
operation to measure its duration (from the moment its imports are done) and its result, and
then, for each of ``n`` kill points spread uniformly over that duration, a fresh copy of the
input is handed to a child that is SIGKILLed at that point. After each kill:

1. ``anndata.read_zarr`` and ``atlasloader.read_lazy`` open the store;
2. every file of the user's own data (X, layers, the original obs/var columns, uns, obsm) hashes
   as before;
3. :func:`atlasloader.store.validate.validate_store` reports no problem;
4. the operation run again succeeds and gives the clean run's result (codes, columns).

A kill point survives when all four hold. ``python scripts/crash_points.py`` runs the long
version and writes the table of the README.

Examples
--------
>>> from atlasloader.testing.crash import run_op
>>> report = run_op("setup", n_points=50, workdir=tmp)  # doctest: +SKIP
>>> report.survived, report.total  # doctest: +SKIP
(50, 50)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OPS", "CrashReport", "Op", "run_op"]

N_CELLS, N_GENES = 3000, 200
_READY = "CRASH-HARNESS-READY"

# The child: imports first, then says READY (the measured duration starts there), then runs.
_CHILD = """
import sys, warnings
warnings.simplefilter("ignore")
import atlasloader
from atlasloader import AnnDataManager, read_lazy
from atlasloader.fields import CategoricalObsField, LayerField
base = sys.argv[1]
def fields():
    return [LayerField("X", None, is_count_data=True), CategoricalObsField("batch", "batch"),
            CategoricalObsField("labels", "labels")]
print("{ready}", flush=True)
{body}
"""

_BODIES = {
    "setup": "AnnDataManager(fields()).register_fields(read_lazy(base + '/ref.zarr'))",
    "reregister": "AnnDataManager(fields()).register_fields(read_lazy(base + '/ref.zarr'))",
    "transfer": (
        "m = AnnDataManager(fields()); m.register_fields(read_lazy(base + '/ref.zarr'))\n"
        "m.transfer_fields(read_lazy(base + '/query.zarr'), extend_categories=True)"
    ),
    "preprocess": (
        "atlasloader.preprocess(base + '/ref.zarr', n_top_genes=50, batch_key='batch', "
        "progress=False)"
    ),
}


@dataclass(frozen=True)
class Op:
    """One operation under test: what it writes, and what a clean run of it gives."""

    name: str
    target: str  # the store (relative to the work folder) the operation writes
    prepare: Callable[[Path], None]  # builds the pristine input in the folder
    result: Callable[[Path], dict[str, Any]]  # what the operation produced, comparable


@dataclass
class CrashReport:
    op: str
    total: int = 0
    survived: int = 0
    duration_s: float = 0.0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.op}: {self.survived}/{self.total} survived (run {self.duration_s:.2f} s)"


# --- inputs -----------------------------------------------------------------------------------
def _write(path: Path, seed: int, batches: list[str]) -> None:
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    x = sp.random(N_CELLS, N_GENES, density=0.1, format="csr", random_state=seed)
    x.data = rng.poisson(3.0, size=x.nnz).astype(np.float32) + 1
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical(rng.choice(batches, N_CELLS)),
            "labels": pd.Categorical(rng.choice(["t0", "t1", "t2"], N_CELLS)),
            "n_counts": np.asarray(x.sum(1)).ravel(),
        },
        index=[f"c{i}" for i in range(N_CELLS)],
    )
    var = pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)])
    with ad.settings.override(zarr_write_format=3):
        ad.AnnData(x, obs=obs, var=var, uns={"note": "user"}).write_zarr(path, chunks=(500,))


def _register(path: Path) -> None:
    subprocess.run(
        [sys.executable, "-c", _CHILD.format(ready=_READY, body=_BODIES["setup"]), str(path)],
        check=True,
        capture_output=True,
    )


def _prepare_setup(base: Path) -> None:
    _write(base / "ref.zarr", 0, ["b0", "b1", "b2"])


def _prepare_transfer(base: Path) -> None:
    _write(base / "ref.zarr", 0, ["b0", "b1", "b2"])
    _write(base / "query.zarr", 1, ["b1", "b3"])
    _register(base)  # the reference is registered before: the child reuses its records


def _prepare_reregister(base: Path) -> None:
    """A registered store whose batch column the user rewrote: the codes are stale."""
    import anndata as ad
    import pandas as pd
    import zarr

    _prepare_setup(base)
    _register(base)
    root = zarr.open_group(base / "ref.zarr", mode="r+")
    values = np.random.default_rng(7).choice(["b0", "b4"], N_CELLS)
    ad.io.write_elem(root["obs"], "batch", pd.Categorical(values))
    zarr.consolidate_metadata(base / "ref.zarr")


def _codes(store: Path) -> dict[str, Any]:
    import anndata as ad

    obs = ad.read_zarr(store).obs
    return {c: obs[c].to_numpy().tolist() for c in sorted(obs.columns) if c.startswith("_scvi")}


def _ref_codes(base: Path) -> dict[str, Any]:
    return _codes(base / "ref.zarr")


def _query_codes(base: Path) -> dict[str, Any]:
    return _codes(base / "query.zarr")


def _hvg(base: Path) -> dict[str, Any]:
    import anndata as ad

    a = ad.read_zarr(base / "ref.zarr")
    cols = ["size_factor", "total_counts"]
    out = {c: np.round(a.obs[c].to_numpy(), 6).tolist() for c in cols if c in a.obs}
    out.update({c: a.var[c].to_numpy().tolist() for c in a.var.columns if "highly" in c})
    return out


OPS: dict[str, Op] = {
    "setup": Op("setup", "ref.zarr", _prepare_setup, _ref_codes),
    "reregister": Op("reregister", "ref.zarr", _prepare_reregister, _ref_codes),
    "transfer": Op("transfer", "query.zarr", _prepare_transfer, _query_codes),
    "preprocess": Op("preprocess", "ref.zarr", _prepare_setup, _hvg),
}


# --- checks -----------------------------------------------------------------------------------
_GROUP_META = ("zarr.json", ".zattrs", ".zgroup", ".zmetadata")


def user_files(store: Path) -> dict[str, str]:
    """sha256 of every file of the user's data: all files but the metadata of the root, obs
    and var groups (where registrations add columns and records)."""
    out: dict[str, str] = {}
    for dirpath, _, files in os.walk(store):
        rel = os.path.relpath(dirpath, store)
        for name in files:
            if rel in (".", "obs", "var") and name in _GROUP_META:
                continue
            path = Path(dirpath) / name
            out[os.path.join(rel, name)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _user_subset(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [k for k, v in before.items() if after.get(k) != v]


def _run_child(op: str, base: Path, kill_after: float | None) -> float:
    """Run ``op`` in a child; SIGKILL it ``kill_after`` seconds after READY. Returns the time
    from READY to exit (or to the kill)."""
    code = _CHILD.format(ready=_READY, body=_BODIES[op])
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    start = time.perf_counter()
    if _READY not in line:
        proc.wait()
        raise RuntimeError(f"{op} child did not start: {proc.stderr.read() if proc.stderr else ''}")
    if kill_after is None:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{op} child failed: {err[-2000:]}")
        return time.perf_counter() - start
    deadline = start + kill_after
    while time.perf_counter() < deadline and proc.poll() is None:
        time.sleep(min(0.002, max(0.0, deadline - time.perf_counter())))
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    return time.perf_counter() - start


def _check(op: Op, base: Path, pristine: dict[str, str], clean: dict[str, Any]) -> list[str]:
    import anndata as ad

    from ..store.lazy import read_lazy
    from ..store.validate import validate_store

    store = base / op.target
    problems: list[str] = []
    try:
        ad.read_zarr(store)
        read_lazy(store, mode="r")
    except Exception as e:  # any failure to open is what the harness looks for
        return [f"does not open: {type(e).__name__}: {e}"]
    changed = _user_subset(pristine, user_files(store))
    if changed:
        problems.append(f"user files changed: {changed[:3]}")
    found = validate_store(store)
    if found:
        problems.append(f"validate: {[str(p) for p in found[:3]]}")
    try:
        _run_child(op.name, base, None)
    except RuntimeError as e:
        return [*problems, f"rerun failed: {e}"]
    if op.result(base) != clean:
        problems.append("rerun result differs from the clean run's")
    return problems


def run_op(name: str, n_points: int, workdir: str | os.PathLike[str]) -> CrashReport:
    """Kill ``name`` at ``n_points`` points spread uniformly over its clean run; check each."""
    op = OPS[name]
    work = Path(workdir)
    template = work / f"{name}-pristine"
    shutil.rmtree(template, ignore_errors=True)
    template.mkdir(parents=True)
    op.prepare(template)
    pristine = user_files(template / op.target)
    clean_dir = work / f"{name}-clean"
    shutil.rmtree(clean_dir, ignore_errors=True)
    shutil.copytree(template, clean_dir)
    report = CrashReport(name, duration_s=_run_child(name, clean_dir, None))
    clean = op.result(clean_dir)
    for i in range(n_points):
        at = report.duration_s * (i + 0.5) / n_points
        base = work / f"{name}-kill"
        shutil.rmtree(base, ignore_errors=True)
        shutil.copytree(template, base)
        _run_child(name, base, at)
        problems = _check(op, base, pristine, clean)
        report.total += 1
        if problems:
            report.failures.append(f"kill at {at:.3f} s: {'; '.join(problems)}")
        else:
            report.survived += 1
    return report
