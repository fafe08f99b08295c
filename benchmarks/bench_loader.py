"""Shuffled-minibatch loaders side by side: atlasloader against annbatch, scDataset, scvi-tools.

Generates (or reuses) a synthetic atlas (400,000 cells x 20,000 genes, 814 non-zeros per
cell, 40 ``batch`` categories in contiguous sorted blocks) as an uncompressed ``.h5ad`` (what
``anndata.write_h5ad`` writes by default; the backed peers read it), converts it with
``atlasloader.convert`` (no pre-shuffling), pre-shuffles annbatch's own store (timed), then runs
every loader in a fresh subprocess, alternating them (A B A B ...) and reporting medians:

- atlasloader (dense float32 batches of 512), annbatch, scDataset, scvi-tools (backed and in
  memory) with the best settings of ``shared/PERF_NOTES.md``;
- atlasloader with sparse output (no densifying), and on a store 10x smaller (memory flatness);
- a sweep of atlasloader's ``rows_per_read`` (buffers kept at ~8192 rows, as the defaults) for the
  randomness-versus-speed plot;
- optionally, cold page cache runs (``--cold``, needs root and a writable
  ``/proc/sys/vm/drop_caches``).

Writes ``loader.json``, ``loader.md`` (ready for the README) and ``loader_tradeoff.png`` under
``--out`` and prints the table. atlasloader runs with this interpreter (``--python``), the
peers with ``.venv-peers/bin/python`` (``--peers-python``)::

    .venv/bin/python benchmarks/bench_loader.py                        # the full run (~15 min)
    .venv/bin/python benchmarks/bench_loader.py --cold                 # plus cold-cache runs
    .venv/bin/python benchmarks/bench_loader.py --cells 50000 --repeats 1   # a smoke run

Data are kept under ``--dir`` with a ``.ok.json`` marker recording how they were made, and
reused by later runs with the same parameters.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "benchmarks" / "peers"
sys.path.insert(0, str(ROOT / "src"))  # atlasloader.benchmarking only, if run without the venv

from atlasloader.benchmarking.bench import BenchResult, format_markdown, format_table  # noqa: E402

PEER_KEYS = ("annbatch", "scdataset", "scvi", "scvi-memory")
RUN_KEYS = ("atlasloader", *PEER_KEYS, "sparse", "small", "sweep")
SWEEP = (1, 4, 16, 32, 64, 256)
SHORT = {
    "atlasloader": "atlasloader defaults (not pre-shuffled)",
    "annbatch": "annbatch (pre-shuffled store)",
    "scdataset": "scDataset (h5ad, 2 workers)",
    "scvi": "scvi-tools, backed h5ad",
    "scvi-memory": "scvi-tools, in memory",
}

# Uncompressed, as anndata's write_h5ad writes by default: lzf-compressed 256-row chunks make the
# backed random reads of scvi-tools and scDataset 5-40x slower (each batch decompresses most
# chunks), which would handicap them.
GEN_H5AD = """
import json, sys, time
from atlasloader.data import make_atlas_h5ad
p = json.loads(sys.argv[2])
t0 = time.perf_counter()
make_atlas_h5ad(sys.argv[1], block_rows=65_536, codec=None, **p)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""

GEN_STORE = """
import json, sys, time
import atlasloader
from atlasloader.data import make_atlas_store
h5ad, dst, p = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.perf_counter()
try:
    convert = atlasloader.convert
except (AttributeError, ImportError):
    convert = None
if convert is not None:
    convert(h5ad, dst, overwrite=True)
    how = "atlasloader.convert(h5ad)"
else:
    make_atlas_store(dst, block_rows=65_536, chunk_rows=16, shard_rows=4096, **p)
    how = "make_atlas_store(chunk_rows=16, shard_rows=4096)"
print(json.dumps({"seconds": time.perf_counter() - t0, "how": how}))
"""


class RunFailed(RuntimeError):
    """A benchmark subprocess exited with an error (message: command and stderr tail)."""


def run_json(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run ``cmd`` and parse the last JSON line of its stdout."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        raise RunFailed(f"timed out after {timeout:.0f} s: {shlex.join(cmd)}") from e
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        msg = f"exit {proc.returncode}: {shlex.join(cmd)}\n{tail}"
        raise RunFailed(msg)
    return json.loads(lines[-1])


# --- data ----------------------------------------------------------------------------------------
@dataclass
class Data:
    """Paths of one dataset size and how they were made."""

    n_cells: int
    h5ad: Path
    store: Path
    annbatch: Path | None = None
    made: dict[str, Any] = field(default_factory=dict)


def _fresh(marker: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The record in ``marker`` if it was made with ``params``."""
    if not marker.exists():
        return None
    rec = json.loads(marker.read_text())
    return rec if rec.get("params") == params else None


def _made(path: Path, params: dict[str, Any], make: Any) -> dict[str, Any]:
    """Reuse ``path`` when its marker matches ``params``, else ``make()`` it and write one."""
    marker = path.with_name(path.name + ".ok.json")
    rec = _fresh(marker, params)
    if rec is not None and path.exists():
        print(f"  reusing {path}", flush=True)
        return {**rec, "reused": True}
    marker.unlink(missing_ok=True)
    print(f"  writing {path} ...", flush=True)
    info = make()
    rec = {"params": params, **info}
    marker.write_text(json.dumps(rec))
    return {**rec, "reused": False}


def prepare(args: argparse.Namespace, n_cells: int, with_annbatch: bool) -> Data:
    """Generate (or reuse) the ``.h5ad``, atlasloader's store and annbatch's collection."""
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    params = {
        "n_cells": n_cells,
        "n_genes": args.genes,
        "nnz_per_cell": args.nnz,
        "n_batches": args.categories,
        "seed": args.seed,
    }
    stem = f"atlas_{n_cells}x{args.genes}_s{args.seed}"
    data = Data(n_cells, d / f"{stem}.h5ad", d / f"{stem}.atlasloader.zarr")
    js = json.dumps(params)
    t = args.timeout
    params = {**params, "h5ad_codec": None}  # the stores below are made from this h5ad
    data.made["h5ad"] = _made(
        data.h5ad, params, lambda: run_json([args.python, "-c", GEN_H5AD, str(data.h5ad), js], t)
    )
    data.made["store"] = _made(
        data.store,
        {**params, "from": "h5ad"},
        lambda: run_json([args.python, "-c", GEN_STORE, str(data.h5ad), str(data.store), js], t),
    )
    if with_annbatch:
        data.annbatch = d / f"{stem}.annbatch.zarr"
        cmd = [
            args.peers_python,
            str(PEERS / "run_annbatch.py"),
            "build",
            str(data.h5ad),
            str(data.annbatch),
            "--seed",
            str(args.seed),
        ]
        try:
            data.made["annbatch"] = _made(
                data.annbatch, {**params, "chunk_rows": 64}, lambda: run_json(cmd, t)
            )
        except RunFailed as e:
            print(f"  annbatch store could not be built: {e}", flush=True)
            data.made["annbatch"] = {"error": str(e)}
            data.annbatch = None
    return data


def warm_page_cache(datasets: list[Data]) -> None:
    """Read every file of the inputs once, so "warm cache" runs never wait for the disk.

    Random reads touch every shard of a store in an epoch but only a part of it in a timed
    run; without this the first runs would read partly from disk.
    """
    t0, total = time.perf_counter(), 0
    for data in datasets:
        for path in (data.h5ad, data.store, data.annbatch):
            if path is None or not path.exists():
                continue
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for f in files:
                with open(f, "rb") as fh:
                    while chunk := fh.read(16 << 20):
                        total += len(chunk)
    took = time.perf_counter() - t0
    print(f"  page cache warmed: {total / 1e9:.1f} GB read in {took:.1f} s", flush=True)


# --- runs ----------------------------------------------------------------------------------------
@dataclass
class Spec:
    """One loader configuration: how to run it and its label."""

    key: str
    label: str
    cmd: list[str]


def _common(args: argparse.Namespace) -> list[str]:
    return [
        "--batch-size",
        str(args.batch_size),
        "--n-batches",
        str(args.n_batches),
        "--warmup-batches",
        str(args.warmup_batches),
        "--seed",
        str(args.seed),
    ]


def _k(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k"


def atlasloader_spec(
    args: argparse.Namespace,
    data: Data,
    key: str,
    label: str,
    *,
    sparse: bool = False,
    rows: int | None = None,
    reads: int | None = None,
) -> Spec:
    """Run ``python -m atlasloader.cli bench`` (``atlasloader bench``) on ``data``'s store."""
    cmd = [
        args.python,
        "-m",
        "atlasloader.cli",
        "bench",
        str(data.store),
        "--json",
        "--name",
        label,
        *_common(args),
    ]
    cmd += ["--sparse"] if sparse else []
    cmd += [] if rows is None else ["--rows-per-read", str(rows)]
    cmd += [] if reads is None else ["--reads-per-buffer", str(reads)]
    return Spec(key, label, cmd)


def main_specs(args: argparse.Namespace, big: Data, small: Data | None) -> list[Spec]:
    """The alternated runs: atlasloader, peers, sparse output and the small store."""
    n = _k(big.n_cells)
    wanted = [k for k in RUN_KEYS if k not in args.skip]
    peer = [args.peers_python]
    h5 = str(big.h5ad)
    specs: list[Spec] = []
    for key in wanted:
        if key == "atlasloader":
            label = f"atlasloader, defaults, `convert`ed store, not pre-shuffled ({n} cells)"
            specs.append(atlasloader_spec(args, big, key, label))
        elif key == "annbatch" and big.annbatch is not None:
            label = "annbatch 0.3.1, chunk 64, preload 64, its own pre-shuffled store"
            cmd = [
                *peer,
                str(PEERS / "run_annbatch.py"),
                "load",
                str(big.annbatch),
                "--name",
                label,
                *_common(args),
            ]
            specs.append(Spec(key, label, cmd))
        elif key == "scdataset":
            label = "scDataset 0.3.0 on h5ad, block 16, fetch 16, 2 workers"
            cmd = [*peer, str(PEERS / "run_scdataset.py"), h5, "--name", label, *_common(args)]
            specs.append(Spec(key, label, cmd))
        elif key == "scvi":
            label = "scvi-tools AnnDataLoader, backed h5ad"
            cmd = [*peer, str(PEERS / "run_scvi.py"), h5, "--name", label, *_common(args)]
            specs.append(Spec(key, label, cmd))
        elif key == "scvi-memory":
            label = "scvi-tools AnnDataLoader, all in memory (one index dtype)"
            cmd = [
                *peer,
                str(PEERS / "run_scvi.py"),
                h5,
                "--in-memory",
                "--name",
                label,
                *_common(args),
            ]
            specs.append(Spec(key, label, cmd))
        elif key == "sparse":
            label = f"atlasloader, sparse CSR output, no densify ({n} cells)"
            specs.append(atlasloader_spec(args, big, key, label, sparse=True))
        elif key == "small" and small is not None:
            label = f"atlasloader, defaults ({_k(small.n_cells)} cells: memory vs store size)"
            specs.append(atlasloader_spec(args, small, key, label))
    return specs


def sweep_specs(args: argparse.Namespace, big: Data) -> list[Spec]:
    """atlasloader at each ``rows_per_read``, ``reads_per_buffer`` keeping ~buffer rows."""
    specs = []
    for rows in args.sweep:
        reads = max(1, args.buffer_rows // rows)
        label = f"atlasloader, rows_per_read={rows}, reads_per_buffer={reads}"
        specs.append(atlasloader_spec(args, big, f"sweep-{rows}", label, rows=rows, reads=reads))
    return specs


def cold_spec(spec: Spec) -> Spec:
    """The same run, labelled as a cold-cache one."""
    label = spec.label + ", cold cache"
    cmd = list(spec.cmd)
    cmd[cmd.index("--name") + 1] = label
    return Spec(f"cold-{spec.key}", label, cmd)


def drop_caches() -> str | None:
    """Drop the page cache; ``None`` on success, else why it was not possible."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "not root"
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        return f"writing /proc/sys/vm/drop_caches failed: {e.strerror or e}"
    return None


def run_alternating(
    specs: list[Spec], repeats: int, timeout: float, cold: bool = False
) -> tuple[dict[str, list[BenchResult]], dict[str, list[str]]]:
    """Run ``specs`` round-robin ``repeats`` times; results and errors by key."""
    results: dict[str, list[BenchResult]] = {s.key: [] for s in specs}
    errors: dict[str, list[str]] = {}
    for r in range(repeats):
        for s in specs:
            if cold:
                why = drop_caches()
                if why is not None:
                    raise RunFailed(f"cannot drop the page cache: {why}")
            print(f"  [{r + 1}/{repeats}] {s.label} ...", end=" ", flush=True)
            t0 = time.perf_counter()
            try:
                res = BenchResult.from_dict(run_json(s.cmd, timeout))
            except RunFailed as e:
                errors.setdefault(s.key, []).append(str(e))
                print(f"FAILED ({time.perf_counter() - t0:.0f} s)", flush=True)
                continue
            results[s.key].append(res)
            print(
                f"{res.cells_per_s / 1e3:.1f}k cells/s, {res.peak_rss_gb:.2f} GB, "
                f"entropy {res.entropy_ratio:.2f} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    return results, errors


def median(runs: list[BenchResult]) -> BenchResult:
    """Per-metric median of repeated runs (the individual runs kept in ``settings``)."""
    fields = (
        "cells_per_s",
        "time_to_first_batch_s",
        "peak_rss_gb",
        "entropy_ratio",
        "peak_rss_workers_gb",
        "entropy_mean",
        "entropy_ideal",
        "seconds",
    )
    med = {f: float(statistics.median(getattr(r, f) for r in runs)) for f in fields}
    per_run = [
        {
            f: getattr(r, f)
            for f in ("cells_per_s", "time_to_first_batch_s", "peak_rss_gb", "entropy_ratio")
        }
        for r in runs
    ]
    return runs[0].with_(**med, settings={**runs[0].settings, "runs": per_run})


def medians(specs: list[Spec], results: dict[str, list[BenchResult]]) -> dict[str, BenchResult]:
    return {s.key: median(results[s.key]) for s in specs if results.get(s.key)}


# --- reporting -----------------------------------------------------------------------------------
def plot(
    path: Path, sweep: list[tuple[int, int, BenchResult]], points: list[tuple[str, BenchResult]]
) -> None:
    """cells/s against batch entropy / ideal: atlasloader's knob curve and peers as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    if sweep:
        xs = [r.entropy_ratio for _, _, r in sweep]
        ys = [r.cells_per_s / 1e3 for _, _, r in sweep]
        ax.plot(xs, ys, "o-", color="C0", label="atlasloader: rows_per_read x reads_per_buffer")
        for i, ((rows, reads, _), x, y) in enumerate(zip(sweep, xs, ys)):
            # Alternate sides: neighbouring knob settings sit close together near 1.0.
            ax.annotate(
                f"{rows}x{reads}",
                (x, y),
                textcoords="offset points",
                fontsize=8,
                xytext=(-8, 6 if i % 2 else -12),
                ha="right",
                color="C0",
            )
    markers = "sD^vP*X"
    for i, (name, r) in enumerate(points):
        ax.scatter(
            [r.entropy_ratio],
            [r.cells_per_s / 1e3],
            marker=markers[i % len(markers)],
            s=60,
            color=f"C{i + 1}",
            label=name,
            zorder=3,
        )
    xs_all = [r.entropy_ratio for _, _, r in sweep] + [r.entropy_ratio for _, r in points]
    finite = [x for x in xs_all if math.isfinite(x)]
    if finite:
        ax.set_xlim(min(min(finite) - 0.03, 0.95), 1.02)
    ax.axvline(0.98, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("batch entropy / ideal (1 = true random permutation; target >= 0.98)")
    ax.set_ylabel("cells/s (thousands), dense float32 batches")
    ax.set_title("Randomness against speed")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _gb(v: float) -> str:
    return f"{v:.2f} GB" if math.isfinite(v) else "–"


def markdown(
    report: dict[str, Any],
    main_rows: list[BenchResult],
    args: argparse.Namespace,
    sweep: list[tuple[int, int, BenchResult]],
    cold_rows: list[BenchResult],
    mem_rows: list[tuple[int, BenchResult]],
) -> str:
    """The README section: tables, plot, setup costs, failures and the command."""
    cfg = report["config"]
    out = [
        "## Loader benchmark",
        "",
        f"{_k(cfg['cells'])} cells x {cfg['genes']:,} genes, {cfg['nnz']} non-zeros per cell, "
        f"{cfg['categories']} `batch` categories in contiguous sorted blocks; shuffled batches of "
        f"{cfg['batch_size']} densified to float32 `({cfg['batch_size']}, {cfg['genes']})` "
        f"tensors unless noted. Warm page cache; median of {cfg['repeats']} alternated runs, "
        f"{cfg['n_batches']} batches timed after {cfg['warmup_batches']} warm-up batches, each "
        f"loader in its own process. Machine: {report['machine']}.",
        "",
        format_markdown(main_rows),
        "Time to first batch counts loader construction and the first batch; opening and "
        "registering the data (atlasloader, scvi-tools), reading obs (annbatch, scDataset) or "
        "loading it into memory are reported below as setup. Peak RSS is the process's `VmHWM` "
        "(plus its DataLoader workers' for scDataset), setup included. scvi-tools and scDataset "
        "read an uncompressed `.h5ad` (anndata's default); scDataset's workers send CSR batches "
        "that the main process densifies (faster here than densifying in the workers and "
        "passing dense tensors through shared memory); peers densify with scipy's `toarray`.",
        "",
    ]
    setup = [(r.loader, r.settings.get("setup_s")) for r in main_rows]
    if any(s is not None for _, s in setup):
        out += ["| loader | setup (open, register / load) |", "|---|---:|"]
        out += [f"| {name} | {s:.2f} s |" for name, s in setup if s is not None]
        out.append("")
    made = report["data"]
    ab = made.get("annbatch", {})
    if "build_s" in ab:
        out.append(
            f"annbatch's pre-shuffled store: built in {ab['build_s']:.1f} s with "
            f"{_gb(ab['build_peak_rss_gb'])} peak RSS."
        )
    st = made.get("store", {})
    if "seconds" in st:
        out.append(f"atlasloader's store: {st.get('how', '')} in {st['seconds']:.1f} s.")
    out.append("")
    if mem_rows:
        out += [
            "### Memory against store size",
            "",
            "| store | peak RSS | cells/s |",
            "|---|---:|---:|",
        ]
        out += [
            f"| {_k(n)} cells | {_gb(r.peak_rss_gb)} | {r.cells_per_s / 1e3:.1f}k |"
            for n, r in mem_rows
        ]
        out.append("")
    if sweep:
        out += [
            "### Randomness against speed",
            "",
            "atlasloader's `rows_per_read` (consecutive rows per random read) with "
            f"`reads_per_buffer` keeping ~{cfg['buffer_rows']} rows per shuffle buffer:",
            "",
            "| rows_per_read | reads_per_buffer | cells/s | batch entropy / ideal |",
            "|---:|---:|---:|---:|",
        ]
        out += [
            f"| {rows} | {reads} | {r.cells_per_s / 1e3:.1f}k | {r.entropy_ratio:.2f} |"
            for rows, reads, r in sweep
        ]
        out += ["", f"![cells/s against batch entropy]({report['plot']})", ""]
    cold = report.get("cold")
    if cold is not None:
        out += ["### Cold page cache", ""]
        if cold_rows:
            out += [
                "Page cache dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before every run.",
                "",
                format_markdown(cold_rows),
            ]
        else:
            out += [f"Not measured: {cold.get('skipped', 'no successful run')}.", ""]
    if report["errors"]:
        out += ["### Failed runs", ""]
        for key, errs in report["errors"].items():
            first = errs[0].splitlines()
            out.append(f"- `{key}`: {first[-1] if first else 'failed'}")
        out.append("")
    out += ["Reproduce:", "", "```bash", report["command"], "```", ""]
    return "\n".join(out)


def machine() -> str:
    mem = ""
    try:
        import psutil

        mem = f", {psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:
        pass
    return f"{os.cpu_count()} cores{mem}, {platform.system()} {platform.machine()}"


# --- main ----------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dir", default="bench_out/data", help="benchmark data (reused if there)")
    ap.add_argument("--out", default="bench_out", help="where results go")
    ap.add_argument("--cells", type=int, default=400_000)
    ap.add_argument("--genes", type=int, default=20_000)
    ap.add_argument("--nnz", type=int, default=814, help="non-zeros per cell")
    ap.add_argument("--categories", type=int, default=40, help="obs['batch'] categories")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--small-factor",
        type=int,
        default=10,
        help="the memory-flatness store has cells / this many cells",
    )
    ap.add_argument("--repeats", type=int, default=2, help="alternated runs of each loader")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--n-batches", type=int, default=300, help="batches timed per run")
    ap.add_argument("--warmup-batches", type=int, default=20)
    ap.add_argument(
        "--sweep",
        type=int,
        nargs="*",
        default=list(SWEEP),
        help="rows_per_read values for the trade-off plot",
    )
    ap.add_argument("--sweep-repeats", type=int, default=1)
    ap.add_argument("--buffer-rows", type=int, default=8192, help="rows per buffer in the sweep")
    ap.add_argument("--cold", action="store_true", help="also run with the page cache dropped")
    ap.add_argument("--skip", nargs="*", default=[], choices=RUN_KEYS, help="runs to leave out")
    ap.add_argument("--python", default=sys.executable, help="interpreter with atlasloader")
    ap.add_argument("--peers-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per subprocess")
    ap.add_argument("--only-data", action="store_true", help="generate the data and stop")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    command = shlex.join(["python", "benchmarks/bench_loader.py", *(argv or sys.argv[1:])])
    args.dir = str(Path(args.dir).resolve())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    peers_ok = Path(args.peers_python).exists()
    if not peers_ok:
        print(
            f"no peers interpreter at {args.peers_python}: peers skipped (install them with "
            "shared/tools/install_peers.sh)",
            flush=True,
        )
        args.skip = [*args.skip, *PEER_KEYS]

    print(f"data under {args.dir}", flush=True)
    big = prepare(args, args.cells, with_annbatch="annbatch" not in args.skip)
    small = None
    if "small" not in args.skip and args.small_factor > 1:
        small = prepare(args, max(1, args.cells // args.small_factor), with_annbatch=False)
    if args.only_data:
        return
    os.sync()  # fresh data still being written back to disk would slow the first runs down
    warm_page_cache([big, *([small] if small else [])])

    print("alternated runs (warm cache)", flush=True)
    specs = main_specs(args, big, small)
    results, errors = run_alternating(specs, args.repeats, args.timeout)
    med = medians(specs, results)

    sweep: list[tuple[int, int, BenchResult]] = []
    if "sweep" not in args.skip and args.sweep:
        print("rows_per_read sweep", flush=True)
        sspecs = sweep_specs(args, big)
        sres, serr = run_alternating(sspecs, args.sweep_repeats, args.timeout)
        errors.update(serr)
        smed = medians(sspecs, sres)
        for rows, s in zip(args.sweep, sspecs):
            if s.key in smed:
                sweep.append((rows, max(1, args.buffer_rows // rows), smed[s.key]))

    cold_report: dict[str, Any] | None = None
    cold_rows: list[BenchResult] = []
    if args.cold:
        why = drop_caches()
        cold_report = {}
        if why is not None:
            cold_report["skipped"] = f"the page cache could not be dropped ({why})"
            print(f"cold runs skipped: {cold_report['skipped']}", flush=True)
        else:
            print("alternated runs (cold cache)", flush=True)
            keys = ("atlasloader", "annbatch", "scdataset", "scvi")
            cspecs = [cold_spec(s) for s in specs if s.key in keys]
            try:
                cres, cerr = run_alternating(cspecs, args.repeats, args.timeout, cold=True)
                errors.update(cerr)
                cold_rows = list(medians(cspecs, cres).values())
            except RunFailed as e:
                cold_report["skipped"] = str(e)
            cold_report["results"] = [r.to_dict() for r in cold_rows]

    dense = [med[k] for k in ("atlasloader", *PEER_KEYS) if k in med]
    main_rows = dense + [med[k] for k in ("sparse", "small") if k in med]
    mem_rows = []
    if "atlasloader" in med and "small" in med and small is not None:
        mem_rows = [(small.n_cells, med["small"]), (big.n_cells, med["atlasloader"])]

    report: dict[str, Any] = {
        "config": {
            "cells": args.cells,
            "genes": args.genes,
            "nnz": args.nnz,
            "categories": args.categories,
            "seed": args.seed,
            "repeats": args.repeats,
            "batch_size": args.batch_size,
            "n_batches": args.n_batches,
            "warmup_batches": args.warmup_batches,
            "buffer_rows": args.buffer_rows,
            "small_cells": small.n_cells if small else None,
        },
        "machine": machine(),
        "command": command,
        "data": big.made,
        "data_small": small.made if small else None,
        "results": {k: r.to_dict() for k, r in med.items()},
        "runs": {k: [r.to_dict() for r in rs] for k, rs in results.items()},
        "sweep": [
            {"rows_per_read": rows, "reads_per_buffer": reads, **r.to_dict()}
            for rows, reads, r in sweep
        ],
        "cold": cold_report,
        "errors": errors,
        "plot": os.path.relpath(out.resolve() / "loader_tradeoff.png", ROOT),
    }
    (out / "loader.json").write_text(json.dumps(report, indent=1, default=str))
    points = [(SHORT[k], med[k]) for k in ("atlasloader", *PEER_KEYS) if k in med]
    if sweep or points:
        plot(out / "loader_tradeoff.png", sweep, points)
    md = markdown(report, main_rows, args, sweep, cold_rows, mem_rows)
    (out / "loader.md").write_text(md)

    from rich.console import Console

    console = Console(width=max(140, Console().width))
    console.print(format_table(main_rows, title="Loaders (median, warm cache)"))
    if cold_rows:
        console.print(format_table(cold_rows, title="Cold page cache"))
    if sweep:
        console.print(format_table([r for _, _, r in sweep], title="rows_per_read sweep"))
    for key, errs in errors.items():
        console.print(f"[red]{key} failed[/red] ({len(errs)}x): {errs[0]}")
    if cold_report and "skipped" in cold_report:
        console.print(f"cold cache: {cold_report['skipped']}")
    print()
    print(md)
    print(f"wrote {out / 'loader.json'}, {out / 'loader.md'}, {out / 'loader_tradeoff.png'}")


if __name__ == "__main__":
    main()
