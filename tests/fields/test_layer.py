"""``LayerField`` (and ``ObsmField``) specifics: count-data checks, shapes, reading little of X."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from atlasloader import AnnDataManager, LazyAnnData, read_lazy
from atlasloader.errors import CorruptChunkError, ShapeMismatchError
from atlasloader.fields import CategoricalObsField, LayerField, ObsmField


def user_view(adata: Any) -> ad.AnnData:
    return ad.read_zarr(adata.path) if isinstance(adata, LazyAnnData) else adata


def with_x(adata: ad.AnnData, x: Any) -> ad.AnnData:
    adata = adata.copy()
    adata.X = x
    return adata


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("bad", ["negative", "non_integer"])
def test_count_data_warning(
    seed_adata: ad.AnnData,
    backing_kind: str,
    to_backing: Callable[..., Any],
    bad: str,
    sparse: bool,
) -> None:
    x = np.asarray(seed_adata.X).copy()
    x[123, 45] = -3.0 if bad == "negative" else 2.5
    adata = to_backing(with_x(seed_adata, sp.csr_matrix(x) if sparse else x), backing_kind)
    with pytest.warns(UserWarning, match=r"adata\.X does not contain unnormalized count data"):
        state = LayerField("X", None, is_count_data=True).register_field(adata)
    assert state["n_vars"] == 100  # a warning, not an error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LayerField("X", None, is_count_data=False).register_field(adata)


def test_count_data_warning_names_layer(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    data = seed_adata.copy()
    data.layers["norm"] = np.log1p(np.asarray(data.X))
    adata = to_backing(data, backing_kind)
    with pytest.warns(UserWarning, match=r"adata\.layers\[norm\] does not contain unnormalized"):
        LayerField("X", "norm").register_field(adata)


def test_counts_do_not_warn(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    data = seed_adata.copy()
    data.layers["counts"] = sp.csr_matrix(np.asarray(data.X))
    adata = to_backing(data, backing_kind)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x_state = LayerField("X", None).register_field(adata)
        layer_state = LayerField("counts", "counts").register_field(adata)
    assert x_state["n_obs"] == 400
    assert list(layer_state["column_names"]) == [f"gene_{i}" for i in range(100)]


def test_obsm_count_warning(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    data = seed_adata.copy()
    data.obsm["protein_expression"] = data.obsm["protein_expression"] * -1.0
    adata = to_backing(data, backing_kind)
    with pytest.warns(UserWarning, match=r"adata\.obsm\['protein_expression'\] does not"):
        ObsmField("proteins", "protein_expression", is_count_data=True).register_field(adata)


def test_obsm_dataframe_columns(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    data = seed_adata.copy()
    data.obsm["coords"] = pd.DataFrame(np.ones((400, 2)), index=data.obs_names, columns=["x", "y"])
    adata = to_backing(data, backing_kind)
    f = ObsmField("coords", "coords")
    state = f.register_field(adata)
    assert list(state["column_names"]) == ["x", "y"]
    assert f.get_summary_stats(state) == {"n_coords": 2}


def test_n_vars_mismatch_on_transfer(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    manager = AnnDataManager(fields=[LayerField("X", None), CategoricalObsField("batch", "batch")])
    manager.register_fields(to_backing(seed_adata, backing_kind, name="ref"))
    query = to_backing(seed_adata[:, :50].copy(), backing_kind, name="query")
    with pytest.raises(ValueError, match="Expected: 100 Received: 50") as info:
        manager.transfer_fields(query)
    assert isinstance(info.value, ShapeMismatchError)
    assert "adata_target" in str(info.value)
    user = user_view(query)
    assert list(user.obs.columns) == ["batch", "labels"]  # nothing written
    assert user.n_vars == 50


def test_obsm_columns_mismatch_on_transfer(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    f = ObsmField("proteins", "protein_expression", colnames_uns_key="protein_names")
    state = f.register_field(to_backing(seed_adata, backing_kind, name="ref"))
    data = seed_adata.copy()
    data.obsm["protein_expression"] = data.obsm["protein_expression"][:, :60]
    query = to_backing(data, backing_kind, name="query")
    with pytest.raises(ShapeMismatchError, match=r"adata\.obsm\['protein_expression'\]") as info:
        f.transfer_field(state, query)
    assert "60 columns" in str(info.value)
    assert "100" in str(info.value)


# --- a registration reads only a sample of X -----------------------------------------------------
N_CELLS, N_GENES, CHUNK = 20_000, 60, 200  # X > 1 Mi values, so it is never hashed whole
UNTOUCHED_CHUNK = 20  # rows 4000-4199: neither the count sample nor the fingerprint reads it


def chunk_file(path: Path, zarr_format: int, row_chunk: int) -> Path:
    return path / "X" / (f"{row_chunk}.0" if zarr_format == 2 else f"c/{row_chunk}/0")


def test_registration_does_not_read_all_of_x(store_kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.poisson(1.0, size=(N_CELLS, N_GENES)).astype(np.float32)
    obs = pd.DataFrame(
        {"batch": pd.Categorical(np.repeat(["a", "b"], N_CELLS // 2))},
        index=pd.Index([f"c{i}" for i in range(N_CELLS)]),
    )
    data = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)]))
    fmt = {"zarr2": 2, "zarr3": 3}[store_kind]
    path = tmp_path / "big.zarr"
    with warnings.catch_warnings(), ad.settings.override(zarr_write_format=fmt):
        warnings.simplefilter("ignore", UserWarning)
        data.write_zarr(path, chunks=(CHUNK, N_GENES))
    target = chunk_file(path, fmt, UNTOUCHED_CHUNK)
    assert target.is_file()
    target.write_bytes(b"this is not a chunk" * 50)

    adata = read_lazy(path)
    with pytest.raises(CorruptChunkError, match=r"adata\.X"):
        adata.X[UNTOUCHED_CHUNK * CHUNK : (UNTOUCHED_CHUNK + 1) * CHUNK]  # the chunk is broken

    fields = [LayerField("X", None, is_count_data=True), CategoricalObsField("batch", "batch")]
    manager = AnnDataManager(fields=fields)
    manager.register_fields(adata)  # never touches the broken chunk
    assert manager.summary_stats == {"n_cells": N_CELLS, "n_vars": N_GENES, "n_batch": 2}
    again = AnnDataManager(fields=[LayerField("X", None), CategoricalObsField("batch", "batch")])
    again.register_fields(read_lazy(path))  # persisted reuse checks fingerprints: still fine
    assert again.summary_stats == manager.summary_stats
