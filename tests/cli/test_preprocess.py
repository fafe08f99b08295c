"""``atlasloader preprocess`` (needs :mod:`atlasloader.preprocess`)."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pytest


def test_options_parse() -> None:
    from atlasloader.cli import build_parser

    args = build_parser().parse_args(["preprocess", "s.zarr"])
    assert (args.size_factors, args.gene_stats, args.n_top_genes) == (True, True, None)
    args = build_parser().parse_args(
        ["preprocess", "s.zarr", "--no-gene-stats", "--n-top-genes", "10", "--batch-key", "b"]
    )
    assert (args.size_factors, args.gene_stats, args.n_top_genes) == (True, False, 10)
    assert args.batch_key == "b"


def test_nothing_to_compute_is_a_usage_error(cli) -> None:
    result = cli("preprocess", "s.zarr", "--no-size-factors", "--no-gene-stats")
    assert result.code == 2
    assert "nothing to compute" in result.err


def test_preprocess_then_setup_with_the_results(cli, copy) -> None:
    store = copy("atlas")
    result = cli("preprocess", store, "--n-top-genes", "10", "--batch-key", "batch")
    assert result.code == 0, result.err
    assert result.out.startswith(f"preprocessed {store}:")
    assert re.search(r"computed: .*library_size", result.out)
    assert "--var-subset highly_variable" in result.out
    adata = ad.read_zarr(store)
    assert int(adata.var["highly_variable"].sum()) == 10
    assert np.isfinite(adata.obs["size_factor"]).all()
    again = cli("preprocess", store, "--n-top-genes", "10", "--batch-key", "batch")
    assert again.code == 0
    assert "computed: none" in again.out
    setup = cli(
        "setup", store, "--batch-key", "batch", "--size-factor-key", "size_factor",
        "--var-subset", "highly_variable",
    )  # fmt: skip
    assert setup.code == 0, setup.err
    assert re.search(r"│\s+n_vars\s+│\s+10\s+│", setup.out)
    assert re.search(r"│\s+size_factor\s+│\s+adata\.obs\['size_factor'\]\s+│", setup.out)
    assert cli("validate", store, "-q").code == 0


def test_quiet_and_on_local_workers(cli, copy) -> None:
    store = copy("atlas")
    result = cli("preprocess", store, "--workers", "2", "--quiet")
    assert (result.code, result.out, result.err) == (0, "", "")
    assert "total_counts" in ad.read_zarr(store).obs


@pytest.mark.parametrize(("option", "value"), [("--layer", "nope"), ("--batch-key", "nope")])
def test_unknown_key_exits_3(cli, copy, option: str, value: str) -> None:
    extra = ("--n-top-genes", "5") if option == "--batch-key" else ()
    result = cli("preprocess", copy("atlas"), option, value, *extra)
    assert result.code == 3
    assert value in result.err
    assert result.err.count("\n") == 1


def test_missing_or_wrong_input_exits_3(cli, inputs, tmp_path) -> None:
    missing = tmp_path / "missing.zarr"
    assert cli("preprocess", missing).code == 3
    result = cli("preprocess", inputs["a"])
    assert result.code == 3
    assert "convert it first" in result.err
