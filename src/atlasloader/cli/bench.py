"""``atlasloader bench``: the shuffled loader's speed, memory and randomness on a store."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import Ui, add_command, non_negative_int, positive_int

EXAMPLES = """\
  atlasloader bench atlas.zarr
  atlasloader bench atlas.zarr --batch-size 512 --n-batches 300
  atlasloader bench atlas.zarr --sparse --json"""


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "bench",
        summary="measure the shuffled loader on a store: cells/s, first batch, peak RSS",
        description=(
            "Measure atlasloader's shuffled AnnDataLoader on a store: cells/s, time to the\n"
            "first batch, peak RSS and batch randomness (entropy of --batch-key per batch)."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("store", metavar="STORE", help="AnnData Zarr store (path or URL)")
    # Integers are checked here, before the store is registered.
    p.add_argument(
        "--batch-size", metavar="N", type=positive_int, default=512, help="cells per minibatch"
    )
    p.add_argument("--sparse", action="store_true", help="yield sparse CSR batches, not dense")
    p.add_argument("--no-shuffle", action="store_true", help="read the cells in order")
    p.add_argument(
        "--rows-per-read",
        metavar="N",
        type=positive_int,
        default=None,
        help="consecutive rows per random read (default: the loader's)",
    )
    p.add_argument(
        "--reads-per-buffer",
        metavar="N",
        type=positive_int,
        default=None,
        help="runs mixed together in one shuffle buffer (default: the loader's)",
    )
    p.add_argument(
        "--batch-key",
        metavar="KEY",
        default="batch",
        help="categorical obs column whose per-batch entropy measures randomness",
    )
    p.add_argument("--n-batches", metavar="N", type=positive_int, default=300, help="batches timed")
    p.add_argument(
        "--warmup-batches",
        metavar="N",
        type=non_negative_int,
        default=20,
        help="untimed batches before timing",
    )
    p.add_argument("--seed", type=int, default=0, help="shuffling seed")
    p.add_argument("--name", default=None, help="label of the row (default: from the settings)")
    p.add_argument("--json", action="store_true", help="print one JSON line, not a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ui: Ui) -> int:
    """Measure the shuffled loader on a store: cells/s, first batch, peak RSS, randomness."""
    from ..benchmarking.bench import bench_store, format_table

    result = bench_store(
        args.store,
        batch_size=args.batch_size,
        shuffle=not args.no_shuffle,
        dense=not args.sparse,
        rows_per_read=args.rows_per_read,
        reads_per_buffer=args.reads_per_buffer,
        batch_key=args.batch_key,
        n_batches=args.n_batches,
        seed=args.seed,
        warmup_batches=args.warmup_batches,
        name=args.name,
    )
    if args.json:
        print(json.dumps(result.to_dict()), flush=True)
    else:
        from rich.console import Console

        Console().print(format_table([result]))
    return 0
