"""Conversion cost: ``atlasloader.convert`` of generated ``.h5ad`` atlases, time and peak memory.

Runs, each in a fresh subprocess (peak RSS is that process's ``VmHWM``, read from
``/proc/self/status``: the whole process, Python, numpy, dask, zarr and h5py included):

- one input at two sizes 10x apart (memory must not grow with the input);
- two inputs concatenated into one store;
- ``shuffle=True`` on the larger input (the pre-shuffling annbatch does).

Throughput is input megabytes per second of wall time, next to the machine's plain copy speed
of the same files (``shutil.copyfile`` to the same disk, page cache warm). Every input is read
once before its runs, so all runs start with a warm page cache. The inputs default to the
benchmark atlases of ``bench_loader.py`` (400,000 and 40,000 cells x 20,000 genes, 814
non-zeros per cell, uncompressed CSR ``.h5ad``); missing ones are generated with
``atlasloader.data.make_atlas_h5ad``::

    .venv/bin/python benchmarks/bench_convert.py                       # the full run
    .venv/bin/python benchmarks/bench_convert.py --cells 4000 40000    # a smaller one

Writes ``convert.json`` and ``convert.md`` under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GENES, NNZ = 20_000, 814
# annbatch's pre-shuffling conversion of the 400k-cell file on this machine (bench_loader.py).
ANNBATCH_400K = {"seconds": 25.7, "peak_rss_gb": 9.97}

CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")  # obs_names colliding between the two inputs are renamed

def hwm_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))

from atlasloader.conversion.convert import convert
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
convert(args["src"], args["dst"], overwrite=True, **args["kwargs"])
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_rss_mb": hwm_mb()}))
"""


def h5ad_path(data: Path, cells: int, seed: int = 0) -> Path:
    """The benchmark atlas of ``cells`` cells (generated if missing)."""
    path = data / f"atlas_{cells}x{GENES}_s{seed}.h5ad"
    if not path.exists():
        print(f"generating {path} ...", flush=True)
        code = (
            "import sys; from atlasloader.data import make_atlas_h5ad; "
            f"make_atlas_h5ad(sys.argv[1], n_cells={cells}, n_genes={GENES}, "
            f"nnz_per_cell={NNZ}, n_batches=40, seed={seed}, codec=None)"
        )
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return path


def warm(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(64 << 20):
                pass


def settle() -> None:
    """Write back dirty pages of earlier runs, so that every timing starts alike."""
    os.sync()
    time.sleep(1.0)


def copy_speed(paths: list[Path], tmp: Path, repeats: int = 3) -> float:
    """Seconds to ``shutil.copyfile`` the files to ``tmp`` (same disk, warm page cache).

    The median of ``repeats`` copies, each started after the previous one was written back
    (like the conversions, the timed copy itself is not synced).
    """
    times = []
    for _ in range(repeats):
        warm(paths)
        settle()
        t0 = time.perf_counter()
        for i, path in enumerate(paths):
            shutil.copyfile(path, tmp / f"copy-{i}.bin")
        times.append(time.perf_counter() - t0)
        for i in range(len(paths)):
            (tmp / f"copy-{i}.bin").unlink()
    return sorted(times)[len(times) // 2]


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(name: str, paths: list[Path], tmp: Path, kwargs: dict[str, Any]) -> dict[str, Any]:
    warm(paths)
    settle()
    dst = tmp / "out.zarr"
    src: Any = [str(p) for p in paths] if len(paths) > 1 else str(paths[0])
    args = json.dumps({"src": src, "dst": str(dst), "kwargs": kwargs})
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, args], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    in_bytes = sum(p.stat().st_size for p in paths)
    out_bytes = disk_bytes(dst)
    shutil.rmtree(dst)
    copy_s = copy_speed(paths, tmp)
    row = {
        "run": name,
        "inputs": [p.name for p in paths],
        "kwargs": kwargs,
        "input_mb": in_bytes / 1e6,
        "output_mb": out_bytes / 1e6,
        "seconds": result["seconds"],
        "peak_rss_mb": result["peak_rss_mb"],
        "mb_per_s": in_bytes / 1e6 / result["seconds"],
        "copy_seconds": copy_s,
        "copy_mb_per_s": in_bytes / 1e6 / copy_s,
    }
    print(
        f"{name:<40} {row['input_mb']:>8,.0f} MB in {row['seconds']:6.1f} s "
        f"({row['mb_per_s']:5.0f} MB/s; copy {row['copy_mb_per_s']:5.0f} MB/s)  "
        f"peak RSS {row['peak_rss_mb']:6,.0f} MB  output {row['output_mb']:,.0f} MB",
        flush=True,
    )
    return row


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        "| run | input | time | throughput | plain copy | peak RSS | output |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['input_mb'] / 1e3:.2f} GB | {r['seconds']:.1f} s | "
            f"{r['mb_per_s']:,.0f} MB/s | {r['copy_mb_per_s']:,.0f} MB/s | "
            f"{r['peak_rss_mb'] / 1e3:.2f} GB | {r['output_mb'] / 1e3:.2f} GB |"
        )
    lines += [
        "",
        f"For comparison, annbatch's pre-shuffling conversion of the 400k-cell file took "
        f"{ANNBATCH_400K['seconds']} s and {ANNBATCH_400K['peak_rss_gb']} GB peak RSS on this "
        "machine (`bench_loader.py`).",
        "",
        "Peak RSS is the converting process's `VmHWM` (imports included); throughput is input "
        "bytes per second of `convert` wall time; plain copy is `shutil.copyfile` of the same "
        "input(s) to the same disk (median of 3). Warm page cache, dirty pages written back "
        "before each run (`os.sync()`). Machine: "
        f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}.",
        "",
        f"Reproduce: `{command}`",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cells", type=int, nargs=2, default=[40_000, 400_000],
                    help="the two input sizes (cells), 10x apart")  # fmt: skip
    ap.add_argument("--data", default=str(ROOT / "bench_out" / "data"), help="inputs' folder")
    ap.add_argument("--tmp", default=None, help="folder for outputs (default: beside --data)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    command = shlex.join(
        [os.path.relpath(sys.executable, ROOT), "benchmarks/bench_convert.py", *sys.argv[1:]]
    )
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    small, large = (h5ad_path(data, n) for n in sorted(args.cells))
    n_small, n_large = sorted(args.cells)
    tmp_parent = Path(args.tmp) if args.tmp else data.parent
    rows = []
    with tempfile.TemporaryDirectory(dir=tmp_parent, prefix="bench-convert-") as t:
        tmp = Path(t)
        rows.append(run(f"one input, {n_small:,} cells", [small], tmp, {}))
        rows.append(run(f"one input, {n_large:,} cells", [large], tmp, {}))
        rows.append(run(f"two inputs, {n_large:,} + {n_small:,} cells", [large, small], tmp, {}))
        rows.append(
            run(f"shuffle=True, {n_large:,} cells", [large], tmp, {"shuffle": True, "seed": 0})
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "cpus": os.cpu_count(), "annbatch_400k": ANNBATCH_400K}
    (out / "convert.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")
    (out / "convert.md").write_text(markdown(rows, command))
    print(f"\nwrote {out / 'convert.json'} and {out / 'convert.md'}")
    print(f"reproduce: {command}")


if __name__ == "__main__":
    main()
