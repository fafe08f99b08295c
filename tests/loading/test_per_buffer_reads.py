"""Per-cell arrays of large stores are read per buffer, never whole.

Above ``WHOLE_READ_MAX_ROWS`` cells the loader reads only the row pointers and the obs codes /
covariates of each buffer's runs. The limit is lowered here so that a small store takes the
large-store path; the batches must be exactly those of the read-whole path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import atlasloader.store.matrix as matrix
from atlasloader import AnnDataLoader, AnnDataManager, read_lazy
from atlasloader.data import make_atlas_store
from atlasloader.fields import CategoricalObsField, LayerField, NumericalObsField
from atlasloader.loading.fetch import ColumnFetcher


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("perbuf") / "a.zarr"
    make_atlas_store(path, n_cells=9000, n_genes=120, nnz_per_cell=12, seed=4, chunk_rows=32)
    return path


def manager_for(store: Path) -> AnnDataManager:
    manager = AnnDataManager(
        fields=[
            LayerField("X", None, is_count_data=True),
            CategoricalObsField("batch", "batch"),
            CategoricalObsField("labels", "labels"),
            NumericalObsField("size_factor", "n_counts"),
        ]
    )
    manager.register_fields(read_lazy(store, mode="r+"))
    return manager


def epochs(manager: AnnDataManager, **kw: object) -> list[dict[str, torch.Tensor]]:
    loader = AnnDataLoader(manager, batch_size=300, shuffle=True, seed=5, **kw)
    return [b for _ in range(2) for b in loader]


@pytest.mark.parametrize("sparse", [False, True])
def test_per_buffer_reads_yield_the_read_whole_batches(
    store: Path, sparse: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = manager_for(store)
    expected = epochs(whole, sparse=sparse)
    assert not whole.adata.X.pointers_per_run

    monkeypatch.setattr(matrix, "WHOLE_READ_MAX_ROWS", 1000)
    large = manager_for(store)
    loader = AnnDataLoader(large, batch_size=300, shuffle=True, seed=5, sparse=sparse)
    assert large.adata.X.pointers_per_run
    for key in ("batch", "labels", "size_factor"):
        fetcher = loader.fetchers[key]  # codes come range-checked (CheckedCodes)
        assert isinstance(getattr(fetcher, "fetcher", fetcher), ColumnFetcher), key
    got = [b for _ in range(2) for b in loader]
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            ta, tb = a[k], b[k]
            if ta.is_sparse_csr:
                ta, tb = ta.to_dense(), tb.to_dense()
            assert ta.dtype == tb.dtype, k
            assert torch.equal(ta, tb), k
    # The whole row-pointer array was never read.
    assert "indptr" not in large.adata.X.__dict__


def test_row_pointers_of_runs_match_the_whole_array(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(matrix, "WHOLE_READ_MAX_ROWS", 1000)
    x = read_lazy(store).X
    ptr = np.asarray(x.node["indptr"][:], dtype=np.int64)
    rng = np.random.default_rng(0)
    lo = rng.integers(0, x.shape[0], 40)
    runs = np.stack([lo, np.minimum(x.shape[0], lo + rng.integers(0, 50, 40))], axis=1)
    runs[3] = [17, 17]  # an empty run
    runs[-1] = [x.shape[0] - 5, x.shape[0]]  # the last rows
    elems, row_nnz = x._run_pointers(runs)
    np.testing.assert_array_equal(elems, np.stack([ptr[runs[:, 0]], ptr[runs[:, 1]]], axis=1))
    rows = np.concatenate([np.arange(a, b) for a, b in runs])
    np.testing.assert_array_equal(row_nnz, ptr[rows + 1] - ptr[rows])
    block = x.read_runs(runs)
    whole = x.read_rows(0, x.shape[0])
    assert (block != whole[rows]).nnz == 0


def test_all_cells_are_a_range_not_an_array(store: Path) -> None:
    loader = AnnDataLoader(manager_for(store), batch_size=500, shuffle=True, seed=1)
    seen = np.concatenate([b["X"].numpy().sum(axis=1) for b in loader])
    assert seen.size == 9000
    table = loader.sampler.table
    assert table.ids is None
    assert (table.start, table.n_cells) == (0, 9000)
    assert "indices" not in table.__dict__  # no per-cell array was built for the epoch
    np.testing.assert_array_equal(loader.indices, np.arange(9000))  # built when asked for


@pytest.mark.parametrize("per_buffer", [False, True])
def test_damaged_codes_are_named_not_fed_to_the_model(
    tmp_path: Path, per_buffer: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registered codes are stored uncompressed on local disk: bytes garbled in place decode
    to out-of-range codes, which the loader refuses, naming the column and the cell."""
    import zarr

    from atlasloader.errors import CorruptChunkError

    path = tmp_path / "a.zarr"
    make_atlas_store(path, n_cells=3000, n_genes=50, nnz_per_cell=5, seed=1, n_batches=4)
    if per_buffer:
        monkeypatch.setattr(matrix, "WHOLE_READ_MAX_ROWS", 1000)
    manager_for(path)
    codes = zarr.open_group(str(path), mode="r", use_consolidated=False)["obs/_scvi_batch"]
    assert codes.compressors == ()  # read in place by the loader
    shard = path / "obs" / "_scvi_batch" / "c" / "0"
    raw = bytearray(shard.read_bytes())
    raw[1234] = 77  # cell 1234 (int8 codes from offset 0): 77 of 4 categories
    shard.write_bytes(bytes(raw))
    read_back = manager_for(path)
    assert read_back.summary_stats.n_batch == 4  # the registration itself is reused
    # Codes held in memory are checked when the loader is made, read per buffer as they come.
    with pytest.raises(CorruptChunkError, match=r"_scvi_batch.*code 77 for cell 1234.*4 categ"):
        for _ in AnnDataLoader(read_back, batch_size=500, shuffle=True):
            pass
