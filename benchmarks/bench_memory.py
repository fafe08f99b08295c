"""Resident memory of the loader over several shuffled epochs: glibc defaults against tuning.

Generates (or reuses, under ``--dir``) a synthetic atlas store in the loader's layout
(``make_atlas_store``: CSR, 16-row chunks in 4096-row shards, zstd by default; 300,000 cells x
2,000 genes, 200 non-zeros per cell unless told otherwise), registers ``X`` and ``batch`` once
(the encodings are persisted, later processes reuse them), then runs every configuration in a
FRESH subprocess per output mode (dense and sparse batches of 512):

- ``glibc defaults``: ``ATLASLOADER_TUNE_MALLOC=0`` (the loader's tuning switched off);
- ``tune_allocator``: atlasloader's own tuning (:mod:`atlasloader.loading.allocator`: fixed
  mmap/trim thresholds sized from the batch, ``malloc_trim(0)`` after each epoch);
- ``MALLOC_ARENA_MAX=2`` and ``MALLOC_MMAP_THRESHOLD_=1048576``: the usual advice, set in the
  environment (atlasloader then leaves the allocator alone), as references.

Each subprocess iterates ``--epochs`` shuffled epochs over 90 % of the cells (optionally with a
small torch autoencoder step per batch, ``--model``, to mimic training), then one store-order
"latent" pass over every cell (dense), and records after each epoch ``VmRSS`` and ``VmHWM``
(``/proc/self/status``), the seconds the epoch took, and glibc's ``mallinfo2`` (bytes in use in
the heaps, free bytes the heaps keep, ``mmap``-ed bytes). Configurations are alternated
(A B C D, rotated each repeat); with ``--repeats`` above 1 the tables show medians.

Writes ``memory.json`` (every run) and ``memory.md`` (the table) under ``--out``::

    .venv/bin/python benchmarks/bench_memory.py                     # ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_memory.py --model             # with a model step (~10 min)
    .venv/bin/python benchmarks/bench_memory.py --cells 50000 --epochs 3 --dir /tmp/bm \\
        --out /tmp/bm/out                                            # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _subprocess import RunFailed, run_json  # noqa: E402

MIB = 1 << 20

CONFIGS: dict[str, dict[str, str]] = {
    "glibc defaults": {"ATLASLOADER_TUNE_MALLOC": "0"},
    "tune_allocator": {},
    "MALLOC_ARENA_MAX=2": {"MALLOC_ARENA_MAX": "2"},
    "MALLOC_MMAP_THRESHOLD_=1048576": {"MALLOC_MMAP_THRESHOLD_": "1048576"},
}
# Inherited settings would blur the comparison: every run starts from these removed.
CLEAN_ENV = (
    "ATLASLOADER_TUNE_MALLOC",
    "MALLOC_ARENA_MAX",
    "MALLOC_ARENA_TEST",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
    "GLIBC_TUNABLES",
)

# The registration both scripts use (the generator registers, the runs reuse it).
FIELDS = """
def fields(adata, n_subset):
    # ``--var-subset``: every k-th gene, read from the full rows (as an HVG selection is).
    subset = None
    if n_subset:
        names = list(adata.var_names)
        subset = names[:: max(1, len(names) // n_subset)][:n_subset]
    return [
        LayerField(registry_key="X", layer=None, is_count_data=True, var_subset=subset),
        CategoricalObsField(registry_key="batch", obs_key="batch"),
    ]
"""

GEN = """
import json, sys, time
import atlasloader
from atlasloader import AnnDataManager
from atlasloader.data import make_atlas_store
from atlasloader.fields import CategoricalObsField, LayerField
path, p, n_subset = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
make_atlas_store(path, block_rows=65_536, chunk_rows=16, shard_rows=4096, **p)
{FIELDS}adata = atlasloader.read_lazy(path)
AnnDataManager(fields=fields(adata, n_subset)).register_fields(adata)  # persisted, reused
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""

RUN = r"""
import ctypes, json, sys, time
import numpy as np
import torch
import atlasloader
from atlasloader import AnnDataLoader, AnnDataManager
from atlasloader.fields import CategoricalObsField, LayerField
from atlasloader.loading import allocator

path, p = sys.argv[1], json.loads(sys.argv[2])

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) * 1024
    return out

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]

try:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
except (OSError, AttributeError):
    libc = None

def heap():
    if libc is None:
        return {}
    m = libc.mallinfo2()
    return {"heap_bytes": m.arena, "in_use_bytes": m.uordblks, "free_bytes": m.fordblks,
            "mmap_bytes": m.hblkhd}

def sample(seconds=None):
    return {**status(), **heap(), "seconds": seconds}

{FIELDS}
adata = atlasloader.read_lazy(path)
manager = AnnDataManager(fields=fields(adata, p["var_subset"]))
manager.register_fields(adata)
n = int(adata.n_obs)
rng = np.random.default_rng(p["seed"])
train = np.sort(rng.permutation(n)[: int(0.9 * n)])
sparse = p["mode"] == "sparse"
loader = AnnDataLoader(manager, indices=train, batch_size=p["batch_size"], shuffle=True,
                       sparse=sparse, seed=p["seed"])
g = int(manager.summary_stats["n_vars"])
torch.manual_seed(p["seed"])
model = torch.nn.Sequential(
    torch.nn.Linear(g, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10),
    torch.nn.Linear(10, 128), torch.nn.ReLU(), torch.nn.Linear(128, g))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)

def step(batch, learn):
    x = batch["X"]
    if x.layout != torch.strided:
        x = x.to_dense()
    if not p["model"]:
        return
    x = torch.log1p(x)
    if learn:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), x)
        loss.backward()
        opt.step()
    else:
        with torch.no_grad():
            model[:3](x)

setup = sample()
epochs = []
for _ in range(p["epochs"]):
    t0 = time.perf_counter()
    for batch in loader:
        step(batch, True)
    del batch
    epochs.append(sample(time.perf_counter() - t0))
t0 = time.perf_counter()
for batch in AnnDataLoader(manager, batch_size=p["batch_size"], shuffle=False):
    step(batch, False)
del batch
latent = sample(time.perf_counter() - t0)
tuning = allocator.current_tuning()
print(json.dumps({"setup": setup, "epochs": epochs, "latent": latent,
                  "tuning": None if tuning is None else tuning.to_dict()}))
"""
GEN, RUN = GEN.replace("{FIELDS}", FIELDS), RUN.replace("{FIELDS}", FIELDS)


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    return {**env, **extra}


def prepare(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The store under ``--dir``, reused when its marker records the same parameters."""
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    params = {
        "n_cells": args.cells,
        "n_genes": args.genes,
        "nnz_per_cell": args.nnz,
        "n_batches": args.categories,
        "seed": args.seed,
        "codec": args.codec,
    }
    marked = {**params, "var_subset": args.var_subset}
    store = d / f"memory_{args.cells}x{args.genes}_nnz{args.nnz}_{args.codec}.zarr"
    marker = store.with_name(store.name + ".ok.json")
    if marker.exists() and store.exists():
        rec = json.loads(marker.read_text())
        if rec.get("params") == marked:
            print(f"  reusing {store}", flush=True)
            return store, {**rec, "reused": True}
    marker.unlink(missing_ok=True)
    print(f"  writing {store} ...", flush=True)
    info = run_json(
        [args.python, "-c", GEN, str(store), json.dumps(params), str(args.var_subset)],
        args.timeout,
        clean_env({}),
        inherit=False,
    )
    rec = {"params": marked, **info}
    marker.write_text(json.dumps(rec))
    return store, {**rec, "reused": False}


def _mib(b: float | None) -> str:
    return "" if b is None else f"{b / MIB:,.0f}"


def summarise(runs: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """Medians over repeats of one (mode, config)."""

    def med(get: Any) -> float | None:
        vals = [v for v in (get(r) for r in runs) if v is not None]
        return statistics.median(vals) if vals else None

    rss = [med(lambda r, i=i: r["epochs"][i]["VmRSS"]) for i in range(epochs)]
    first, last = rss[0], rss[-1]
    return {
        "setup_rss": med(lambda r: r["setup"]["VmRSS"]),
        "rss": rss,
        "latent_rss": med(lambda r: r["latent"]["VmRSS"]),
        "peak": med(lambda r: r["latent"]["VmHWM"]),
        "peak_epochs": med(lambda r: r["epochs"][-1]["VmHWM"]),
        "growth": None if first is None or last is None else last - first,
        "free_last": med(lambda r: r["epochs"][-1].get("free_bytes")),
        "in_use_last": med(lambda r: r["epochs"][-1].get("in_use_bytes")),
        "seconds_per_epoch": med(
            lambda r: statistics.median(e["seconds"] for e in r["epochs"][1:] or r["epochs"])
        ),
        "latent_seconds": med(lambda r: r["latent"]["seconds"]),
        "tuning": runs[0].get("tuning"),
    }


def format_markdown(result: dict[str, Any]) -> str:
    a = result["args"]
    k = a["epochs"]
    lines = [
        "## Loader memory over epochs: glibc's defaults against atlasloader's tuning",
        "",
        f"{a['cells']:,} cells x {a['genes']:,} genes, {a['nnz']} non-zeros per cell, "
        f"{a['codec']} chunks of 16 rows in 4096-row shards"
        + (
            f" ({a['var_subset']:,} genes registered with `var_subset`, read from the full rows)"
            if a["var_subset"]
            else ""
        )
        + f"; batches of {a['batch_size']}, "
        f"{k} shuffled epochs over 90 % of the cells, then a store-order pass over all cells; "
        + ("a small torch autoencoder step per batch" if a["model"] else "no model step")
        + f"; each run a fresh process, {a['repeats']} run(s) each (medians), configurations "
        "alternated. RSS: `VmRSS` after each epoch; peak: `VmHWM` at the end (imports and "
        "setup included); growth: RSS after the last epoch minus after the first; heap free: "
        "bytes glibc's heaps keep free after the last epoch (`mallinfo2().fordblks`); in use: "
        "bytes allocated in them (`uordblks`). MiB throughout.",
        "",
    ]
    epoch_cols = " | ".join(f"ep {i + 1}" for i in range(k))
    head = (
        f"| mode | config | setup | {epoch_cols} | latent pass | peak | growth 1→{k} | "
        "heap free | in use | s/epoch |"
    )
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for mode, by_config in result["summary"].items():
        for name, s in by_config.items():
            rss = " | ".join(_mib(v) for v in s["rss"])
            growth = "" if s["growth"] is None else f"{s['growth'] / MIB:+,.0f}"
            spe = "" if s["seconds_per_epoch"] is None else f"{s['seconds_per_epoch']:.2f}"
            lines.append(
                f"| {mode} | {name} | {_mib(s['setup_rss'])} | {rss} | {_mib(s['latent_rss'])} "
                f"| {_mib(s['peak'])} | {growth} | {_mib(s['free_last'])} "
                f"| {_mib(s['in_use_last'])} | {spe} |"
            )
    tuned = next(
        (
            s["tuning"]
            for m in result["summary"].values()
            for s in m.values()
            if s["tuning"] and s["tuning"]["applied"]
        ),
        None,
    )
    lines += [
        "",
        "s/epoch: median over epochs 2..k (wall time on a shared 2-core machine: run-to-run "
        "noise is 10-20 %).",
    ]
    if tuned:
        lines.append(f"Tuning applied: {tuned['reason']}.")
    m = result["machine"]
    lines.append(f"Machine: {m['cpus']} cores, {m['platform']}, {m['libc']}; Python {m['python']}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default="bench_out/data", help="benchmark data (reused if there)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--cells", type=int, default=300_000)
    ap.add_argument("--genes", type=int, default=2_000)
    ap.add_argument("--nnz", type=int, default=200, help="non-zeros per cell")
    ap.add_argument("--categories", type=int, default=40, help="obs['batch'] categories")
    ap.add_argument("--codec", default="zstd", choices=("zstd", "lz4"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--modes", nargs="+", default=["dense", "sparse"], choices=("dense", "sparse"))
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument(
        "--var-subset",
        type=int,
        default=0,
        help="register only this many genes (read from the full rows, as an HVG subset)",
    )
    ap.add_argument("--model", action="store_true", help="a torch autoencoder step per batch")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--python", default=sys.executable, help="interpreter with atlasloader")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (growth is measured from epoch 1 to the last)")

    print("data:", flush=True)
    store, made = prepare(args)
    runs: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    names = list(args.configs)
    for rep in range(args.repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for mode in args.modes:
            for name in order:
                params = {
                    "mode": mode,
                    "epochs": args.epochs,
                    "batch_size": args.batch_size,
                    "model": args.model,
                    "seed": args.seed,
                    "var_subset": args.var_subset,
                }
                cmd = [args.python, "-c", RUN, str(store), json.dumps(params)]
                t0 = time.perf_counter()
                try:
                    res = run_json(cmd, args.timeout, clean_env(CONFIGS[name]), inherit=False)
                except RunFailed as e:
                    print(f"  {mode:6s} {name}: FAILED {e}", flush=True)
                    errors.append({"mode": mode, "config": name, "error": str(e)})
                    continue
                rss = " ".join(_mib(e["VmRSS"]) for e in res["epochs"])
                print(
                    f"  {mode:6s} {name:32s} RSS/epoch [{rss}] peak "
                    f"{_mib(res['latent']['VmHWM'])} MiB ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
                runs.append({"mode": mode, "config": name, "repeat": rep, **res})

    summary: dict[str, dict[str, Any]] = {}
    for mode in args.modes:
        for name in names:
            mine = [r for r in runs if r["mode"] == mode and r["config"] == name]
            if mine:
                summary.setdefault(mode, {})[name] = summarise(mine, args.epochs)
    import numpy as np
    import torch

    result = {
        "args": vars(args),
        "store": str(store),
        "data": made,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "libc": " ".join(platform.libc_ver()),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
        },
        "summary": summary,
        "runs": runs,
        "errors": errors,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps(result, indent=1))
    md = format_markdown(result)
    (out / "memory.md").write_text(md)
    print()
    print(md)
    print(f"wrote {out / 'memory.json'} and {out / 'memory.md'}")


if __name__ == "__main__":
    main()
