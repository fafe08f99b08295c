"""The same steps timed with two versions of atlasloader, alternately, on one store.

For a refactor: ``--before`` is the ``src`` folder of a checkout of the older commit
(``git worktree add /tmp/before <commit>``); the installed package is "after". Each repeat runs
both versions once each, in fresh processes, in alternating order, so a machine that slows
down or speeds up during the run weighs on both; the table shows medians and ranges.

    python benchmarks/bench_before_after.py --before /tmp/before/src --repeats 5

Steps: ``convert(shuffle=True)`` of a generated store (200,000 cells x 2,000 genes, 100 values
per cell), the first registration of the result, reopening it (records reused), and 150,000
cells of shuffled loading in batches of 512, dense and sparse.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STEP = r"""
import json, shutil, sys, time, warnings
from pathlib import Path
warnings.simplefilter("ignore")
import atlasloader
from atlasloader import AnnDataLoader, AnnDataManager, read_lazy
from atlasloader.fields import CategoricalObsField, LayerField

src, dst, cells = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
shutil.rmtree(dst, ignore_errors=True)
def fields():
    return [LayerField("X", None, is_count_data=True), CategoricalObsField("batch", "batch"),
            CategoricalObsField("labels", "labels")]
out = {"package": atlasloader.__file__}
t = time.perf_counter()
atlasloader.convert(src, dst, shuffle=True, progress=False)
out["convert_s"] = time.perf_counter() - t
t = time.perf_counter()
AnnDataManager(fields()).register_fields(read_lazy(dst, mode="r+"))
out["register_s"] = time.perf_counter() - t
t = time.perf_counter()
m = AnnDataManager(fields())
m.register_fields(read_lazy(dst))
out["reopen_ms"] = (time.perf_counter() - t) * 1e3
for sparse in (False, True):
    it = iter(AnnDataLoader(m, batch_size=512, shuffle=True, sparse=sparse))
    next(it)  # threads started, first buffer read: not timed
    n, t = 0, time.perf_counter()
    for batch in it:
        n += batch["X"].shape[0]
        if n >= cells:
            break
    out["sparse_cells_s" if sparse else "dense_cells_s"] = n / (time.perf_counter() - t)
print(json.dumps(out))
"""

METRICS = [
    ("convert_s", "convert, shuffled (s)", "{:.2f}"),
    ("register_s", "first registration (s)", "{:.2f}"),
    ("reopen_ms", "reopen, records reused (ms)", "{:.0f}"),
    ("dense_cells_s", "shuffled loading, dense (cells/s)", "{:,.0f}"),
    ("sparse_cells_s", "shuffled loading, sparse (cells/s)", "{:,.0f}"),
]


def _run(src: Path, work: Path, cells: int, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", STEP, str(src), str(work / "converted.zarr"), str(cells)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cell(values: list[float], fmt: str) -> str:
    """``median (min–max)``."""
    median = statistics.median(values)
    return f"{fmt.format(median)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def table(rows: dict[str, list[dict]], before_name: str, after_name: str) -> str:
    lines = [
        f"| step | before ({before_name}) | after ({after_name}) | change of the median |",
        "|---|---|---|---|",
    ]
    for key, name, fmt in METRICS:
        b = [r[key] for r in rows["before"]]
        a = [r[key] for r in rows["after"]]
        mb, ma = statistics.median(b), statistics.median(a)
        change = f"{(ma / mb - 1) * 100:+.0f} %"
        lines.append(f"| {name} | {_cell(b, fmt)} | {_cell(a, fmt)} | {change} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="src/ folder of the older version")
    p.add_argument("--before-name", default="before")
    p.add_argument("--after-name", default="after")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cells", type=int, default=200_000)
    p.add_argument("--load-cells", type=int, default=150_000)
    p.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=None, help="write the table (Markdown) here")
    args = p.parse_args()
    if not (args.before / "atlasloader" / "__init__.py").is_file():
        p.error(f"--before {args.before}: no atlasloader package in that folder")
    from atlasloader.data import make_atlas_store

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        src = work / "atlas.zarr"
        make_atlas_store(src, n_cells=args.cells, n_genes=2000, nnz_per_cell=100)
        rows: dict[str, list[dict]] = {"before": [], "after": []}
        for i in range(args.repeats):
            order = [("before", str(args.before)), ("after", None)]
            for label, path in order if i % 2 == 0 else order[::-1]:
                rows[label].append(_run(src, work, args.load_cells, path))
                print(label, json.dumps(rows[label][-1]), flush=True)
    text = table(rows, args.before_name, args.after_name)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
