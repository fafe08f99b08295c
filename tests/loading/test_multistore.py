"""Several registered stores loaded as one dataset: ``AnnDataLoader([ref, query, ...])``.

Three real Zarr stores with overlapping ``batch`` categories; the later ones are registered
with ``transfer_fields(extend_categories=True)`` in a chain so one code means one category
everywhere. Cells are identified by (store, ``cell_id``) through a per-store offset.
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
from atlasloader.errors import CategoryTransferError, InvalidArgumentError, NotRegisteredError

from .conftest import default_fields, dense_x, make_data, write_store

SIZES = (130, 70, 95)
CATS = (("b0", "b1"), ("b1", "b2"), ("b0", "b3"))


def _store(tmp: Path, i: int, cats: tuple[str, ...], n: int, offset: int, **kw: object) -> Path:
    a = make_data(n_obs=n, fmt="csr", seed=10 + i, **kw)  # type: ignore[arg-type]
    rng = np.random.default_rng(i)
    a.obs["batch"] = pd.Categorical.from_codes(rng.integers(0, len(cats), n), list(cats))
    a.obs["cell_id"] = np.arange(offset, offset + n, dtype=np.int64)  # global ids
    return write_store(a, tmp / f"s{i}.zarr", zarr_format=3)


def _register(manager: AnnDataManager | None, path: Path, **kw: object) -> AnnDataManager:
    data = atlasloader.read_lazy(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if manager is None:
            m = AnnDataManager(fields=default_fields())
            m.register_fields(data)
            return m
        return manager.transfer_fields(data, **kw)


@pytest.fixture
def atlas(tmp_path: Path) -> tuple[list[AnnDataManager], np.ndarray, list[str]]:
    """Managers (a transfer chain), the dense X of all cells, each cell's batch name."""
    offsets = np.concatenate([[0], np.cumsum(SIZES)])
    paths = [_store(tmp_path, i, CATS[i], SIZES[i], int(offsets[i])) for i in range(3)]
    ref = _register(None, paths[0])
    q1 = _register(ref, paths[1], extend_categories=True)
    q2 = _register(q1, paths[2], extend_categories=True)
    full = [ad.read_zarr(p) for p in paths]
    x = np.concatenate([dense_x(a) for a in full])
    names = [str(v) for a in full for v in a.obs["batch"]]
    return [ref, q1, q2], x, names


def test_every_cell_of_every_store_once_with_its_rows(atlas) -> None:
    managers, x, names = atlas
    adl = AnnDataLoader(managers, batch_size=64, shuffle=True, seed=1, reads_per_buffer=4)
    assert adl.adata_manager is managers[2]  # holds b0..b3
    mapping = adl.adata_manager.get_state_registry("batch")["categorical_mapping"]
    assert list(mapping) == ["b0", "b1", "b2", "b3"]
    seen = []
    for batch in adl:
        ids = batch["cell_id"].numpy().ravel().astype(np.int64)
        np.testing.assert_array_equal(batch["x"].numpy(), x[ids].astype(np.float32))
        got = [str(mapping[int(c)]) for c in batch["batch"].numpy().ravel()]
        assert got == [names[i] for i in ids]
        seen.append(ids)
    ids = np.concatenate(seen)
    np.testing.assert_array_equal(np.sort(ids), np.arange(sum(SIZES)))
    # Batches mix stores (the shuffle crosses store boundaries).
    assert len(adl) == -(-sum(SIZES) // 64)


def test_unshuffled_order_and_indices_across_stores(atlas) -> None:
    managers, x, _ = atlas
    n = sum(SIZES)
    ordered = AnnDataLoader(managers, batch_size=50)
    ids = np.concatenate([b["cell_id"].numpy().ravel() for b in ordered]).astype(int)
    np.testing.assert_array_equal(ids, np.arange(n))
    subset = np.arange(SIZES[0] - 20, SIZES[0] + SIZES[1] + 20)  # straddles two boundaries
    sub = AnnDataLoader(managers, indices=subset, batch_size=16, shuffle=True, sparse=True)
    got = []
    for batch in sub:
        rows = batch["cell_id"].numpy().ravel().astype(np.int64)
        np.testing.assert_array_equal(batch["x"].to_dense().numpy(), x[rows].astype(np.float32))
        got.append(rows)
    np.testing.assert_array_equal(np.sort(np.concatenate(got)), subset)


def test_conflicting_categories_name_the_stores(tmp_path: Path) -> None:
    # Two queries extended independently from the same reference: code 2 is b2 in one, b3 in
    # the other.
    offsets = np.concatenate([[0], np.cumsum(SIZES)])
    paths = [_store(tmp_path, i, CATS[i], SIZES[i], int(offsets[i])) for i in range(3)]
    ref = _register(None, paths[0])
    a = _register(ref, paths[1], extend_categories=True)
    b = _register(ref, paths[2], extend_categories=True)
    with pytest.raises(CategoryTransferError, match=r"'batch'.*code 2") as err:
        AnnDataLoader([ref, a, b])
    assert "s2.zarr" in str(err.value) or "s1.zarr" in str(err.value)
    assert "transfer_fields" in str(err.value)


def test_different_genes_are_listed(tmp_path: Path) -> None:
    p0 = _store(tmp_path, 0, CATS[0], 40, 0)
    p1 = _store(tmp_path, 1, CATS[0], 40, 40, n_vars=25)
    ref = _register(None, p0)
    other = _register(None, p1)
    with pytest.raises(InvalidArgumentError, match=r"only in store 0.*gene_29"):
        AnnDataLoader([ref, other])


def test_different_fields_and_unregistered_managers(tmp_path: Path) -> None:
    p0 = _store(tmp_path, 0, CATS[0], 40, 0)
    ref = _register(None, p0)
    fewer = AnnDataManager(fields=default_fields()[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fewer.register_fields(atlasloader.read_lazy(_store(tmp_path, 1, CATS[0], 40, 40)))
    with pytest.raises(InvalidArgumentError, match="registers keys"):
        AnnDataLoader([ref, fewer])
    with pytest.raises(NotRegisteredError, match="AnnDataManager 1"):
        AnnDataLoader([ref, AnnDataManager(fields=default_fields())])
    with pytest.raises(InvalidArgumentError, match="at least one"):
        AnnDataLoader([])
