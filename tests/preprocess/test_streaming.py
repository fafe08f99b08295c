"""Per-cell results go from the tasks straight into the store; the median is selected there.

On a store nothing per cell reaches the client: every result a dask computation returns is
recorded here (a scheduler that wraps the threaded one) and must be smaller than a byte per
cell, while the columns written equal the in-memory computation exactly.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import anndata as ad
import dask
import dask.threaded
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import atlasloader
from atlasloader.errors import InvalidDataError
from atlasloader.preprocess import library_size, preprocess, select

from .conftest import as_format, counts, write


class Recorder:
    """A dask scheduler recording the pickled size of everything it hands back."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        out = dask.threaded.get(dsk, keys, **kwargs)
        self.sizes.append(len(pickle.dumps(out)))
        return out


def _run(tmp_path: Path, fmt: str, n_obs: int) -> tuple[int, ad.AnnData, Path, dict[str, Any]]:
    """Preprocess a store; the largest result any computation returned, and the data."""
    ref = as_format(counts(n_obs=n_obs, n_vars=12, planted=None), fmt)
    path = write(ref, tmp_path / f"{fmt}-{n_obs}.zarr")
    recorder = Recorder()
    with dask.config.set(scheduler=recorder):
        out = preprocess(atlasloader.read_lazy(path, mode="r+"), gene_stats=False)
    assert out["computed"] == ["library_size"]
    return max(recorder.sizes), ref, path, out


@pytest.mark.parametrize("fmt", ["csr", "dense"])
def test_store_per_cell_columns_never_reach_the_client(
    tmp_path: Path, small_tasks: None, fmt: str
) -> None:
    # 4x the cells: a per-cell result (12 bytes per cell) would come back 100 kB larger. What
    # does come back is moments per gene and the median's histograms (fixed size).
    small, *_ = _run(tmp_path, fmt, 3_000)
    largest, ref, path, out = _run(tmp_path, fmt, 12_000)
    assert largest < small + 1_000, (small, largest)
    expected = library_size(ref)
    read = ad.read_zarr(path)
    for col in expected.columns:
        np.testing.assert_array_equal(read.obs[col].to_numpy(), expected[col].to_numpy())
        assert read.obs[col].dtype == expected[col].dtype
    assert out["summary"]["median_total_counts"] == float(
        np.median(expected["total_counts"][expected["total_counts"] > 0])
    )
    # The tasks wrote whole chunks: one per row block, many of them.
    totals = zarr.open_group(str(path), mode="r")["obs/total_counts"]
    assert totals.shape[0] // totals.chunks[0] >= 10


def test_in_memory_results_are_gathered_as_before() -> None:
    ref = counts(n_obs=300, n_vars=10)
    out = preprocess(ref, gene_stats=False)
    expected = library_size(ref.copy())
    np.testing.assert_array_equal(ref.obs["size_factor"], expected["size_factor"])
    assert out["summary"]["n_empty_cells"] == int((expected["total_counts"] == 0).sum())


def test_a_store_without_counts_raises_and_writes_nothing(tmp_path: Path) -> None:
    ref = counts(n_obs=50, n_vars=5)
    ref.X[:] = 0
    path = write(as_format(ref, "csr"), tmp_path / "zero.zarr")
    with pytest.raises(InvalidDataError, match=r"every cell has zero total counts in adata\.X"):
        preprocess(atlasloader.read_lazy(path, mode="r+"))
    read = ad.read_zarr(path)
    assert list(read.obs.columns) == ["batch"]
    assert "__atlasloader_staging__" not in zarr.open_group(str(path), mode="r")["obs"]


values = st.lists(
    st.one_of(
        st.integers(0, 40).map(float),
        st.floats(allow_nan=True, allow_infinity=False, allow_subnormal=True),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(values)
def test_positive_median_is_numpys(data: list[float]) -> None:
    x = np.array(data, dtype=np.float64)
    old = select.TASK_ROWS
    select.TASK_ROWS = 17  # several tasks, partial histograms added
    try:
        median, n = select.positive_median(x, x.size)
    finally:
        select.TASK_ROWS = old
    positive = x[x > 0]
    assert n == positive.size
    if n == 0:
        assert np.isnan(median)
    else:
        assert median == np.median(positive)


def test_positive_median_reads_a_zarr_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.poisson(3.0, 10_001).astype(np.float64)
    arr = zarr.create_array(str(tmp_path / "c.zarr"), shape=x.shape, chunks=(999,), dtype="f8")
    arr[:] = x
    assert select.positive_median(arr, x.size) == (float(np.median(x[x > 0])), int((x > 0).sum()))
