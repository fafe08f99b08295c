"""``atlasloader convert``: .h5ad files or Zarr stores to one store in the loader's layout."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from ._common import (
    Ui,
    add_cluster_options,
    add_command,
    add_quiet,
    non_negative_int,
    positive_int,
)

EXAMPLES = """\
  atlasloader convert atlas.h5ad atlas.zarr
  atlasloader convert a.h5ad b.h5ad c.zarr atlas.zarr                 # concatenated
  atlasloader convert a.h5ad b.h5ad atlas.zarr --join inner           # genes in every input
  atlasloader convert a.h5ad atlas.zarr --shuffle --seed 0 --overwrite
  atlasloader convert atlas.zarr hvg.zarr --var-subset highly_variable   # only those genes
  atlasloader convert a.h5ad b.h5ad atlas.zarr --workers 4            # 4 local processes
  atlasloader convert a.h5ad atlas.zarr --scheduler tcp://10.0.0.5:8786 --quiet"""


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "convert",
        summary="write .h5ad files or AnnData Zarr stores as one store in the loader's layout",
        description=(
            "Convert one or several .h5ad files or AnnData Zarr stores (format 2 or 3) into one\n"
            "Zarr v3 store laid out for fast random row reads: small row chunks inside shards,\n"
            "Blosc-lz4, CSR kept sparse, obs/var carried over. Inputs are read in row blocks,\n"
            "never whole; several inputs are concatenated in the order given (the union of obs\n"
            "columns and categories, obs['source_file'] naming each cell's input). The store is\n"
            "written beside DST and renamed into place at the end: an interrupted run never\n"
            "leaves a store that looks complete, and rerunning starts clean."
        ),
        examples=EXAMPLES,
        cluster=True,
    )
    p.add_argument("src", nargs="+", metavar="SRC", help=".h5ad file or AnnData Zarr store")
    p.add_argument("dst", metavar="DST", help="the new store (a local directory or s3:// URL)")
    p.add_argument(
        "--join",
        choices=("exact", "inner"),
        default="exact",
        help="genes of several inputs: 'exact' needs the same genes in the same order (an "
        "error lists the differences), 'inner' keeps the genes in every input (default: exact)",
    )
    p.add_argument(
        "--var-subset",
        metavar="COLUMN",
        default=None,
        help="write only the genes where this boolean var column of the (first) input is True, "
        "e.g. the highly_variable genes of `atlasloader preprocess --n-top-genes`",
    )
    p.add_argument(
        "--shuffle",
        action="store_true",
        help="write cells in a random order (obs['original_position'] keeps the input order)",
    )
    p.add_argument(
        "--seed",
        metavar="N",
        type=non_negative_int,
        default=0,
        help="seed of --shuffle (default: 0)",
    )
    p.add_argument(
        "--chunk-rows",
        metavar="N",
        type=positive_int,
        default=None,
        help="rows per chunk (default: 16)",
    )
    p.add_argument(
        "--shard-rows",
        metavar="N",
        type=positive_int,
        default=None,
        help="rows per shard (default: about 16 MB of values per shard)",
    )
    p.add_argument(
        "--block-rows",
        metavar="N",
        type=positive_int,
        default=None,
        help="rows read per block by one task; bounds memory (default: 65536, <= ~64 MB)",
    )
    p.add_argument(
        "--codec",
        choices=("lz4", "zstd", "none"),
        default="lz4",
        help="compression (default: lz4)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    add_cluster_options(p)
    add_quiet(p)
    p.set_defaults(func=run)


def _size(path: str) -> int:
    """Bytes of a local file or directory tree (0 for URLs)."""
    if "://" in path or not os.path.exists(path):
        return 0
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def run(args: argparse.Namespace, ui: Ui) -> int:
    """Convert the inputs; print the new store's shape and layout."""
    from ..conversion.convert import convert, layout_of
    from ..errors import InvalidDataError

    options: dict[str, Any] = {
        "chunk_rows": args.chunk_rows,
        "shard_rows": args.shard_rows,
        "codec": None if args.codec == "none" else args.codec,
    }
    if args.block_rows is not None:
        options["block_rows"] = args.block_rows
    t0 = time.perf_counter()
    try:
        convert(
            args.src,
            args.dst,
            join=args.join,
            var_subset=args.var_subset,
            shuffle=args.shuffle,
            seed=args.seed,
            overwrite=args.overwrite,
            progress=ui.progress,
            **options,
        )
    except InvalidDataError as e:
        if args.join != "exact" or len(args.src) < 2 or "genes" not in str(e):
            raise
        raise type(e)(f"{e} (on the command line: --join inner)") from e
    dt = time.perf_counter() - t0
    if ui.quiet:
        return 0
    layout = layout_of(args.dst)
    n_obs, n_vars = layout["shape"][:2]
    mb = sum(_size(s) for s in args.src) / 1e6
    rate = f", {mb / dt:,.1f} MB/s of input" if mb and dt > 0 else ""
    shards = "" if layout["shard_rows"] is None else f" in shards of ~{layout['shard_rows']}"
    ui.print(
        f"wrote {args.dst}: {n_obs:,} cells x {n_vars:,} genes from {len(args.src)} input(s), "
        f"X {layout['format']} in chunks of ~{layout['chunk_rows']} rows{shards}, "
        f"codec {layout['codec']}; {mb:,.1f} MB read in {dt:.1f} s{rate}"
    )
    return 0
