"""The operations the crash and no-write harnesses run, each in a child process.

An :class:`Op` names the user's stores it reads (never to change), the store it writes, how
its pristine input is built and what a clean run of it gives; :data:`OPS` holds them all. The
child script imports first and then prints a READY line, so a measured duration (and a kill
point) starts when the operation does; a failure comes back as one JSON line naming the error.
The checks of a store after a run (:func:`user_files`, whether it opens, what
:func:`~atlasloader.validation.validate.check_store` calls damage) serve both harnesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["N_CELLS", "N_GENES", "OPS", "Op", "user_files"]

N_CELLS, N_GENES = 3000, 200
_READY = "CRASH-HARNESS-READY"
_FAILED = "CRASH-HARNESS-FAILED"

# The child: imports first, then says READY (the measured duration starts there), then runs.
# A failure is reported as one JSON line (the error's class and message) and exit code 3.
_CHILD = """
import json, sys, warnings
warnings.simplefilter("ignore")
import atlasloader
from atlasloader import AnnDataManager, read_lazy
from atlasloader.fields import CategoricalObsField, LayerField
from atlasloader.preprocess import preprocess
base = sys.argv[1]
def fields():
    return [LayerField("X", None, is_count_data=True), CategoricalObsField("batch", "batch"),
            CategoricalObsField("labels", "labels")]
print("{ready}", flush=True)
try:
{body}
except Exception as e:
    print("{failed}" + json.dumps({{"type": type(e).__name__, "msg": str(e),
        "atlasloader": isinstance(e, atlasloader.errors.AtlasLoaderError)}}), flush=True)
    sys.exit(3)
"""

_REGISTER = "AnnDataManager(fields()).register_fields(read_lazy(base + '/ref.zarr'))"
_CONVERT = (
    "atlasloader.convert({src}, base + '/out.zarr', shuffle={shuffle}, chunk_rows=256, "
    "shard_rows=1024, block_rows=512, overwrite=True)"
)
_ONE = "base + '/ref.zarr'"
_TWO = "[base + '/ref.zarr', base + '/query.zarr']"
_BODIES = {
    "setup": _REGISTER,
    "reregister": _REGISTER,
    "transfer": (
        "m = AnnDataManager(fields()); m.register_fields(read_lazy(base + '/ref.zarr'))\n"
        "m.transfer_fields(read_lazy(base + '/query.zarr'), extend_categories=True)"
    ),
    "preprocess": (
        "preprocess(base + '/ref.zarr', n_top_genes=50, batch_key='batch', progress=False)"
    ),
    "convert": _CONVERT.format(src=_ONE, shuffle=False),
    "convert-shuffle": _CONVERT.format(src=_ONE, shuffle=True),
    "convert-many": _CONVERT.format(src=_TWO, shuffle=False),
    "convert-many-shuffle": _CONVERT.format(src=_TWO, shuffle=True),
}


def _child_code(op: str) -> str:
    body = "\n".join("    " + line for line in _BODIES[op].splitlines())
    return _CHILD.format(ready=_READY, failed=_FAILED, body=body)


@dataclass(frozen=True)
class Op:
    """One operation under test: what it reads and writes, and what a clean run of it gives."""

    name: str
    inputs: tuple[str, ...]  # the user's stores (relative to the work folder): never changed
    target: str  # the store the operation writes
    prepare: Callable[[Path], None]  # builds the pristine input in the folder
    result: Callable[[Path], dict[str, Any]]  # what the operation produced
    publishes: bool = False  # the target is created whole at the end (absent before)

    def outcome(self, base: Path) -> str:
        """:attr:`result` as canonical JSON: comparable, NaN equal to NaN."""
        return json.dumps(self.result(base), sort_keys=True)


# --- inputs -----------------------------------------------------------------------------------
def _write(path: Path, seed: int, batches: list[str], prefix: str) -> None:
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
        index=[f"{prefix}{i}" for i in range(N_CELLS)],
    )
    var = pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)])
    with ad.settings.override(zarr_write_format=3):
        ad.AnnData(x, obs=obs, var=var, uns={"note": "user"}).write_zarr(path, chunks=(500,))


def _register(base: Path) -> None:
    subprocess.run(
        [sys.executable, "-c", _child_code("setup"), str(base)], check=True, capture_output=True
    )


def _prepare_one(base: Path) -> None:
    _write(base / "ref.zarr", 0, ["b0", "b1", "b2"], "r")


def _prepare_two(base: Path) -> None:
    _prepare_one(base)
    _write(base / "query.zarr", 1, ["b1", "b3"], "q")


def _prepare_transfer(base: Path) -> None:
    _prepare_two(base)
    _register(base)  # the reference is registered before: the child reuses its records


def _prepare_reregister(base: Path) -> None:
    """A registered store whose batch column the user rewrote: the codes are stale."""
    import anndata as ad
    import pandas as pd
    import zarr

    _prepare_one(base)
    _register(base)
    root = zarr.open_group(base / "ref.zarr", mode="r+", use_consolidated=False)
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
    cols = ["size_factor", "total_counts", "n_genes_by_counts"]
    out = {c: np.round(a.obs[c].to_numpy(), 6).tolist() for c in cols if c in a.obs}
    out.update({c: a.var[c].to_numpy().tolist() for c in sorted(a.var.columns)})
    return out


def _converted(base: Path) -> dict[str, Any]:
    import anndata as ad

    a = ad.read_zarr(base / "out.zarr")
    x = a.X.tocsr() if hasattr(a.X, "tocsr") else a.X
    digest = hashlib.sha256()
    for part in (x.indptr, x.indices, x.data) if hasattr(x, "indptr") else (np.asarray(x),):
        digest.update(np.ascontiguousarray(part).tobytes())
    return {
        "X": digest.hexdigest(),
        "obs_names": a.obs_names.tolist(),
        "obs": {c: a.obs[c].astype(str).tolist() for c in sorted(a.obs.columns)},
        "var_names": a.var_names.tolist(),
    }


OPS: dict[str, Op] = {
    "setup": Op("setup", ("ref.zarr",), "ref.zarr", _prepare_one, _ref_codes),
    "reregister": Op("reregister", ("ref.zarr",), "ref.zarr", _prepare_reregister, _ref_codes),
    "transfer": Op(
        "transfer", ("ref.zarr", "query.zarr"), "query.zarr", _prepare_transfer, _query_codes
    ),
    "preprocess": Op("preprocess", ("ref.zarr",), "ref.zarr", _prepare_one, _hvg),
    **{
        name: Op(name, inputs, "out.zarr", prepare, _converted, publishes=True)
        for name, inputs, prepare in [
            ("convert", ("ref.zarr",), _prepare_one),
            ("convert-shuffle", ("ref.zarr",), _prepare_one),
            ("convert-many", ("ref.zarr", "query.zarr"), _prepare_two),
            ("convert-many-shuffle", ("ref.zarr", "query.zarr"), _prepare_two),
        ]
    },
}


# --- running the child ------------------------------------------------------------------------
@dataclass
class _Run:
    elapsed: float  # from READY to exit (or to the kill)
    killed: bool
    error: dict[str, Any] | None = None  # the child's failure report, if it failed


def _run_child(op: str, base: Path, kill_after: float | None) -> _Run:
    """Run ``op`` in a child; SIGKILL it ``kill_after`` seconds after READY (None: let it end)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _child_code(op), str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    start = time.perf_counter()
    if _READY not in line:
        _, err = proc.communicate()
        raise RuntimeError(f"{op} child did not start: {err[-2000:]}")
    killed = False
    if kill_after is not None:
        deadline = start + kill_after
        while time.perf_counter() < deadline and proc.poll() is None:
            time.sleep(min(0.002, max(0.0, deadline - time.perf_counter())))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
    out, err = proc.communicate()
    elapsed = time.perf_counter() - start
    if killed:
        return _Run(elapsed, True)
    if proc.returncode == 0:
        return _Run(elapsed, False)
    for row in out.splitlines():
        if row.startswith(_FAILED):
            return _Run(elapsed, False, json.loads(row[len(_FAILED) :]))
    raise RuntimeError(f"{op} child died (exit {proc.returncode}): {err[-2000:]}")


def _succeed(op: str, base: Path) -> float:
    run = _run_child(op, base, None)
    if run.error is not None:
        raise RuntimeError(f"{op} failed: {run.error['type']}: {run.error['msg']}")
    return run.elapsed


def _fresh(template: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(template, dest)
    return dest


def _pristine(op: Op, work: Path) -> Path:
    template = work / f"{op.name}-pristine"
    if not (template / "done").exists():
        shutil.rmtree(template, ignore_errors=True)
        template.mkdir(parents=True)
        op.prepare(template)
        (template / "done").touch()
    return template


# --- checks -----------------------------------------------------------------------------------
_GROUP_META = ("zarr.json", ".zattrs", ".zgroup", ".zmetadata")


def user_files(store: Path) -> dict[str, str]:
    """sha256 of every file of the user's data: all files but the metadata of the root, obs
    and var groups (where registrations add columns and records) and the ``_scvi_*`` columns
    a registration wrote."""
    out: dict[str, str] = {}
    for dirpath, _, files in os.walk(store):
        rel = os.path.relpath(dirpath, store)
        frame, _, member = rel.partition(os.sep)
        if frame in ("obs", "obsm") and member.startswith("_scvi"):
            continue  # registered by atlasloader before (the stale encoding to replace)
        for name in files:
            if rel in (".", "obs", "var") and name in _GROUP_META:
                continue
            path = Path(dirpath) / name
            out[os.path.join(rel, name)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _inputs_files(op: Op, base: Path) -> dict[str, dict[str, str]]:
    return {name: user_files(base / name) for name in op.inputs}


def _changed(before: dict[str, dict[str, str]], base: Path) -> list[str]:
    out = []
    for name, files in before.items():
        now = user_files(base / name)
        out += [f"{name}/{k}" for k, v in files.items() if now.get(k) != v]
    return out


def _opens(store: Path) -> str | None:
    import anndata as ad

    from ..store.lazy import read_lazy

    try:
        ad.read_zarr(store)
        read_lazy(store, mode="r")
    except Exception as e:  # any failure to open is what the harness looks for
        return f"does not open: {type(e).__name__}: {e}"
    return None


def _input_damage(op: Op, base: Path) -> set[str]:
    """What validate finds wrong with ``op``'s input before it runs (``reregister``'s stale
    registration): the old state, which a kill or a refused write may leave as it was."""
    return set() if op.publishes else set(_damage(base / op.target)[0])


def _damage(store: Path) -> tuple[list[str], bool]:
    """Problems that are damage, and whether there were named leftovers (``incomplete``)."""
    from ..validation.validate import check_store

    report = check_store(store)
    return [str(p) for p in report.damaged], len(report.damaged) < len(report.problems)
