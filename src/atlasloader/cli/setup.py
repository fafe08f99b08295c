"""``atlasloader setup``: register a store's fields with the example model's ``setup_anndata``."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ._common import Ui, add_cluster_options, add_command, add_quiet, check_store_path

EXAMPLES = """\
  atlasloader setup atlas.zarr --batch-key batch --labels-key labels
  atlasloader setup atlas.zarr --layer counts --batch-key batch \\
      --categorical-covariate-keys donor sex --continuous-covariate-keys age
  atlasloader setup atlas.zarr --batch-key batch --var-subset highly_variable
  atlasloader setup atlas.zarr --batch-key batch --workers 4 --quiet"""


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "setup",
        summary="register a store's fields (SCVI.setup_anndata) and persist the registry",
        description=(
            "Register the fields of SCVI.setup_anndata on a store and persist them in it:\n"
            "categorical columns are encoded with dask (obs['_scvi_<key>']), joint covariates\n"
            "written to obsm, and the registry saved as JSON in the store's attributes, so that\n"
            "reopening the store reuses them in milliseconds. Prints the registry tables.\n"
            "Keys are obs columns (a layer for --layer); an unknown key exits with code 3."
        ),
        examples=EXAMPLES,
        cluster=True,
    )
    p.add_argument("store", metavar="STORE", help="AnnData Zarr store (path or URL), writable")
    p.add_argument("--layer", metavar="L", help="layer holding the counts (default: X)")
    p.add_argument("--batch-key", metavar="K", help="obs column of the batches")
    p.add_argument("--labels-key", metavar="K", help="obs column of the labels (cell types)")
    p.add_argument("--size-factor-key", metavar="K", help="obs column of the size factors")
    p.add_argument(
        "--categorical-covariate-keys",
        metavar="K",
        nargs="+",
        help="obs columns of extra categorical covariates",
    )
    p.add_argument(
        "--continuous-covariate-keys",
        metavar="K",
        nargs="+",
        help="obs columns of extra continuous covariates",
    )
    p.add_argument(
        "--var-subset",
        metavar="COLUMN",
        help="train on the genes where this boolean var column is True (e.g. the "
        "highly-variable genes of `atlasloader preprocess --n-top-genes`)",
    )
    add_cluster_options(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ui: Ui) -> int:
    """Register, persist, print the tables."""
    from ..cluster import dask_progress
    from ..model import SCVI
    from ..store.lazy import read_lazy

    adata = read_lazy(check_store_path(args.store))
    setup_args = {
        "layer": args.layer,
        "batch_key": args.batch_key,
        "labels_key": args.labels_key,
        "size_factor_key": args.size_factor_key,
        "categorical_covariate_keys": args.categorical_covariate_keys,
        "continuous_covariate_keys": args.continuous_covariate_keys,
        "var_subset": args.var_subset,
    }
    t0 = time.perf_counter()
    with dask_progress(ui.progress, "registering"):
        SCVI.setup_anndata(adata, **setup_args)
    dt = time.perf_counter() - t0
    if not ui.quiet:
        model = SCVI(adata)
        model.view_anndata_setup()
        stats = model.summary_stats
        ui.print(
            f"registered {args.store}: {stats['n_cells']:,} cells x {stats['n_vars']:,} genes "
            f"in {dt:.2f} s; persisted in the store (`atlasloader view {args.store}`)"
        )
    return 0
