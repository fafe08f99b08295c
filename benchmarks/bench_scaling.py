"""Growth with the number of cells: wall time and peak memory of each step, 10^5 to 10^7 cells.

For each size (``--sizes``; 2,000 genes, ~100 non-zeros per cell, ``batch`` in contiguous sorted
blocks) an uncompressed ``.h5ad`` is generated in pieces (``atlasloader.data.make_atlas_h5ad``,
which never holds ``X``) and converted once into the loader's layout; both are kept under
``--dir`` with ``.ok.json`` markers and reused by later runs with the same parameters. Then every
step runs in a FRESH subprocess, timed around the call itself (imports excluded), its peak RSS
being the process's ``VmHWM`` read from ``/proc/self/status`` at the end (the whole process:
Python, numpy, dask, zarr and torch included; ``after imports`` is its RSS before the call):

``generate``
    ``make_atlas_h5ad`` (data preparation: measured only when the file is (re)made).
``convert``
    ``atlasloader.convert(h5ad, store)``; the old store is deleted first (untimed).
``register`` / ``register-cached``
    ``AnnDataManager(fields=[LayerField("X", None, is_count_data=True),
    CategoricalObsField("batch", "batch"), CategoricalObsField("labels", "labels")])
    .register_fields(atlasloader.read_lazy(store))`` on a fresh working copy of the store (its
    metadata, obs and var copied, ``X``'s chunk files hard-linked: no registration state, no
    copy of the matrix), then the same again on that copy (the persisted encodings reused).
``preprocess``
    ``atlasloader.preprocess.preprocess(store, n_top_genes=N, overwrite=True)`` on another fresh
    working copy, so every run computes (``overwrite=True`` alone does not: results the library
    wrote itself are reused whenever the data are unchanged).
``loader-dense`` / ``loader-sparse``
    ``AnnDataLoader(manager, batch_size=512, shuffle=True[, sparse=True])`` on the registered
    copy: ``--loader-batches`` batches timed after ``--warmup-batches``; "time" is the epoch
    time extrapolated as ``n_cells / (cells/s)``. Its peak RSS should not grow with the store.

The page cache is warmed (every input file read once) before each size's steps. Per step, the
exponent of time against cells (least squares on log-log) and the slope of peak RSS against
cells (bytes per cell, linear least squares) are fitted over the sizes measured; a step is
called flat when its fitted RSS growth from the smallest size to 10^7 cells (or the largest
measured) stays under ``max(50 MB, 5 %)``. Results of earlier runs in ``--out`` with the same
configuration are kept (a later run adds sizes or re-measures steps; ``--fresh`` starts over).
Writes ``scaling.json``, ``scaling.md`` and ``scaling.png`` (log-log plots) under ``--out``::

    .venv/bin/python benchmarks/bench_scaling.py --dir /work/bench_scaling   # 1e5, 1e6, 1e7
    .venv/bin/python benchmarks/bench_scaling.py --dir /work/bench_scaling --sizes 1e5 1e6
    .venv/bin/python benchmarks/bench_scaling.py --dir /work/bench_scaling --sizes 1e7 \\
        --only loader                       # loaders only (data made or reused), merged
    .venv/bin/python benchmarks/bench_scaling.py --sizes 2000 6000 --loader-batches 5 \\
        --dir /tmp/s --out /tmp/s/out       # a smoke run (~30 s)

Disk: about 84 bytes per cell for the ``.h5ad`` and ~50 for the store (10^7 cells: ~8.4 GB plus
~4.9 GB; ``scaling.md`` lists what was measured and the projection).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEPS = (
    "generate",
    "convert",
    "register",
    "register-cached",
    "preprocess",
    "loader-dense",
    "loader-sparse",
)
RUNNABLE = STEPS[1:]  # generate is data preparation: run when the data are (re)made
LABELS = {
    "generate": "generate `.h5ad` in pieces (`make_atlas_h5ad`)",
    "convert": "`atlasloader.convert` (`.h5ad` to store)",
    "register": "first registration (X, batch, labels)",
    "register-cached": "registration again (persisted, reused)",
    "preprocess": "`preprocess(n_top_genes=..., overwrite=True)`",
    "loader-dense": "loader, dense, shuffled (epoch extrapolated)",
    "loader-sparse": "loader, sparse CSR, shuffled (epoch extrapolated)",
}
DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
PROJECT_TO = 10_000_000
FLAT_MIN_BYTES = 50e6
FLAT_SHARE = 0.05

# --- child processes -----------------------------------------------------------------------------
# A fresh process per measurement: VmHWM starts afresh at exec (unlike ru_maxrss, which would
# report the parent's peak), so reading it at the end gives that step's whole peak.
PRELUDE = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")

def _status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

a = json.loads(sys.argv[1])
extra = {}
"""

EPILOGUE = r"""
print(json.dumps({"seconds": seconds, "peak_rss_bytes": _status("VmHWM"),
                  "after_imports_rss_bytes": base, **extra}))
"""

GENERATE = r"""
from atlasloader.data import make_atlas_h5ad
base = _status("VmRSS")
t0 = time.perf_counter()
make_atlas_h5ad(a["path"], **a["params"])
seconds = time.perf_counter() - t0
"""

CONVERT = r"""
import atlasloader
convert = atlasloader.convert  # imports dask, zarr and h5py before the clock starts
base = _status("VmRSS")
t0 = time.perf_counter()
convert(a["src"], a["dst"], overwrite=True)
seconds = time.perf_counter() - t0
"""

FIELDS = r"""
from atlasloader import AnnDataManager, read_lazy
from atlasloader.fields import CategoricalObsField, LayerField
import atlasloader.registry.builder, atlasloader.store.backing, dask.array, zarr  # not timed

def fields():
    return [LayerField("X", None, is_count_data=True), CategoricalObsField("batch", "batch"),
            CategoricalObsField("labels", "labels")]
"""

REGISTER = (
    FIELDS
    + r"""
def state():
    # The documented layout: root attribute "atlasloader", codes in obs/_scvi_<key> carrying
    # the token they were written with (a rewritten column gets a new one).
    g = zarr.open_group(a["store"], mode="r", use_consolidated=False)
    obs = g["obs"]
    cols = {k: obs[k].attrs.get("atlasloader-token") for k in ("_scvi_batch", "_scvi_labels")
            if k in obs}
    return "atlasloader" in g.attrs, cols

had, before = state()
base = _status("VmRSS")
t0 = time.perf_counter()
manager = AnnDataManager(fields=fields())
manager.register_fields(read_lazy(a["store"]))
seconds = time.perf_counter() - t0
_, after = state()
extra = {"had_registration": had, "codes_rewritten": before != after}
"""
)

PREPROCESS = r"""
from atlasloader.preprocess import preprocess
import atlasloader.preprocess.pipeline, dask.array, zarr  # import cost not timed
base = _status("VmRSS")
t0 = time.perf_counter()
out = preprocess(a["store"], n_top_genes=a["n_top_genes"], overwrite=True)
seconds = time.perf_counter() - t0
extra = {"computed": out["computed"], "reused": out["reused"],
         "passes_over_x": out["passes_over_x"]}
"""

LOADER = (
    FIELDS
    + r"""
import torch  # a training script has torch loaded already
from atlasloader import AnnDataLoader
from atlasloader.benchmarking.bench import measure_loader
import atlasloader.loading.loader
base = _status("VmRSS")
t0 = time.perf_counter()
manager = AnnDataManager(fields=fields())
manager.register_fields(read_lazy(a["store"]))  # registered before: reused
setup_s = time.perf_counter() - t0
r = measure_loader(
    lambda: AnnDataLoader(manager, batch_size=a["batch_size"], shuffle=True,
                          sparse=a["sparse"], seed=0),
    n_batches=a["n_batches"], warmup_batches=a["warmup_batches"], reset_peak=False,
)
seconds = a["n_cells"] / r.cells_per_s
extra = {"cells_per_s": r.cells_per_s, "timed_s": r.seconds, "timed_cells": r.n_cells,
         "timed_batches": r.n_batches, "time_to_first_batch_s": r.time_to_first_batch_s,
         "setup_s": setup_s}
"""
)


class RunFailed(RuntimeError):
    """A measurement subprocess failed (message: the command's step and its stderr tail)."""


def run_child(step: str, body: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; the last JSON line of its stdout."""
    os.sync()  # pages written by the previous step must not be flushed during this one
    cmd = [sys.executable, "-c", PRELUDE + body + EPILOGUE, json.dumps(payload)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        raise RunFailed(f"{step}: timed out after {timeout:.0f} s") from e
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RunFailed(f"{step}: exit {proc.returncode}\n{tail}")
    return {**json.loads(lines[-1]), "process_s": time.perf_counter() - t0}


# --- data ----------------------------------------------------------------------------------------
def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".ok.json")


def _valid(path: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The marker record of ``path`` if it exists and was made with ``params``."""
    marker = _marker(path)
    if not (path.exists() and marker.exists()):
        return None
    rec = json.loads(marker.read_text())
    return rec if rec.get("params") == params else None


def _mark(path: Path, params: dict[str, Any], **info: Any) -> dict[str, Any]:
    rec = {"params": params, "id": uuid.uuid4().hex, **info}
    _marker(path).write_text(json.dumps(rec))
    return rec


def _remove(*paths: Path) -> None:
    for p in paths:
        _marker(p).unlink(missing_ok=True)
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (files hard-linked from elsewhere counted too)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def working_copy(src: Path, dst: Path) -> int:
    """A fresh copy of ``src`` whose ``X`` chunk files are hard links; bytes really copied.

    Registration and preprocessing write only obs/var columns and root attributes, never
    ``X``: linking its chunks gives a store with no registration state at the cost of
    copying obs, var and the metadata. Metadata files are copied even under ``X``, so that no
    attribute write could reach the original through a shared inode.
    """
    _remove(dst)
    copied = 0

    def link_or_copy(s: str, d: str) -> str:
        nonlocal copied
        rel = Path(s).relative_to(src)
        if rel.parts[0] == "X" and rel.name != "zarr.json":
            os.link(s, d)
        else:
            shutil.copy2(s, d)
            copied += Path(s).stat().st_size
        return d

    shutil.copytree(src, dst, copy_function=link_or_copy)
    return copied


def warm(*paths: Path) -> float:
    """Read every file once so steps read from the page cache; seconds taken."""
    t0 = time.perf_counter()
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            with open(f, "rb") as fh:
                while fh.read(16 << 20):
                    pass
    return time.perf_counter() - t0


# --- one size ------------------------------------------------------------------------------------
class Size:
    """The files of one size under ``--dir`` and the measurements made on them."""

    def __init__(self, args: argparse.Namespace, n: int) -> None:
        self.args, self.n = args, n
        d = Path(args.dir)
        stem = f"atlas_{n}x{args.genes}_s{args.seed}"
        self.h5ad = d / f"{stem}.h5ad"
        self.store = d / f"{stem}.zarr"
        self.registered = d / "work" / f"{stem}.registered.zarr"
        self.scratch = d / "work" / f"{stem}.preprocess.zarr"
        self.measured: list[dict[str, Any]] = []
        self.errors: dict[str, str] = {}
        self.data: dict[str, Any] = {"n_cells": n}

    def _measure(
        self, step: str, body: str, payload: dict[str, Any], keep: bool = True
    ) -> dict[str, Any] | None:
        print(f"  {step:<16} {self.n:>12,} cells ...", end=" ", flush=True)
        try:
            res = run_child(step, body, payload, self.args.timeout)
        except RunFailed as e:
            print("FAILED", flush=True)
            self.errors[step] = str(e)
            return None
        rec = {"step": step, "n_cells": self.n, **res, "when": time.strftime("%Y-%m-%d %H:%M")}
        if keep:
            self.measured.append(rec)
        rate = f", {res['cells_per_s'] / 1e3:.1f}k cells/s" if "cells_per_s" in res else ""
        print(f"{fmt_s(res['seconds'])}, peak {fmt_b(res['peak_rss_bytes'])}{rate}", flush=True)
        return rec

    def h5ad_params(self) -> dict[str, Any]:
        a = self.args
        return {
            "n_cells": self.n,
            "n_genes": a.genes,
            "n_batches": min(a.categories, self.n),
            "nnz_per_cell": a.nnz,
            "seed": a.seed,
            "block_rows": 65_536,
            "codec": None,  # anndata's default: uncompressed
        }

    def prepare(self, convert: bool) -> bool:
        """Make or reuse the ``.h5ad`` and the store; False when either could not be made."""
        self.h5ad.parent.mkdir(parents=True, exist_ok=True)
        params = self.h5ad_params()
        h5 = _valid(self.h5ad, params)
        if h5 is None:
            _remove(self.h5ad, self.store, self.registered, self.scratch)
            if self._measure("generate", GENERATE, {"path": str(self.h5ad), "params": params}):
                h5 = _mark(self.h5ad, params)
            else:
                return False
        sparams = {"h5ad": h5["id"]}
        st = _valid(self.store, sparams)
        if convert or st is None:
            # Deleted first: work copies hold hard links to the old chunks, and convert's
            # overwrite would keep two stores on disk until its final rename.
            _remove(self.store, self.registered, self.scratch)
            self.data["warm_h5ad_s"] = warm(self.h5ad)
            payload = {"src": str(self.h5ad), "dst": str(self.store)}
            if not self._measure("convert", CONVERT, payload):
                return False
            st = _mark(self.store, sparams)
        self.store_id = st["id"]
        self.data["h5ad_bytes"] = disk_bytes(self.h5ad)
        self.data["store_bytes"] = disk_bytes(self.store)
        self.data["x_bytes_on_disk"] = disk_bytes(self.store / "X")
        return True

    def register(self, first: bool) -> dict[str, Any] | None:
        if first:
            self.data["registered_copy_bytes"] = working_copy(self.store, self.registered)
        rec = self._measure(
            "register" if first else "register-cached", REGISTER, {"store": str(self.registered)}
        )
        if rec is None:
            return None
        if first:
            _mark(self.registered, {"store": self.store_id})
        # A cached reopen that rewrote the codes (or a "first" one that found a registration)
        # did not measure what its row claims.
        wrong = rec["had_registration"] if first else rec["codes_rewritten"]
        rec["as_intended"] = not wrong
        return rec

    def run(self, wanted: list[str]) -> None:
        if not self.prepare("convert" in wanted):
            return
        rest = [s for s in wanted if s != "convert"]
        if not rest:
            return
        self.data["warm_store_s"] = warm(self.store)
        needs_reg = [s for s in rest if s == "register-cached" or s.startswith("loader")]
        fresh_reg = _valid(self.registered, {"store": self.store_id}) is None
        if ("register" in rest or (needs_reg and fresh_reg)) and not self.register(first=True):
            return
        if "register-cached" in rest:
            self.register(first=False)
        if "preprocess" in rest:
            self.data["preprocess_copy_bytes"] = working_copy(self.store, self.scratch)
            payload = {"store": str(self.scratch), "n_top_genes": self.args.n_top_genes}
            rec = self._measure("preprocess", PREPROCESS, payload)
            if rec is not None:
                rec["as_intended"] = bool(rec["computed"]) and not rec["reused"]
            _remove(self.scratch)
        for step in ("loader-dense", "loader-sparse"):
            if step in rest:
                payload = {
                    "store": str(self.registered),
                    "n_cells": self.n,
                    "batch_size": self.args.batch_size,
                    "sparse": step == "loader-sparse",
                    "n_batches": self.args.loader_batches,
                    "warmup_batches": self.args.warmup_batches,
                }
                self._measure_median(step, payload)

    def _measure_median(self, step: str, payload: dict[str, Any]) -> None:
        """A loader measured ``--loader-repeats`` times, each in a fresh process; the run of
        median cells/s is kept (a shared 2-core VM varies by +-20 % from run to run)."""
        runs = [self._measure(step, LOADER, payload, keep=False)
                for _ in range(self.args.loader_repeats)]  # fmt: skip
        median = median_run(runs)
        if median is not None:
            self.measured.append(median)


def median_run(runs: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The run of median cells/s among those that finished (None: a failed run), with every
    finished run's cells/s, slowest first, as ``repeats_cells_per_s``; None if none finished."""
    done = sorted((r for r in runs if r is not None), key=lambda r: r["cells_per_s"])
    if not done:
        return None
    return {**done[len(done) // 2], "repeats_cells_per_s": [r["cells_per_s"] for r in done]}


# --- fits and reporting --------------------------------------------------------------------------
def fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Exponent of time against cells (log-log) and peak RSS bytes per cell (linear)."""
    rows = sorted(rows, key=lambda r: r["n_cells"])
    n = np.array([r["n_cells"] for r in rows], dtype=float)
    t = np.array([r["seconds"] for r in rows], dtype=float)
    rss = np.array([r["peak_rss_bytes"] for r in rows], dtype=float)
    out: dict[str, Any] = {"sizes": [int(x) for x in n]}
    if len(np.unique(n)) < 2:
        return {**out, "time_exponent": None, "rss_bytes_per_cell": None}
    exponent, log_c = np.polyfit(np.log(n), np.log(t), 1)
    slope, intercept = np.polyfit(n, rss, 1)
    growth = slope * (n[-1] - n[0])
    # Judged where it matters: the fitted growth up to PROJECT_TO cells, not only over the
    # (possibly narrow) range measured.
    reach = slope * (max(PROJECT_TO, n[-1]) - n[0])
    out |= {
        "time_exponent": float(exponent),
        "rss_bytes_per_cell": float(slope),
        "rss_intercept_bytes": float(intercept),
        "rss_growth_bytes": float(growth),
        "flat": bool(reach <= max(FLAT_MIN_BYTES, FLAT_SHARE * rss[0])),
    }
    if n[-1] < PROJECT_TO:
        out["projected"] = {
            "n_cells": PROJECT_TO,
            "seconds": float(math.exp(log_c) * PROJECT_TO**exponent),
            "peak_rss_bytes": float(intercept + slope * PROJECT_TO),
        }
    return out


def per_cell(rows: list[dict[str, Any]], key: str) -> float:
    """Bytes per cell: the slope over several sizes (fixed overheads excluded), else the ratio."""
    n = np.array([d["n_cells"] for d in rows], dtype=float)
    b = np.array([d[key] for d in rows], dtype=float)
    return float(np.polyfit(n, b, 1)[0]) if len(np.unique(n)) > 1 else float(b[0] / n[0])


def fmt_s(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "–"
    if s < 1:
        return f"{s * 1e3:.0f} ms"
    return f"{s:.1f} s" if s < 600 else f"{s / 60:.0f} min"


def fmt_b(b: float | None) -> str:
    if b is None or not math.isfinite(b):
        return "–"
    return f"{b / 1e9:.2f} GB" if abs(b) >= 1e9 else f"{b / 1e6:.0f} MB"


def _notes(r: dict[str, Any]) -> str:
    parts = []
    if "cells_per_s" in r:
        parts.append(
            f"{r['cells_per_s'] / 1e3:.1f}k cells/s over {r['timed_batches']} batches "
            f"({fmt_s(r['timed_s'])} timed)"
        )
        if len(r.get("repeats_cells_per_s", ())) > 1:
            rates = ", ".join(f"{x / 1e3:.0f}k" for x in r["repeats_cells_per_s"])
            parts.append(f"median of {rates}")
        if r["timed_cells"] > r["n_cells"]:
            # Epoch restarts fall inside the timed part, as they do once per real epoch.
            parts.append(f"{r['timed_cells'] / r['n_cells']:.1f} epochs timed")
    if "passes_over_x" in r:
        parts.append(f"{r['passes_over_x']} pass(es) over X")
    if r.get("as_intended") is False:
        parts.append("**not as intended** (see json)")
    return "; ".join(parts)


def plot(path: Path, by_step: dict[str, list[dict[str, Any]]]) -> None:
    """Log-log time and peak RSS against cells, one line per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5.5))
    markers = "os^vDP*X"
    for i, (step, rows) in enumerate(by_step.items()):
        rows = sorted(rows, key=lambda r: r["n_cells"])
        n = [r["n_cells"] for r in rows]
        style = {"marker": markers[i % len(markers)], "color": f"C{i}", "label": step}
        ax_t.plot(n, [r["seconds"] for r in rows], "-", **style)
        ax_m.plot(n, [r["peak_rss_bytes"] / 1e6 for r in rows], "-", **style)
    all_n = sorted({r["n_cells"] for rows in by_step.values() for r in rows})
    if len(all_n) > 1:
        ref = [r for rows in by_step.values() for r in rows if r["n_cells"] == all_n[0]]
        t0 = float(np.exp(np.mean([np.log(r["seconds"]) for r in ref])))
        ax_t.plot(all_n, [t0 * x / all_n[0] for x in all_n], "--", color="grey", lw=0.8,
                  label="∝ cells")  # fmt: skip
    for ax, ylabel in (
        (ax_t, "seconds (loaders: one epoch, extrapolated)"),
        (ax_m, "peak RSS (MB, whole process)"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cells")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax_t.set_title("Time against cells")
    ax_m.set_title("Peak memory against cells")
    ax_t.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    rows = sorted(report["measurements"], key=lambda r: (STEPS.index(r["step"]), r["n_cells"]))
    out = [
        "# Scaling with the number of cells (`benchmarks/bench_scaling.py`)",
        "",
        f"Synthetic atlases of {cfg['genes']:,} genes, ~{cfg['nnz']} non-zeros per cell, "
        f"{cfg['categories']} `batch` categories in contiguous sorted blocks, generated as "
        "uncompressed `.h5ad` in pieces and converted with `atlasloader.convert`. Every step in "
        "a fresh process; time excludes imports; peak RSS is the process's `VmHWM` at the end "
        "(imports included; 'after imports' is its RSS before the call). Loaders: batches of "
        f"{cfg['batch_size']}, shuffled, {cfg['loader_batches']} batches timed after "
        f"{cfg['warmup_batches']}, time = cells / (cells/s). Warm page cache. Machine: "
        f"{report['machine']}; code: {report['code']}.",
        "",
        "| step | cells | time | peak RSS | after imports | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['step']} | {r['n_cells']:,} | {fmt_s(r['seconds'])} | "
            f"{fmt_b(r['peak_rss_bytes'])} | {fmt_b(r['after_imports_rss_bytes'])} | "
            f"{_notes(r)} |"
        )
    out += ["", *(f"- `{step}`: {LABELS[step]}" for step in STEPS)]
    out += [
        "",
        "## Growth per step",
        "",
        "Time exponent: slope of log(time) against log(cells) (1 = linear); RSS slope: peak "
        "RSS bytes per cell, linear least squares; growth: fitted RSS increase over the sizes "
        f"measured, *flat* when the fit adds under max(50 MB, 5 %) up to {PROJECT_TO:,} cells. "
        f"Projection to {PROJECT_TO:,} cells from the fits (when not measured).",
        "",
        "| step | sizes | time exponent | RSS slope (bytes/cell) | RSS growth | "
        f"projected time at {PROJECT_TO / 1e6:g}M | projected peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for step, f in report["fits"].items():
        sizes = ", ".join(f"{n:,}" for n in f["sizes"])
        if f["time_exponent"] is None:
            out.append(f"| {step} | {sizes} | – | – | – | – | – |")
            continue
        p = f.get("projected", {})
        growth = " (flat)" if f["flat"] else " (**grows**)" if step.startswith("loader") else ""
        out.append(
            f"| {step} | {sizes} | {f['time_exponent']:.2f} | {f['rss_bytes_per_cell']:.1f} | "
            f"{fmt_b(f['rss_growth_bytes'])}{growth} | {fmt_s(p.get('seconds'))} | "
            f"{fmt_b(p.get('peak_rss_bytes'))} |"
        )
    disk = report["disk"]
    out += ["", "## Disk", "", "| cells | `.h5ad` | store | X in store |", "|---:|---:|---:|---:|"]
    for d in disk["sizes"]:
        out.append(
            f"| {d['n_cells']:,} | {fmt_b(d.get('h5ad_bytes'))} | {fmt_b(d.get('store_bytes'))} "
            f"| {fmt_b(d.get('x_bytes_on_disk'))} |"
        )
    if disk.get("bytes_per_cell"):
        bpc = disk["bytes_per_cell"]
        out += [
            "",
            f"Per cell: `.h5ad` {bpc['h5ad']:.0f} bytes, store {bpc['store']:.0f} bytes; at "
            f"{PROJECT_TO:,} cells about {fmt_b(bpc['h5ad'] * PROJECT_TO)} + "
            f"{fmt_b(bpc['store'] * PROJECT_TO)} (working copies hard-link `X`: only obs and "
            "var are copied).",
        ]
    if report["errors"]:
        out += ["", "## Failed runs", ""]
        for key, msg in report["errors"].items():
            lines = msg.strip().splitlines()
            out.append(f"- `{key}`: {lines[-1] if lines else 'failed'}")
    out += ["", f"![time and peak RSS against cells]({report['plot']})", ""]
    out += ["Reproduce:", "", "```bash", report["command"], "```", ""]
    return "\n".join(out)


def machine() -> str:
    try:
        import psutil

        mem = f", {psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:
        mem = ""
    return f"{os.cpu_count()} cores{mem}, {platform.system()} {platform.machine()}"


def code_state() -> str:
    """The commit, and whether the tree had uncommitted changes (they change the numbers)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "src"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.split("\n")
    except OSError:
        return "unknown"
    changed = [ln[3:] for ln in dirty if ln.strip()]
    if not changed:
        return head
    return f"{head} + uncommitted changes to {len(changed)} file(s) in src/"


# --- main ----------------------------------------------------------------------------------------
def _cells(text: str) -> int:
    """``100000``, ``1e5`` or ``100_000``."""
    value = float(text.replace("_", ""))
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"a positive whole number of cells, got {text!r}")
    return int(value)


def select(only: list[str] | None) -> list[str]:
    """Steps named by ``--only``: a name selects itself and the steps named ``NAME-...``."""
    if not only:
        return list(RUNNABLE)
    return [s for s in RUNNABLE if any(s == o or s.startswith(o + "-") for o in only)]


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=_cells, nargs="+", default=list(DEFAULT_SIZES),
                    help="numbers of cells (1e5 works)")  # fmt: skip
    ap.add_argument(
        "--only",
        nargs="+",
        choices=[*RUNNABLE, "loader"],
        help="steps to run ('register' includes register-cached, 'loader' both loaders)",
    )
    ap.add_argument("--dir", default="bench_out/scaling", help="data, kept and reused")
    ap.add_argument("--out", default="benchmarks/results", help="scaling.json/.md/.png go here")
    ap.add_argument("--loader-batches", type=int, default=400, help="batches timed per loader")
    ap.add_argument("--warmup-batches", type=int, default=20)
    ap.add_argument("--loader-repeats", type=int, default=3,
                    help="runs per loader (fresh processes); the median is kept")  # fmt: skip
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--genes", type=int, default=2_000)
    ap.add_argument("--nnz", type=int, default=100, help="non-zeros per cell")
    ap.add_argument("--categories", type=int, default=100, help="obs['batch'] categories")
    ap.add_argument("--n-top-genes", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=7200, help="seconds per subprocess")
    ap.add_argument("--fresh", action="store_true", help="drop earlier results in --out")
    args = ap.parse_args(argv)
    if args.loader_batches < 1 or args.warmup_batches < 0 or args.loader_repeats < 1:
        ap.error("--loader-batches and --loader-repeats must be >= 1, --warmup-batches >= 0")
    return args


def _config(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("genes", "nnz", "categories", "seed", "batch_size", "loader_batches")
    return {k: getattr(args, k) for k in (*keys, "warmup_batches", "n_top_genes")}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = shlex.join(["python", "benchmarks/bench_scaling.py", *(argv or sys.argv[1:])])
    args.dir = str(Path(args.dir).resolve())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = _config(args)
    wanted = select(args.only)

    previous: dict[tuple[str, int], dict[str, Any]] = {}
    disk_prev: dict[int, dict[str, Any]] = {}
    json_path = out / "scaling.json"
    if json_path.exists() and not args.fresh:
        old = json.loads(json_path.read_text())
        if old.get("config") == config:
            previous = {(r["step"], r["n_cells"]): r for r in old.get("measurements", [])}
            disk_prev = {d["n_cells"]: d for d in old.get("disk", {}).get("sizes", [])}
            print(f"keeping {len(previous)} earlier measurements from {json_path}", flush=True)
        else:
            print(f"earlier results in {json_path} have another configuration: dropped")

    print(f"data under {args.dir}; steps: {', '.join(wanted)}", flush=True)
    errors: dict[str, str] = {}
    for n in sorted(set(args.sizes)):
        size = Size(args, n)
        size.run(wanted)
        for rec in size.measured:
            previous[(rec["step"], n)] = rec
        errors.update({f"{step}@{n}": msg for step, msg in size.errors.items()})
        disk_prev[n] = {**disk_prev.get(n, {}), **size.data}

    measurements = sorted(previous.values(), key=lambda r: (STEPS.index(r["step"]), r["n_cells"]))
    by_step: dict[str, list[dict[str, Any]]] = {}
    for r in measurements:
        by_step.setdefault(r["step"], []).append(r)
    disk_rows = [disk_prev[n] for n in sorted(disk_prev)]
    disk: dict[str, Any] = {"sizes": disk_rows}
    with_bytes = [d for d in disk_rows if "store_bytes" in d]
    if with_bytes:
        disk["bytes_per_cell"] = {k: per_cell(with_bytes, f"{k}_bytes") for k in ("h5ad", "store")}
    report: dict[str, Any] = {
        "config": config,
        "machine": machine(),
        "code": code_state(),
        "command": command,
        "measurements": measurements,
        "fits": {step: fit(rows) for step, rows in by_step.items()},
        "disk": disk,
        "errors": errors,
        "plot": "scaling.png",
    }
    json_path.write_text(json.dumps(report, indent=1))
    if by_step:
        plot(out / "scaling.png", by_step)
    md = markdown(report)
    (out / "scaling.md").write_text(md)
    print()
    print(md)
    print(f"wrote {json_path}, {out / 'scaling.md'}, {out / 'scaling.png'}")
    for key, msg in errors.items():
        print(f"{key} failed: {msg}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
