"""Tests of :func:`atlasloader.data.synthetic_iid` (the scvi-tools look-alike)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atlasloader.data import synthetic_iid
from atlasloader.errors import InvalidArgumentError, InvalidTypeError


def test_default_shape_columns_and_repr() -> None:
    adata = synthetic_iid(seed=0)
    assert adata.shape == (400, 100)
    assert list(adata.obs.columns) == ["batch", "labels"]
    text = repr(adata)
    assert "obs: 'batch', 'labels'" in text
    assert "uns: 'protein_names'" in text
    assert "obsm: 'protein_expression'" in text
    assert adata.obs_names.tolist() == [str(i) for i in range(400)]
    assert adata.var_names.tolist() == [f"gene_{i}" for i in range(100)]
    np.testing.assert_array_equal(adata.uns["protein_names"], [f"protein_{i}" for i in range(100)])


def test_dtypes_and_counts() -> None:
    adata = synthetic_iid(seed=1)
    assert isinstance(adata.X, np.ndarray)
    assert adata.X.dtype == np.float32
    assert np.all(adata.X >= 0)
    np.testing.assert_array_equal(adata.X, np.round(adata.X))
    # As in scvi-tools, entries are kept with probability dropout_ratio (0.7).
    assert 0.2 < np.mean(adata.X == 0) < 0.4
    protein = adata.obsm["protein_expression"]
    assert protein.shape == (400, 100)
    assert np.issubdtype(protein.dtype, np.integer)
    assert protein.min() >= 0


def test_categoricals_and_batch_blocks() -> None:
    adata = synthetic_iid(batch_size=50, n_batches=3, n_labels=4, seed=2)
    batch, labels = adata.obs["batch"], adata.obs["labels"]
    assert isinstance(batch.dtype, pd.CategoricalDtype)
    assert isinstance(labels.dtype, pd.CategoricalDtype)
    assert batch.cat.categories.tolist() == ["batch_0", "batch_1", "batch_2"]
    assert labels.cat.categories.tolist() == [f"label_{i}" for i in range(4)]
    np.testing.assert_array_equal(batch.cat.codes.to_numpy(), np.repeat([0, 1, 2], 50))
    assert labels.nunique() == 4


def test_seeded_runs_are_identical_and_seeds_differ() -> None:
    a, b, c = synthetic_iid(seed=7), synthetic_iid(seed=7), synthetic_iid(seed=8)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.obsm["protein_expression"], b.obsm["protein_expression"])
    pd.testing.assert_frame_equal(a.obs, b.obs)
    assert not np.array_equal(a.X, c.X)


def test_global_rng_is_untouched() -> None:
    # The legacy global RNG is exactly what must stay untouched, hence the legacy calls.
    np.random.seed(123)  # noqa: NPY002
    state = np.random.get_state()  # noqa: NPY002
    synthetic_iid(seed=None)
    after = np.random.get_state()  # noqa: NPY002
    assert state[0] == after[0]
    np.testing.assert_array_equal(state[1], after[1])
    assert state[2:] == after[2:]


@pytest.mark.parametrize(
    ("sparse_format", "cls"), [("csr_matrix", sp.csr_matrix), ("csc_matrix", sp.csc_matrix)]
)
def test_sparse_formats(sparse_format: str, cls: type) -> None:
    dense = synthetic_iid(seed=3)
    adata = synthetic_iid(seed=3, sparse_format=sparse_format)
    assert isinstance(adata.X, cls)
    assert adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), dense.X)
    protein = adata.obsm["protein_expression"]
    assert isinstance(protein, cls)
    np.testing.assert_array_equal(protein.toarray(), dense.obsm["protein_expression"])


def test_optional_modalities() -> None:
    adata = synthetic_iid(n_proteins=0, n_regions=12, n_labels=0, generate_coordinates=True)
    assert "protein_expression" not in adata.obsm
    assert "protein_names" not in adata.uns
    assert "labels" not in adata.obs
    assert adata.obsm["accessibility"].shape == (400, 12)
    assert adata.obsm["coordinates"].shape == (400, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"batch_size": 0}, InvalidArgumentError, "batch_size"),
        ({"n_genes": -1}, InvalidArgumentError, "n_genes"),
        ({"n_batches": 0}, InvalidArgumentError, "n_batches"),
        ({"dropout_ratio": 1.5}, InvalidArgumentError, "dropout_ratio"),
        ({"sparse_format": "coo_matrix"}, InvalidArgumentError, "sparse_format"),
        ({"n_genes": 2.5}, InvalidTypeError, "n_genes"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        synthetic_iid(**kwargs)
    with pytest.raises((ValueError, TypeError)):  # users' existing except clauses keep working
        synthetic_iid(**kwargs)
