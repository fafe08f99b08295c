"""annbatch 0.3.1 on its own pre-shuffled, sharded collection (run with the peers' python).

Two steps, each printing one JSON line:

    run_annbatch.py build DATA.h5ad COLLECTION.zarr   # pre-shuffle + write (timed, peak RSS)
    run_annbatch.py load COLLECTION.zarr              # the loader benchmark

Best settings measured here (``shared/PERF_NOTES.md``): 64 rows per stored chunk, Blosc-lz4,
``chunk_size=64`` and ``preload_nchunks=64`` in the loader, zarrs' codec pipeline (zarr-python's
own is ~4x slower). Batches are densified to float32 ``(batch, n_vars)`` tensors; the batch
category comes from the ``obs`` frame annbatch yields with every batch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    Timer,
    add_common_args,
    category_codes,
    load_bench,
    measure_and_emit,
    quiet,
    to_dense_tensor,
)


def use_zarrs() -> None:
    """Switch zarr to the zarrs (Rust) codec pipeline, as annbatch's docs require locally."""
    import zarr

    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})


def build(h5ad: str, dst: str, *, chunk_rows: int, seed: int) -> None:
    """Pre-shuffle ``h5ad`` into an annbatch collection at ``dst``; print time and peak RSS."""
    from annbatch import DatasetCollection

    bench = load_bench()
    if Path(dst).exists():
        shutil.rmtree(dst)
    bench.reset_peak_rss()
    with Timer() as t:
        DatasetCollection(dst).add_adatas(
            [h5ad], n_obs_per_chunk=chunk_rows, shuffle=True, rng=np.random.default_rng(seed)
        )
    peak = (bench.peak_rss_bytes() or 0) / 1e9
    print(json.dumps({"build_s": t.seconds, "build_peak_rss_gb": peak, "chunk_rows": chunk_rows}))


class _Batches:
    """Re-iterable view of an annbatch Loader as dicts ``{"X": dense tensor, "batch": codes}``."""

    def __init__(self, loader: Any, batch_key: str, densify: str) -> None:
        self.loader = loader
        self.batch_key = batch_key
        self.densify = densify

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for b in self.loader:
            yield {
                "X": to_dense_tensor(b["X"], self.densify),
                "batch": category_codes(b["obs"][self.batch_key]),
            }


def load(args: Any) -> None:
    """Benchmark annbatch's Loader on the collection; print the result."""
    from annbatch import DatasetCollection, Loader

    bench = load_bench()
    with Timer() as setup:
        collection = DatasetCollection(args.collection, mode="r")
        codes = category_codes(collection.obs(columns=[args.batch_key])[args.batch_key])

    def factory() -> _Batches:
        loader = Loader(
            chunk_size=args.chunk_size,
            preload_nchunks=args.preload_nchunks,
            batch_size=args.batch_size,
            shuffle=True,
            drop_last=False,
            preload_to_gpu=False,
            rng=np.random.default_rng(args.seed),
        ).use_collection(collection)
        return _Batches(loader, args.batch_key, args.densify)

    name = args.name or (
        f"annbatch (chunk {args.chunk_size}, preload {args.preload_nchunks}, pre-shuffled store)"
    )
    measure_and_emit(
        bench,
        factory,
        args,
        codes,
        name,
        reset_peak=True,
        peer="annbatch",
        path=args.collection,
        chunk_size=args.chunk_size,
        preload_nchunks=args.preload_nchunks,
        densify=args.densify,
        setup_s=setup.seconds,
        zarrs=args.zarrs,
    )


def main(argv: list[str] | None = None) -> None:
    """Parse ``build``/``load`` and run it."""
    quiet()
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="pre-shuffle an .h5ad into an annbatch collection")
    b.add_argument("h5ad")
    b.add_argument("collection")
    b.add_argument("--chunk-rows", type=int, default=64, help="rows per stored chunk")
    ld = sub.add_parser("load", help="benchmark the loader on a collection")
    ld.add_argument("collection")
    ld.add_argument("--chunk-size", type=int, default=64)
    ld.add_argument("--preload-nchunks", type=int, default=64)
    for p in (b, ld):
        add_common_args(p)
        p.add_argument("--no-zarrs", dest="zarrs", action="store_false")
    args = ap.parse_args(argv)
    import torch  # noqa: F401  (a training script has it loaded: not part of any timing)

    if args.zarrs:
        use_zarrs()
    if args.cmd == "build":
        build(args.h5ad, args.collection, chunk_rows=args.chunk_rows, seed=args.seed)
    else:
        load(args)


if __name__ == "__main__":
    main(sys.argv[1:])
