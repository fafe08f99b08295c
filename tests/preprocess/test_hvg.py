"""Seurat v3 highly variable genes against the same maths computed densely with numpy."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import atlasloader
from atlasloader.errors import InvalidArgumentError, InvalidDataError, MissingKeyError
from atlasloader.preprocess import highly_variable_genes
from atlasloader.preprocess.hvg import hvg_frame, rank_genes
from atlasloader.preprocess.source import matrix_source
from atlasloader.preprocess.stats import scan

from .conftest import PLANTED, as_format, counts, dense, seurat_v3_reference, write


def check(frame: pd.DataFrame, ref: pd.DataFrame, with_batches: bool) -> None:
    np.testing.assert_allclose(frame["variances_norm"], ref["variances_norm"], rtol=1e-8)
    np.testing.assert_array_equal(frame["highly_variable_rank"], ref["highly_variable_rank"])
    np.testing.assert_array_equal(frame["highly_variable"], ref["highly_variable"])
    assert frame["highly_variable"].dtype == bool
    assert frame["highly_variable_rank"].dtype == np.float32
    assert ("highly_variable_nbatches" in frame) == with_batches
    if with_batches:
        np.testing.assert_array_equal(
            frame["highly_variable_nbatches"], ref["highly_variable_nbatches"]
        )


@pytest.mark.usefixtures("small_tasks")
@pytest.mark.parametrize("batch_key", [None, "batch"])
def test_equals_the_dense_reference(backed: tuple[Any, ad.AnnData], batch_key: str | None) -> None:
    data, ref = backed
    frame = highly_variable_genes(data, 25, batch_key=batch_key)
    assert list(frame.index) == list(ref.var_names)
    batches = None if batch_key is None else ref.obs[batch_key].to_numpy()
    check(frame, seurat_v3_reference(dense(ref), batches, 25), batch_key is not None)
    assert frame["highly_variable"].sum() == 25


@pytest.mark.usefixtures("small_tasks")
@pytest.mark.parametrize("sorted_batches", [False, True], ids=["interleaved", "sorted"])
@pytest.mark.parametrize("fmt", ["csr", "dense"])
def test_values_above_the_clip_take_a_second_pass(
    tmp_path: Path, sorted_batches: bool, fmt: str
) -> None:
    ref = as_format(counts(outliers=40, sorted_batches=sorted_batches, seed=2), fmt)
    data = atlasloader.read_lazy(write(ref, tmp_path / "o.zarr"))
    for batch_key in (None, "batch"):
        batches = None if batch_key is None else ref.obs[batch_key].to_numpy()
        source = matrix_source(data)
        codes = None if batches is None else ref.obs[batch_key].cat.codes.to_numpy()
        moments = scan(source, codes, want_cells=False).moments
        frame, clipped = hvg_frame(source, moments, codes, 30, 0.3, ref.var_names)
        assert clipped  # the outliers exceed their genes' clip values
        check(frame, seurat_v3_reference(dense(ref), batches, 30), batch_key is not None)


def test_without_values_above_the_clip_one_pass_suffices() -> None:
    ref = counts(planted=None, seed=5)
    source = matrix_source(ref)
    moments = scan(source, None, want_cells=False).moments
    frame, clipped = hvg_frame(source, moments, None, 10, 0.3, ref.var_names)
    assert not clipped
    check(frame, seurat_v3_reference(dense(ref), None, 10), False)


@pytest.mark.parametrize("batch_key", [None, "batch"])
def test_planted_variable_genes_are_selected(batch_key: str | None) -> None:
    a = counts(n_obs=1500, seed=7, theta=50.0)  # other genes vary only as Poisson noise
    frame = highly_variable_genes(a, PLANTED.size, batch_key=batch_key)
    assert set(np.flatnonzero(frame["highly_variable"])) == set(PLANTED)
    assert (frame["highly_variable_rank"].iloc[PLANTED] < PLANTED.size).all()


def test_ranking_follows_scanpy() -> None:
    # Gene 1 is 2nd and 1st in two batches (median rank 0.5), gene 0 is 1st in one batch
    # only (median 0, one batch), gene 2 is never in the top 2.
    norm = np.array([[1.0, 3.0, 0.5, 0.1], [5.0, 4.0, 0.2, 0.3], [0.1, 9.0, 0.3, 8.0]])
    out = rank_genes(norm, 2)
    np.testing.assert_array_equal(out["highly_variable_nbatches"], [2, 3, 0, 1])
    np.testing.assert_array_equal(out["highly_variable_rank"], [0.5, 0.0, np.nan, 1.0])
    np.testing.assert_array_equal(out["highly_variable"], [True, True, False, False])
    np.testing.assert_allclose(out["variances_norm"], norm.mean(0))


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    a = counts(n_obs=100, n_vars=30)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InvalidArgumentError, match="n_top_genes"):
            highly_variable_genes(a, bad)  # type: ignore[arg-type]
    with pytest.raises(MissingKeyError, match=r"donor not found in adata\.obs"):
        highly_variable_genes(a, 5, batch_key="donor")
    with pytest.warns(UserWarning, match="more than the 30 genes"):
        assert highly_variable_genes(a, 50)["highly_variable"].all()
    negative = a.copy()
    negative.X[0, 0] = -1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "expects raw counts"
        with pytest.raises(InvalidDataError, match=r"adata\.X holds negative values"):
            highly_variable_genes(negative, 5)
    fractional = a.copy()
    fractional.X = fractional.X / 3
    with pytest.warns(UserWarning, match="expects raw counts"):
        highly_variable_genes(fractional, 5)
    lonely = a.copy()
    lonely.obs["batch"] = pd.Categorical(["x"] + ["y"] * 99)
    store = atlasloader.read_lazy(write(lonely, tmp_path / "l.zarr"))
    with pytest.raises(InvalidDataError, match="batch 'x' has 1 cell"):
        highly_variable_genes(store, 5, batch_key="batch")
    missing = a.copy()
    missing.obs["batch"] = pd.Categorical([None] + ["y"] * 99)
    with pytest.raises(InvalidDataError, match="missing value"):
        highly_variable_genes(missing, 5, batch_key="batch")
