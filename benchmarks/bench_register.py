"""Registration cost on generated atlases: time and peak memory, first and second time.

Each measurement runs in a fresh subprocess so peak RSS belongs to that step alone.

    python benchmarks/bench_register.py --cells 1000000 10000000 --out bench_out/register.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEP = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
# ru_maxrss survives exec (it would report the parent's peak): reset the high-water mark.
open("/proc/self/clear_refs", "w").write("5")
from atlasloader import AnnDataManager, read_lazy
from atlasloader.fields import CategoricalObsField, LayerField, NumericalObsField
import atlasloader.manager, atlasloader.registry.builder, dask.array, zarr  # import cost not timed
base = hwm_mb()
t0 = time.perf_counter()
adata = read_lazy(sys.argv[1])
m = AnnDataManager(fields=[LayerField("X", None), CategoricalObsField("batch", "batch"),
                           CategoricalObsField("labels", "labels"),
                           NumericalObsField("size_factor", "n_counts")])
m.register_fields(adata)
dt = time.perf_counter() - t0
peak = hwm_mb()
print(json.dumps({"seconds": dt, "peak_rss_mb": peak, "after_imports_mb": base}))
"""


def x_nbytes(path: Path) -> int:
    import zarr

    g = zarr.open_group(str(path), mode="r")
    x = g["X"]
    return sum(int(x[k].nbytes) for k in ("data", "indices", "indptr"))


def run_step(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", STEP, str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--genes", type=int, default=2_000)
    ap.add_argument("--nnz", type=int, default=20)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in args.cells:
            path = Path(tmp) / f"atlas_{n}.zarr"
            t0 = time.perf_counter()
            gen_code = (
                "from atlasloader.data import make_atlas_store; import sys; "
                f"make_atlas_store(sys.argv[1], n_cells={n}, n_genes={args.genes}, "
                f"n_batches={args.batches}, nnz_per_cell={args.nnz}, seed=0, "
                "block_rows=65_536, shard_rows=4096)"
            )
            subprocess.run([sys.executable, "-c", gen_code, str(path)], check=True)
            gen = time.perf_counter() - t0
            first, second = run_step(path), run_step(path)
            row = {
                "n_cells": n,
                "n_genes": args.genes,
                "x_gb": x_nbytes(path) / 1e9,
                "generate_s": gen,
                "first": first,
                "second": second,
            }
            rows.append(row)
            print(
                f"{n:>12,} cells  X {row['x_gb']:.2f} GB  first {first['seconds']:.2f} s "
                f"(peak {first['peak_rss_mb']:.0f} MB)  second {second['seconds'] * 1000:.0f} ms "
                f"(peak {second['peak_rss_mb']:.0f} MB)",
                flush=True,
            )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
