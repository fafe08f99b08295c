"""``atlasloader preprocess``: size factors, gene statistics, highly variable genes."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import (
    EXIT_USAGE,
    Ui,
    add_cluster_options,
    add_command,
    add_quiet,
    check_store_path,
    positive_int,
)

EXAMPLES = """\
  atlasloader preprocess atlas.zarr
  atlasloader preprocess atlas.zarr --n-top-genes 2000 --batch-key batch
  atlasloader preprocess atlas.zarr --no-gene-stats --layer counts --overwrite
  atlasloader preprocess atlas.zarr --n-top-genes 2000 --workers 4 --quiet"""


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "preprocess",
        summary="per-cell size factors, per-gene statistics and highly variable genes",
        description=(
            "Compute preprocessing passes chunk-wise with dask and persist them in the store:\n"
            "per-cell library size and size factors (obs columns, for setup --size-factor-key),\n"
            "per-gene mean, variance and detection counts (var columns), and with\n"
            "--n-top-genes a Seurat-v3-style selection of highly variable genes on counts (a\n"
            "boolean var column, for setup --var-subset). Results already in the store are\n"
            "kept unless --overwrite."
        ),
        examples=EXAMPLES,
        cluster=True,
    )
    p.add_argument("store", metavar="STORE", help="AnnData Zarr store (path or URL), writable")
    p.add_argument(
        "--size-factors",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="per-cell library size and size factors (default: on)",
    )
    p.add_argument(
        "--gene-stats",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="per-gene mean, variance and detection counts (default: on)",
    )
    p.add_argument(
        "--n-top-genes",
        metavar="N",
        type=positive_int,
        help="select the N most variable genes (default: no selection)",
    )
    p.add_argument("--batch-key", metavar="K", help="obs column: select genes per batch")
    p.add_argument("--layer", metavar="L", help="layer holding the counts (default: X)")
    p.add_argument("--overwrite", action="store_true", help="recompute results already stored")
    add_cluster_options(p)
    add_quiet(p)
    p.set_defaults(func=run)


def _text(value: Any, limit: int = 300) -> str:
    """A result value on one line: lists joined, mappings as ``key=value``."""
    if isinstance(value, dict):
        text = ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(map(str, value)) or "none"
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run(args: argparse.Namespace, ui: Ui) -> int:
    """Run the passes; print what was computed, reused and written."""
    from ..preprocess import preprocess

    if not (args.size_factors or args.gene_stats or args.n_top_genes):
        ui.error(
            "nothing to compute: drop --no-size-factors or --no-gene-stats, or give --n-top-genes"
        )
        return EXIT_USAGE
    result = preprocess(
        check_store_path(args.store),
        size_factors=args.size_factors,
        gene_stats=args.gene_stats,
        n_top_genes=args.n_top_genes,
        layer=args.layer,
        batch_key=args.batch_key,
        overwrite=args.overwrite,
        progress=ui.progress,
    )
    ui.print(f"preprocessed {args.store}:")
    for key, value in dict(result or {}).items():
        ui.print(f"  {key}: {_text(value)}")
    hints = []
    if "size_factor" in result.get("obs_columns", ()):
        hints.append("--size-factor-key size_factor")
    if "highly_variable" in result.get("var_columns", ()):
        hints.append("--var-subset highly_variable")
    if hints:
        ui.print(f"register with them: atlasloader setup {args.store} {' '.join(hints)} ...")
    return 0
