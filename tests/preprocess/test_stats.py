"""Library sizes and gene statistics, chunk-wise with dask, against numpy on the dense matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad
import dask
import dask.array
import numpy as np
import pytest
import scipy.sparse as sp

import atlasloader
from atlasloader.data import make_atlas_store
from atlasloader.errors import InvalidDataError, InvalidTypeError, MissingKeyError
from atlasloader.preprocess import gene_stats, library_size, preprocess
from atlasloader.preprocess.source import matrix_source
from atlasloader.preprocess.stats import size_factors

from .conftest import as_format, counts, dense, write


def check_library(frame: Any, x: np.ndarray, obs_names: Any) -> None:
    totals = x.sum(1)
    assert list(frame.index) == list(obs_names)
    np.testing.assert_allclose(frame["total_counts"], totals, rtol=1e-12)
    np.testing.assert_array_equal(frame["n_genes_by_counts"], (x != 0).sum(1))
    expected = (totals / np.median(totals[totals > 0])).astype(np.float32)
    np.testing.assert_array_equal(frame["size_factor"], expected)
    assert frame["total_counts"].dtype == np.float64
    assert frame["n_genes_by_counts"].dtype == np.int32
    assert frame["size_factor"].dtype == np.float32


def check_genes(frame: Any, x: np.ndarray, var_names: Any) -> None:
    assert list(frame.index) == list(var_names)
    np.testing.assert_allclose(frame["mean_counts"], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(frame["var_counts"], x.var(0, ddof=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(frame["n_cells_by_counts"], (x != 0).sum(0))
    assert frame["n_cells_by_counts"].dtype == np.int64


@pytest.mark.usefixtures("small_tasks")
def test_equal_numpy_on_every_backing(backed: tuple[Any, ad.AnnData]) -> None:
    data, ref = backed
    assert len(matrix_source(data).blocks) >= 8  # many tasks, combined
    x = dense(ref)
    check_library(library_size(data), x, ref.obs_names)
    check_genes(gene_stats(data), x, ref.var_names)


@pytest.mark.usefixtures("small_tasks")
def test_synchronous_scheduler_gives_the_same(backed: tuple[Any, ad.AnnData]) -> None:
    data, _ = backed
    threaded = gene_stats(data)
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(gene_stats(data).to_numpy(), threaded.to_numpy())


@pytest.mark.parametrize("dense_x", [False, True], ids=["csr", "dense"])
def test_sharded_atlas_store(tmp_path: Path, dense_x: bool) -> None:
    """The loader's layout (Zarr v3 shards, Blosc-lz4), read by tasks with direct decoding."""
    path = make_atlas_store(
        tmp_path / "atlas.zarr",
        n_cells=3000,
        n_genes=200,
        nnz_per_cell=30,
        chunk_rows=64,
        shard_rows=512,
        dense=dense_x,
    )
    ref = ad.read_zarr(path)
    x = dense(ref)
    data = atlasloader.read_lazy(path)
    check_library(library_size(data), x, ref.obs_names)
    check_genes(gene_stats(data), x, ref.var_names)
    assert matrix_source(data).store.readers[0].fast  # type: ignore[union-attr]


@pytest.mark.usefixtures("small_tasks")
def test_explicit_zeros_empty_cells_and_integer_layers(tmp_path: Path) -> None:
    a = counts(n_obs=200, n_vars=40, planted=None)
    a.X[5] = 0  # an empty cell
    a = as_format(a, "csr")
    a.X.data[::7] = 0  # explicit zeros stored in the CSR structure: not "detected"
    a.layers["raw"] = sp.csr_matrix(dense(a).astype(np.int32))
    assert (a.X.data == 0).any()
    path = write(a, tmp_path / "z.zarr")
    for data in (a, atlasloader.read_lazy(path)):
        for layer in (None, "raw"):
            x = dense(a, layer)
            check_library(library_size(data, layer=layer), x, a.obs_names)
            check_genes(gene_stats(data, layer=layer), x, a.var_names)
    assert library_size(a)["size_factor"].iloc[5] == 0.0
    # Statistics pooled from per-batch moments (what preprocess does with a batch key).
    b = a.copy()
    preprocess(b, n_top_genes=5, batch_key="batch")
    check_genes(b.var[["mean_counts", "var_counts", "n_cells_by_counts"]], dense(a), a.var_names)
    check_library(
        b.obs[["total_counts", "n_genes_by_counts", "size_factor"]], dense(a), a.obs_names
    )


def test_size_factors_are_relative_to_the_median_positive_library() -> None:
    out = size_factors(np.array([0.0, 100.0, 300.0, 200.0]))
    np.testing.assert_array_equal(out, np.array([0.0, 0.5, 1.5, 1.0], dtype=np.float32))
    with pytest.raises(InvalidDataError, match=r"every cell has zero total counts in adata\.X"):
        size_factors(np.zeros(3))


def test_missing_layer_and_unsupported_matrix(tmp_path: Path) -> None:
    a = counts(n_obs=50, n_vars=10)
    with pytest.raises(MissingKeyError, match=r"adata\.layers\['counts'\] not found"):
        library_size(a, layer="counts")
    store = atlasloader.read_lazy(write(a, tmp_path / "s.zarr"))
    with pytest.raises(MissingKeyError, match=r"adata\.layers\['counts'\] not found"):
        gene_stats(store, layer="counts")
    a.layers["lazy"] = dask.array.zeros((50, 10), chunks=10)  # neither numpy nor scipy
    with pytest.raises(InvalidTypeError, match=r"adata\.layers\['lazy'\] is a Array"):
        gene_stats(a, layer="lazy")


def test_no_cells_is_an_error() -> None:
    a = counts(n_obs=50, n_vars=10)[:0].copy()
    with pytest.raises(InvalidDataError, match="has no cells"):
        gene_stats(a)
