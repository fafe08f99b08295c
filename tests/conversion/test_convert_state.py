"""Convert's per-cell state (permutation, inverse, row pointers) lives in files, not the graph."""

from __future__ import annotations

import pickle
from pathlib import Path

import anndata as ad
import dask
import dask.threaded
import numpy as np
import pytest
import scipy.sparse as sp

from atlasloader.conversion import state as _convert_state
from atlasloader.conversion.convert import convert
from atlasloader.conversion.state import Spilled, permutation, remove_state, row_pointers


@pytest.fixture
def small_window(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(_convert_state, "WINDOW", 7)
    return 7


@pytest.mark.parametrize("n", [0, 1, 6, 7, 8, 50])
def test_permutation_is_numpys_and_inverse_inverts(
    tmp_path: Path, small_window: int, n: int
) -> None:
    perm, inverse = permutation(tmp_path / "state", n, seed=11)
    p, inv = perm.read(0, n), inverse.read(0, n)
    assert np.array_equal(p, np.random.default_rng(11).permutation(n))
    assert np.array_equal(inv[p], np.arange(n))


@pytest.mark.parametrize("shuffled", [False, True])
def test_row_pointers_in_windows(tmp_path: Path, small_window: int, shuffled: bool) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 5, 40)
    counts = Spilled.create(tmp_path / "state", "counts", 40)
    counts.write(0, values[:13])
    counts.write(13, values[13:])
    perm = permutation(tmp_path / "state", 40, seed=3)[0] if shuffled else None
    ordered = values if perm is None else values[perm.read(0, 40)]
    ptr = row_pointers(tmp_path / "state", counts, perm)
    assert ptr.length == 41
    assert np.array_equal(ptr.read(0, 41), np.concatenate([[0], np.cumsum(ordered)]))
    assert ptr.last() == int(values.sum())
    assert np.array_equal(ptr.take(np.array([40, 0, 5])), ptr.read(0, 41)[[40, 0, 5]])
    remove_state(tmp_path / "state")
    assert not (tmp_path / "state").exists()


def _largest_graph(src: Path, dst: Path, n_obs: int) -> int:
    """Convert with shuffling; return the pickled size of the largest task graph it ran."""
    sizes: list[int] = []

    def recording_get(dsk, keys, **kwargs):  # type: ignore[no-untyped-def]
        sizes.append(len(pickle.dumps(dsk)))
        return dask.threaded.get(dsk, keys, **kwargs)

    rng = np.random.default_rng(0)
    x = sp.random(n_obs, 30, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    ad.AnnData(x).write_h5ad(src)
    with dask.config.set(scheduler=recording_get):
        convert(src, dst, shuffle=True, seed=1, block_rows=1 << 20)
    got = ad.read_zarr(dst)
    order = got.obs["original_position"].to_numpy()
    assert np.array_equal(got.X[:].toarray(), x.toarray()[order])
    return max(sizes)


def test_task_graphs_hold_no_per_cell_arrays(tmp_path: Path) -> None:
    # 30x the cells: per-cell arrays in the graph (16+ bytes per cell) would add ~1 MB.
    small = _largest_graph(tmp_path / "a.h5ad", tmp_path / "a.zarr", 2_000)
    large = _largest_graph(tmp_path / "b.h5ad", tmp_path / "b.zarr", 60_000)
    assert large < small + 50_000, (small, large)
    assert not (tmp_path / "b.zarr" / _convert_state.STATE_DIR).exists()
