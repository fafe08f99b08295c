"""``LayerField(var_subset=...)``: the registry and the loader see only some genes.

The subset is a boolean ``var`` column (what ``preprocess`` writes as ``highly_variable``) or a
list of gene names; the store is never rewritten, the loader selects the columns after reading.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import atlasloader
from atlasloader import AnnDataLoader, AnnDataManager
from atlasloader.errors import InvalidDataError, MissingKeyError, ShapeMismatchError
from atlasloader.fields import LayerField, NumericalObsField

from .conftest import N_VARS, dense_x, make_data, write_store

HVG = np.zeros(N_VARS, dtype=bool)
HVG[[1, 4, 5, 11, 17, 29]] = True


def _data(fmt: str, on_disk: bool, tmp: Path, name: str = "s", **kw: object) -> tuple:
    a = make_data(fmt=fmt, **kw)  # type: ignore[arg-type]
    a.var["highly_variable"] = HVG[: a.n_vars]
    a.var["score"] = np.arange(a.n_vars, dtype=float)
    if not on_disk:
        return a, a
    path = write_store(a, tmp / f"{name}-{fmt}.zarr", zarr_format=3)
    return atlasloader.read_lazy(path), a


def _register(data: object, subset: object) -> AnnDataManager:
    m = AnnDataManager(
        fields=[LayerField("x", None, var_subset=subset), NumericalObsField("cell_id", "cell_id")]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        m.register_fields(data)
    return m


@pytest.mark.parametrize("fmt", ["dense", "csr"])
@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "zarr3"])
@pytest.mark.parametrize("sparse", [False, True])
def test_loader_yields_only_the_subset(
    tmp_path: Path, fmt: str, on_disk: bool, sparse: bool
) -> None:
    data, ref = _data(fmt, on_disk, tmp_path)
    m = _register(data, "highly_variable")
    assert m.summary_stats["n_vars"] == HVG.sum()
    state = m.get_state_registry("x")
    assert list(state["column_names"]) == list(ref.var_names[HVG])
    full = dense_x(ref)
    n = 0
    for batch in AnnDataLoader(m, batch_size=64, shuffle=True, sparse=sparse):
        ids = batch["cell_id"].numpy().ravel().astype(np.int64)
        x = batch["x"].to_dense() if batch["x"].is_sparse_csr else batch["x"]
        np.testing.assert_array_equal(x.numpy(), full[ids][:, HVG].astype(np.float32))
        n += ids.size
    assert n == ref.n_obs


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_a_gene_list_keeps_its_order(tmp_path: Path, fmt: str) -> None:
    data, ref = _data(fmt, True, tmp_path)
    genes = ["gene_7", "gene_2", "gene_20"]
    m = _register(data, genes)
    batch = next(iter(AnnDataLoader(m, batch_size=400)))
    cols = [ref.var_names.get_loc(g) for g in genes]
    np.testing.assert_array_equal(batch["x"].numpy(), dense_x(ref)[:, cols].astype(np.float32))


def test_transfer_finds_the_genes_by_name_in_the_query(tmp_path: Path) -> None:
    data, _ = _data("csr", True, tmp_path, name="ref")
    m = _register(data, "highly_variable")
    # A query with its genes in another order (and no highly_variable column of its own).
    q = make_data(fmt="csr", seed=3)
    q = q[:, q.var_names[::-1]].copy()
    qpath = write_store(q, tmp_path / "query.zarr", zarr_format=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        qm = m.transfer_fields(atlasloader.read_lazy(qpath))
    assert qm.summary_stats["n_vars"] == HVG.sum()
    batch = next(iter(AnnDataLoader(qm, batch_size=400)))
    genes = list(m.get_state_registry("x")["column_names"])
    expected = dense_x(q)[:, [q.var_names.get_loc(g) for g in genes]]
    np.testing.assert_array_equal(batch["x"].numpy(), expected.astype(np.float32))


def test_transfer_to_a_query_without_the_genes(tmp_path: Path) -> None:
    data, _ = _data("dense", True, tmp_path, name="ref")
    m = _register(data, "highly_variable")
    q = make_data(seed=2)
    q = q[:, :3].copy()
    with pytest.raises(ShapeMismatchError, match="gene_4"):
        m.transfer_fields(q)


def test_bad_subsets_name_the_column(tmp_path: Path) -> None:
    data, ref = _data("csr", True, tmp_path)
    with pytest.raises(MissingKeyError, match=r"'nope'.*preprocess"):
        _register(data, "nope")
    with pytest.raises(InvalidDataError, match="'score' must be boolean"):
        _register(data, "score")
    with pytest.raises(MissingKeyError, match="not_a_gene"):
        _register(data, ["gene_1", "not_a_gene"])
    mem = ref.copy()
    mem.var["none"] = False
    with pytest.raises(InvalidDataError, match="selects no genes"):
        _register(mem, "none")


def test_reading_the_store_back_with_anndata_is_unchanged(tmp_path: Path) -> None:
    data, ref = _data("csr", True, tmp_path)
    _register(data, "highly_variable")
    back = ad.read_zarr(data.path)
    assert back.n_vars == ref.n_vars
