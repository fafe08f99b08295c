"""``atlasloader bench``: the shuffled loader's speed, memory and randomness on a store."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import Ui, add_command

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
    p.add_argument("store", metavar="STORE")
    p.add_argument(
        "options",
        nargs=argparse.REMAINDER,
        help="passed on: --batch-size, --sparse, --rows-per-read, --reads-per-buffer, "
        "--batch-key, --n-batches, --warmup-batches, --seed, --json",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ui: Ui) -> int:
    """Measure the shuffled loader on a store: cells/s, first batch, peak RSS, randomness."""
    from ..benchmarking.bench import main as bench_main

    bench_main([args.store, *args.options])
    return 0
