"""``convert(var_subset=...)``: a store of some genes only (a boolean var column or names).

Compared with the input read into memory and subset with anndata; the loader then reads the
small store exactly as the full store with ``LayerField(var_subset=...)``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import atlasloader
from atlasloader import AnnDataLoader, AnnDataManager
from atlasloader.conversion.convert import convert
from atlasloader.data import make_atlas_h5ad
from atlasloader.errors import InvalidArgumentError, InvalidDataError, MissingKeyError
from atlasloader.fields import LayerField

from .test_convert_many import SMALL, TINY, assert_x_equal, concat_ref
from .test_convert_store import write_input


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSR .h5ad with a boolean var column, a dense layer and a varm entry."""
    tmp = tmp_path_factory.mktemp("subset")
    adata = ad.read_h5ad(make_atlas_h5ad(tmp / "a.h5ad", n_cells=300, seed=0, **SMALL))
    adata.var["hvg"] = np.arange(adata.n_vars) % 3 == 1
    adata.layers["dense"] = adata.X.toarray()
    adata.varm["loadings"] = np.arange(adata.n_vars * 2, dtype=np.float32).reshape(-1, 2)
    return write_input(adata, tmp / "marked.h5ad")


def test_a_boolean_column_keeps_its_genes(marked: Path, tmp_path: Path) -> None:
    out = convert(marked, tmp_path / "hvg.zarr", var_subset="hvg", **TINY)
    full = ad.read_h5ad(marked)
    ref = full[:, full.var["hvg"].to_numpy()].copy()
    result = ad.read_zarr(out)
    assert result.n_vars == 20
    pd.testing.assert_frame_equal(result.var, ref.var)
    assert_x_equal(result.X, ref.X)
    np.testing.assert_array_equal(result.layers["dense"], ref.layers["dense"])
    np.testing.assert_array_equal(result.varm["loadings"], ref.varm["loadings"])
    pd.testing.assert_frame_equal(result.obs, full.obs)
    # The small store loads as the full one with the loader's gene selection.
    small = AnnDataManager([LayerField("X", None)])
    small.register_fields(atlasloader.read_lazy(out))
    selected = AnnDataManager([LayerField("X", None, var_subset="hvg")])
    selected.register_fields(atlasloader.read_lazy(convert(marked, tmp_path / "all.zarr")))
    a = next(iter(AnnDataLoader(small, batch_size=300)))["X"]
    b = next(iter(AnnDataLoader(selected, batch_size=300)))["X"]
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_gene_names_in_their_order_with_several_inputs(tmp_path: Path) -> None:
    a = make_atlas_h5ad(tmp_path / "a.h5ad", n_cells=200, seed=0, **SMALL)
    b = make_atlas_h5ad(tmp_path / "b.h5ad", n_cells=100, seed=1, **SMALL)
    genes = ["gene_7", "gene_2", "gene_59"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # obs_names collide
        out = convert([a, b], tmp_path / "o.zarr", var_subset=genes, shuffle=True, **TINY)
        ref = concat_ref([a, b], join="inner", index_unique="-")[:, genes]
    result = ad.read_zarr(out)
    assert list(result.var_names) == genes
    order = atlasloader.conversion.convert.original_order(out)
    assert_x_equal(result.X[order], ref.X)


def test_bad_subsets_name_what_is_wrong(marked: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingKeyError, match=r"'nope' not found .*marked\.h5ad"):
        convert(marked, tmp_path / "o.zarr", var_subset="nope")
    full = ad.read_h5ad(marked)
    full.var["counts"] = 1.0
    numbers = write_input(full, tmp_path / "f.h5ad")
    with pytest.raises(InvalidDataError, match="'counts' must be boolean"):
        convert(numbers, tmp_path / "o.zarr", var_subset="counts")
    with pytest.raises(MissingKeyError, match="not_a_gene"):
        convert(marked, tmp_path / "o.zarr", var_subset=["gene_1", "not_a_gene"])
    with pytest.raises(InvalidArgumentError, match="var_subset"):
        convert(marked, tmp_path / "o.zarr", var_subset=[])
    assert not (tmp_path / "o.zarr").exists()
