"""Tests of the on-disk synthetic atlas generators (real stores in tmp_path, no mocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr

import atlasloader.data
from atlasloader.data import atlas_batch_layout, make_atlas_h5ad, make_atlas_store
from atlasloader.errors import InvalidArgumentError, InvalidTypeError

SMALL = {"n_cells": 5_000, "n_genes": 300, "n_batches": 6, "n_labels": 5, "nnz_per_cell": 30}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, anndata.AnnData]:
    path = make_atlas_store(tmp_path_factory.mktemp("ref") / "ref.zarr", seed=11, **SMALL)
    return path, anndata.read_zarr(path)


def _files(root: str | Path) -> dict[str, bytes]:
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- content ------------------------------------------------------------------------------------
def test_shape_names_and_obs(reference: tuple[str, anndata.AnnData]) -> None:
    _, adata = reference
    assert adata.shape == (5_000, 300)
    assert isinstance(adata.X, sp.csr_matrix)
    assert adata.X.dtype == np.float32
    assert adata.obs_names[:2].tolist() == ["cell_0", "cell_1"]
    assert adata.obs_names[-1] == "cell_4999"
    assert adata.var_names.tolist() == [f"gene_{i}" for i in range(300)]
    assert list(adata.obs.columns) == ["batch", "labels", "n_counts"]
    assert adata.obs["batch"].cat.categories.tolist() == [f"batch_{i}" for i in range(6)]
    assert adata.obs["labels"].cat.categories.tolist() == [f"label_{i}" for i in range(5)]
    assert not adata.obs["batch"].cat.ordered
    assert adata.obs["n_counts"].dtype == np.float64
    assert len(adata.layers) == 0
    assert len(adata.obsm) == 0
    assert adata.uns == {}


def test_cells_sorted_by_batch(reference: tuple[str, anndata.AnnData]) -> None:
    _, adata = reference
    codes = adata.obs["batch"].cat.codes.to_numpy()
    assert np.all(np.diff(codes) >= 0)
    sizes = np.bincount(codes, minlength=6)
    np.testing.assert_array_equal(sizes, np.diff(atlas_batch_layout(5_000, 6, seed=11)))
    assert sizes.min() >= 1


def test_counts_are_positive_integers(reference: tuple[str, anndata.AnnData]) -> None:
    _, adata = reference
    x = adata.X
    assert x.data.min() >= 1
    np.testing.assert_array_equal(x.data, np.round(x.data))
    assert x.has_canonical_format  # sorted, no duplicate indices within a row
    np.testing.assert_array_equal(np.asarray(x.sum(axis=1)).ravel(), adata.obs["n_counts"])
    nnz = np.diff(x.indptr)
    assert nnz.min() >= 1
    assert 0.85 * 30 < nnz.mean() < 1.15 * 30  # calibrated around nnz_per_cell
    assert nnz.std() > 3  # and it varies from cell to cell


def test_gene_popularity_is_skewed(reference: tuple[str, anndata.AnnData]) -> None:
    _, adata = reference
    per_gene = np.sort(np.bincount(adata.X.indices, minlength=300))[::-1]
    top = per_gene[: 300 // 10].sum() / per_gene.sum()
    assert top > 0.3  # a uniform distribution would give 0.1


def test_labels_shape_expression(reference: tuple[str, anndata.AnnData]) -> None:
    # Each cell type has 20 marker genes: on them, mean profiles of two labels differ far
    # more than on a typical gene.
    _, adata = reference
    codes = adata.obs["labels"].cat.codes.to_numpy()
    profiles = [np.asarray(adata.X[codes == c].mean(axis=0)).ravel() for c in (0, 1)]
    diff = np.sort(np.abs(profiles[0] - profiles[1]))[::-1]
    assert diff[19] > 10 * np.median(diff)


# --- storage variants give the same data ---------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"shard_rows": 1024, "chunk_rows": 128},
        {"zarr_format": 2},
        {"codec": "zstd", "block_rows": 700},
        {"codec": None, "block_rows": 1, "chunk_rows": 1000},
        {"dense": True, "shard_rows": 512},
        {"dense": True, "zarr_format": 2, "chunk_rows": 999},
    ],
    ids=["v3-shards", "v2", "zstd-small-blocks", "raw-tiny-blocks", "dense-shards", "dense-v2"],
)
def test_storage_options_keep_the_data(
    tmp_path: Path, reference: tuple[str, anndata.AnnData], options: dict
) -> None:
    _, ref = reference
    path = make_atlas_store(tmp_path / "a.zarr", seed=11, **SMALL, **options)
    adata = anndata.read_zarr(path)
    expected = ref.X.toarray() if options.get("dense") else ref.X
    if options.get("dense"):
        assert isinstance(adata.X, np.ndarray)
        np.testing.assert_array_equal(adata.X, expected)
    else:
        assert isinstance(adata.X, sp.csr_matrix)
        assert (expected != adata.X).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, ref.obs)
    group = zarr.open_group(path, mode="r")
    x = group["X"] if options.get("dense") else group["X/data"]
    assert x.metadata.zarr_format == options.get("zarr_format", 3)
    if "shard_rows" in options:
        assert x.shards is not None
        assert x.shards[0] % x.chunks[0] == 0
        assert x.shards[0] > x.chunks[0]


def test_store_layout_matches_anndata(reference: tuple[str, anndata.AnnData]) -> None:
    path, _ = reference
    root = zarr.open_group(path, mode="r")
    assert dict(root.attrs) == {"encoding-type": "anndata", "encoding-version": "0.1.0"}
    x = root["X"]
    assert dict(x.attrs) == {
        "encoding-type": "csr_matrix",
        "encoding-version": "0.1.0",
        "shape": [5_000, 300],
    }
    assert x["data"].dtype == np.float32
    assert x["indices"].dtype == np.int32
    assert x["indptr"].dtype == np.int64
    assert x["indptr"].shape == (5_001,)
    assert x["data"].chunks == (256 * 30,)  # chunk_rows * nnz_per_cell
    for name in ("layers", "obsm", "obsp", "varm", "varp", "uns"):
        assert dict(root[name].attrs) == {"encoding-type": "dict", "encoding-version": "0.1.0"}
    obs = root["obs"].attrs
    assert obs["encoding-type"] == "dataframe"
    assert obs["encoding-version"] == "0.2.0"
    assert obs["_index"] == "_index"
    assert list(obs["column-order"]) == ["batch", "labels", "n_counts"]
    assert root["var"].attrs["encoding-type"] == "dataframe"
    batch = root["obs/batch"]
    assert dict(batch.attrs) == {
        "encoding-type": "categorical",
        "encoding-version": "0.2.0",
        "ordered": False,
    }
    assert set(batch.keys()) == {"categories", "codes"}


def test_same_seed_same_bytes_other_seed_other_data(
    tmp_path: Path, reference: tuple[str, anndata.AnnData]
) -> None:
    path, ref = reference
    again = make_atlas_store(tmp_path / "again.zarr", seed=11, **SMALL)
    assert _files(again) == _files(path)
    other = anndata.read_zarr(make_atlas_store(tmp_path / "other.zarr", seed=12, **SMALL))
    assert (other.X != ref.X).nnz > 0


def test_existing_store_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "a.zarr"
    make_atlas_store(path, n_cells=300, n_genes=50, nnz_per_cell=10, seed=1)
    make_atlas_store(path, n_cells=200, n_genes=40, nnz_per_cell=10, seed=1)
    assert anndata.read_zarr(path).shape == (200, 40)


# --- h5ad ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dense", [False, True], ids=["csr", "dense"])
def test_h5ad_equals_zarr(
    tmp_path: Path, reference: tuple[str, anndata.AnnData], dense: bool
) -> None:
    _, ref = reference
    path = make_atlas_h5ad(tmp_path / "a.h5ad", seed=11, dense=dense, block_rows=900, **SMALL)
    assert path.endswith("a.h5ad")
    adata = anndata.read_h5ad(path)
    if dense:
        np.testing.assert_array_equal(adata.X, ref.X.toarray())
    else:
        assert isinstance(adata.X, sp.csr_matrix)
        assert (ref.X != adata.X).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, ref.obs)
    pd.testing.assert_frame_equal(adata.var, ref.var)


# --- arguments -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"n_cells": 0}, InvalidArgumentError, "n_cells must be >= 1, got 0"),
        ({"n_genes": -5}, InvalidArgumentError, "n_genes must be >= 1, got -5"),
        ({"n_batches": 0}, InvalidArgumentError, "n_batches"),
        ({"n_cells": 5, "n_batches": 6}, InvalidArgumentError, r"n_batches \(6\)"),
        ({"nnz_per_cell": 200, "n_genes": 300}, InvalidArgumentError, "nnz_per_cell"),
        ({"seed": -1}, InvalidArgumentError, "seed"),
        ({"chunk_rows": 0}, InvalidArgumentError, "chunk_rows"),
        ({"block_rows": 0}, InvalidArgumentError, "block_rows"),
        ({"shard_rows": 16, "chunk_rows": 32}, InvalidArgumentError, "shard_rows must be >= 32"),
        ({"shard_rows": 512, "zarr_format": 2}, InvalidArgumentError, "zarr_format=3"),
        ({"zarr_format": 4}, InvalidArgumentError, "zarr_format"),
        ({"codec": "snappy"}, InvalidArgumentError, "codec"),
        ({"dtype": "U3"}, InvalidArgumentError, "dtype"),
        ({"n_cells": 10.0}, InvalidTypeError, "n_cells must be an integer"),
        ({"n_labels": True}, InvalidTypeError, "n_labels"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, error: type[Exception], words: str) -> None:
    args = {"n_cells": 100, "n_genes": 300, "nnz_per_cell": 10, **kwargs}
    with pytest.raises(error, match=words):
        make_atlas_store(tmp_path / "bad.zarr", **args)
    assert not (tmp_path / "bad.zarr").exists()  # nothing written before checking
    h5_args = {k: v for k, v in args.items() if k not in ("shard_rows", "zarr_format")}
    if h5_args != args:
        return
    with pytest.raises(error, match=words):
        make_atlas_h5ad(tmp_path / "bad.h5ad", **h5_args)


def test_batch_layout() -> None:
    bounds = atlas_batch_layout(1_000, 7, seed=3)
    np.testing.assert_array_equal([bounds[0], bounds[-1], len(bounds)], [0, 1_000, 8])
    assert np.all(np.diff(bounds) >= 1)
    np.testing.assert_array_equal(bounds, atlas_batch_layout(1_000, 7, seed=3))
    np.testing.assert_array_equal(atlas_batch_layout(3, 3, seed=0), [0, 1, 2, 3])


# --- memory --------------------------------------------------------------------------------------
_MEMORY_SCRIPT = """
import json, sys, time
import psutil
from atlasloader.data import make_atlas_store
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
rss_before = psutil.Process().memory_info().rss
# ru_maxrss survives exec (it would report the pytest parent's peak); reset the high-water mark.
open("/proc/self/clear_refs", "w").write("5")
start = time.perf_counter()
make_atlas_store(sys.argv[1], n_cells=300_000, n_genes=2_000, nnz_per_cell=200,
                 block_rows=16_384, seed=0)
seconds = time.perf_counter() - start
print(json.dumps({"growth": hwm() - rss_before, "seconds": seconds}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_memory_stays_bounded_for_a_large_store(tmp_path: Path) -> None:
    # A fresh interpreter: its peak RSS reflects this generation alone.
    src = str(Path(atlasloader.data.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    path = tmp_path / "big.zarr"
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    x = zarr.open_group(path, mode="r")["X"]
    x_bytes = x["data"].nbytes + x["indices"].nbytes + x["indptr"].nbytes
    assert x_bytes > 400e6  # ~60M stored values: the check below is not vacuous
    assert result["growth"] < 0.5 * x_bytes, result
