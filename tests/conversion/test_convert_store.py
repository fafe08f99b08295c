"""Tests of ``atlasloader.convert`` (h5ad / Zarr v2 / Zarr v3 in, sharded Zarr v3 out).

Everything runs on real files in ``tmp_path``; crashes and memory are measured in real
subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import atlasloader
from atlasloader.conversion import safety
from atlasloader.conversion.convert import convert, layout_of
from atlasloader.conversion.shards import ShardAppender, ShardWriter
from atlasloader.data import make_atlas_h5ad, make_atlas_store
from atlasloader.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    NotAnnDataStoreError,
    StoreError,
)
from atlasloader.store.open import open_root

ATLAS = {"n_cells": 20_000, "n_genes": 500, "n_batches": 5, "nnz_per_cell": 40}


# --- inputs -------------------------------------------------------------------------------------
def synthetic(n_obs: int = 600, n_vars: int = 40, seed: int = 0) -> ad.AnnData:
    """Counts with every kind of element convert carries over (and some empty rows)."""
    rng = np.random.default_rng(seed)
    counts = rng.negative_binomial(2, 0.6, size=(n_obs, n_vars)) * (
        rng.random((n_obs, n_vars)) < 0.2
    )
    counts[::37] = 0  # cells without any value
    x = sp.csr_matrix(counts.astype(np.float32))
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical(rng.choice(["b0", "b1", "b2"], n_obs)),
            "stage": pd.Categorical(
                rng.choice(["early", "late"], n_obs), categories=["early", "late"], ordered=True
            ),
            "n_genes": np.diff(x.indptr).astype(np.int64),
            "score": rng.normal(size=n_obs),
            "flag": rng.random(n_obs) > 0.5,
        },
        index=pd.Index([f"cell_{i}" for i in range(n_obs)]),
    )
    var = pd.DataFrame(
        {"kind": pd.Categorical(rng.choice(["coding", "lnc"], n_vars)), "mean": counts.mean(0)},
        index=pd.Index([f"gene_{j}" for j in range(n_vars)]),
    )
    adata = ad.AnnData(x, obs=obs, var=var)
    adata.layers["counts"] = sp.csr_matrix(counts.astype(np.int64))
    adata.layers["dense"] = counts.astype(np.float32)
    adata.obsm["X_pca"] = rng.normal(size=(n_obs, 8)).astype(np.float32)
    adata.obsm["meta"] = pd.DataFrame({"a": rng.integers(0, 5, n_obs)}, index=adata.obs_names)
    adata.obsp["distances"] = sp.random(n_obs, n_obs, density=0.01, format="csr", random_state=1)
    adata.varm["loadings"] = rng.normal(size=(n_vars, 3))
    adata.uns["title"] = "synthetic"
    adata.uns["params"] = {"k": 15, "names": np.array(["a", "b"])}
    adata.uns["colors"] = np.array(["#ff0000", "#00ff00", "#0000ff"])
    adata.raw = adata[:, : n_vars // 2].copy()
    return adata


def write_input(adata: ad.AnnData, path: Path) -> Path:
    """``write_h5ad`` for ``*.h5ad``, else ``write_zarr`` in format 2 (``*.v2.zarr``) or 3."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if path.suffix == ".h5ad":
            adata.write_h5ad(path)
        else:
            fmt = 2 if path.name.endswith(".v2.zarr") else 3
            with ad.settings.override(zarr_write_format=fmt):
                adata.write_zarr(path)
    return path


def read_input(path: Path) -> ad.AnnData:
    return ad.read_h5ad(path) if path.suffix == ".h5ad" else ad.read_zarr(path)


def assert_matrix_equal(out: object, ref: object, where: str) -> None:
    """Same values, dtype and (for sparse) the very same stored structure."""
    assert type(out) is type(ref), where
    if sp.issparse(ref):
        assert sp.issparse(out)
        assert (out.format, out.shape, out.dtype) == (ref.format, ref.shape, ref.dtype), where
        for name in ("indptr", "indices", "data"):
            np.testing.assert_array_equal(getattr(out, name), getattr(ref, name), err_msg=where)
    elif isinstance(ref, pd.DataFrame):
        pd.testing.assert_frame_equal(out, ref)  # type: ignore[arg-type]
    else:
        np.testing.assert_array_equal(out, ref, err_msg=where)  # type: ignore[arg-type]
        # Strings read back from Zarr v3 are numpy StringDType, from HDF5 object: same values.
        if ref.dtype.kind not in "OUT":  # type: ignore[attr-defined]
            assert out.dtype == ref.dtype, where  # type: ignore[attr-defined]


def assert_tree_equal(out: object, ref: object, where: str = "uns") -> None:
    if isinstance(ref, dict):
        assert isinstance(out, dict), where
        assert sorted(out) == sorted(ref), where
        for key in ref:
            assert_tree_equal(out[key], ref[key], f"{where}[{key!r}]")
    elif isinstance(ref, np.ndarray | pd.DataFrame) or sp.issparse(ref):
        assert_matrix_equal(out, ref, where)
    else:
        assert out == ref, where


def assert_same(out: ad.AnnData, ref: ad.AnnData) -> None:
    """``out`` (read back from the converted store) holds exactly what ``ref`` holds."""
    assert out.shape == ref.shape
    assert_matrix_equal(out.X, ref.X, "X")
    pd.testing.assert_frame_equal(out.obs, ref.obs)  # dtypes, categories and their order
    pd.testing.assert_frame_equal(out.var, ref.var)
    for attr in ("layers", "obsm", "obsp", "varm", "varp"):
        mapping, expected = getattr(out, attr), getattr(ref, attr)
        assert sorted(mapping.keys()) == sorted(expected.keys()), attr
        for key in expected:
            assert_matrix_equal(mapping[key], expected[key], f"{attr}[{key!r}]")
    assert_tree_equal(out.uns, ref.uns)
    assert (out.raw is None) == (ref.raw is None)
    if ref.raw is not None:
        assert_matrix_equal(out.raw.X, ref.raw.X, "raw.X")
        pd.testing.assert_frame_equal(out.raw.var, ref.raw.var)


@pytest.fixture(scope="module")
def atlas_h5ad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(make_atlas_h5ad(tmp_path_factory.mktemp("atlas") / "atlas.h5ad", **ATLAS))


@pytest.fixture(scope="module")
def atlas_converted(atlas_h5ad: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(convert(atlas_h5ad, tmp_path_factory.mktemp("conv") / "atlas.zarr"))


# --- content ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["in.h5ad", "in.v2.zarr", "in.v3.zarr"])
def test_roundtrip_equals_input(tmp_path: Path, name: str) -> None:
    src = write_input(synthetic(), tmp_path / name)
    # Tiny blocks and shards: many blocks, shards straddling blocks, a partial last shard.
    out = convert(src, tmp_path / "out.zarr", block_rows=50, shard_rows=64)
    assert out == str(tmp_path / "out.zarr")
    result = ad.read_zarr(out)
    assert_same(result, read_input(src))
    assert result.obs["stage"].cat.ordered
    assert sorted(os.listdir(tmp_path)) == sorted([name, "out.zarr"])  # nothing left behind


def test_atlas_h5ad_roundtrip(atlas_h5ad: Path, atlas_converted: Path) -> None:
    assert_same(ad.read_zarr(atlas_converted), ad.read_h5ad(atlas_h5ad))


@pytest.mark.parametrize("shard_rows", [None, 1000])
def test_sharded_zarr_input(tmp_path: Path, shard_rows: int | None) -> None:
    src = make_atlas_store(
        tmp_path / "in.zarr", n_cells=3_000, n_genes=200, nnz_per_cell=20, shard_rows=shard_rows
    )
    out = convert(src, tmp_path / "out.zarr", block_rows=700)
    assert_same(ad.read_zarr(out), ad.read_zarr(src))


def test_dense_x_stays_dense(tmp_path: Path) -> None:
    adata = synthetic(n_obs=300, n_vars=30)
    adata.X = adata.X.toarray()
    src = write_input(adata, tmp_path / "dense.h5ad")
    out = convert(src, tmp_path / "out.zarr", block_rows=40)
    assert_same(ad.read_zarr(out), ad.read_h5ad(src))
    x = zarr.open_group(out, mode="r")["X"]
    assert isinstance(x, zarr.Array)
    assert x.chunks == (16, 30)
    assert x.shards is not None
    assert x.shards[1] == 30
    assert x.shards[0] % 16 == 0
    assert x.attrs["encoding-type"] == "array"
    layout = layout_of(out)
    assert (layout["format"], layout["chunk_rows"]) == ("dense", 16)


def test_dense_atlas_h5ad(tmp_path: Path) -> None:
    src = make_atlas_h5ad(
        tmp_path / "d.h5ad", n_cells=2_000, n_genes=64, nnz_per_cell=10, dense=True
    )
    out = convert(src, tmp_path / "out.zarr", chunk_rows=32)
    assert_same(ad.read_zarr(out), ad.read_h5ad(src))
    assert zarr.open_array(f"{out}/X", mode="r").chunks == (32, 64)


def test_empty_and_tiny_matrices(tmp_path: Path) -> None:
    adata = ad.AnnData(sp.csr_matrix((3, 5), dtype=np.float32))  # no stored values at all
    adata.layers["one"] = sp.csr_matrix(np.eye(3, 5, dtype=np.float64))
    src = write_input(adata, tmp_path / "tiny.h5ad")
    out = convert(src, tmp_path / "out.zarr")
    assert_same(ad.read_zarr(out), ad.read_h5ad(src))
    assert layout_of(out)["nnz"] == 0


def test_loader_reads_converted_rows(atlas_h5ad: Path, atlas_converted: Path) -> None:
    ref = ad.read_h5ad(atlas_h5ad).X
    lazy = atlasloader.read_lazy(atlas_converted, mode="r")
    assert lazy.X is not None
    assert lazy.X.row_chunk == 16
    rows = np.random.default_rng(0).choice(ref.shape[0], 500, replace=False)
    assert (lazy.X.read_row_list(rows) != ref[rows]).nnz == 0


# --- layout -------------------------------------------------------------------------------------
def test_layout_of_converted_atlas(atlas_converted: Path) -> None:
    root = zarr.open_group(atlas_converted, mode="r")
    assert root.metadata.zarr_format == 3
    assert dict(root.attrs) == {"encoding-type": "anndata", "encoding-version": "0.1.0"}
    meta = json.loads((atlas_converted / "zarr.json").read_text())
    assert "X/data" in meta["consolidated_metadata"]["metadata"]  # consolidated at the end
    n, nnz = ATLAS["n_cells"], int(root["X/indptr"][-1])
    data, indices, indptr = root["X/data"], root["X/indices"], root["X/indptr"]
    # 16-row chunks of values inside shards of many chunks (~16 MB or a quarter block).
    assert data.chunks == (round(16 * nnz / n),)
    assert indices.chunks == data.chunks
    assert data.shards is not None
    assert data.shards == indices.shards
    assert data.shards[0] % data.chunks[0] == 0
    assert data.shards[0] // data.chunks[0] >= 256
    (codec,) = data.compressors
    assert (codec.cname.value, codec.clevel, codec.shuffle.value) == ("lz4", 3, "shuffle")
    assert indices.compressors[0].shuffle.value == "bitshuffle"
    assert (data.dtype, indices.dtype, indptr.dtype) == (np.float32, np.int32, np.int64)
    # Small pointer chunks (the loader reads the pointers of its runs), sharded when long.
    assert indptr.chunks == (1_024,)
    assert indptr.shards is None or indptr.shards[0] % 1_024 == 0
    assert indptr.compressors == ()  # on local disk the loader reads its runs' pointers in place
    layout = layout_of(atlas_converted)
    assert layout["format"] == "csr"
    assert layout["chunk_rows"] == 16
    assert 1_024 <= layout["shard_rows"] <= 65_536
    assert (layout["codec"], layout["shuffle"]) == ("lz4", "shuffle")
    assert layout["consolidated"] is True
    assert layout["shape"] == (n, ATLAS["n_genes"])


def test_layout_options(atlas_h5ad: Path, tmp_path: Path) -> None:
    out = convert(atlas_h5ad, tmp_path / "zstd.zarr", chunk_rows=64, shard_rows=1_000, codec="zstd")
    layout = layout_of(out)
    assert (layout["chunk_rows"], layout["codec"]) == (64, "zstd")
    assert abs(layout["shard_rows"] - 1_024) <= 2  # rounded up to whole chunks
    out = convert(atlas_h5ad, tmp_path / "raw.zarr", codec=None)
    assert layout_of(out)["codec"] is None
    assert zarr.open_array(f"{out}/X/data", mode="r").compressors == ()
    assert_same(ad.read_zarr(out), ad.read_h5ad(atlas_h5ad))


def test_layout_of_other_stores(tmp_path: Path) -> None:
    src = write_input(synthetic(), tmp_path / "in.v2.zarr")
    layout = layout_of(src, "layers/dense")
    assert (layout["zarr_format"], layout["format"], layout["shard_rows"]) == (2, "dense", None)
    assert layout_of(src)["format"] == "csr"
    with pytest.raises(KeyError, match="nope"):
        layout_of(src, "layers/nope")


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 300),
    width=st.integers(1, 3),
    chunk=st.integers(1, 20),
    per_shard=st.integers(1, 6),
    blocks=st.lists(st.integers(1, 90), min_size=1, max_size=8),
    codec=st.sampled_from(["lz4", "zstd", None]),
)
def test_shard_writer_matches_zarr(
    tmp_path_factory: pytest.TempPathFactory,
    n: int,
    width: int,
    chunk: int,
    per_shard: int,
    blocks: list[int],
    codec: str | None,
) -> None:
    from atlasloader.data._writers import create_zarr_array

    root = zarr.open_group(tmp_path_factory.mktemp("shards") / "s.zarr", mode="w", zarr_format=3)
    shape = (n, width)
    arr = create_zarr_array(
        root, "a", shape=shape, dtype="int32", chunks=(chunk, width),
        shards=(chunk * per_shard, width), codec=codec, zarr_format=3,
    )  # fmt: skip
    writer = ShardWriter(arr)
    assert writer.fast
    values = np.arange(n * width, dtype=np.int32).reshape(shape) * 7 - 3
    out = ShardAppender(writer, chunk * per_shard)
    start = 0
    for size in blocks * (n // max(1, sum(blocks)) + 1):  # appends of uneven sizes
        out.append(values[start : start + size])
        start = min(n, start + size)
    out.close()
    np.testing.assert_array_equal(zarr.open_array(arr.store, path="a", mode="r")[:], values)


# --- crash safety and overwrite -----------------------------------------------------------------
CRASH = """
import os, sys
import atlasloader.conversion.shards as shards
original = shards.ShardWriter._store
calls = [0]

def store(self, shard, payload):
    original(self, shard, payload)
    calls[0] += 1
    if calls[0] == 25:
        os._exit(17)  # as abrupt as SIGKILL: no cleanup, no finally

shards.ShardWriter._store = store
from atlasloader.conversion.convert import convert
convert(sys.argv[1], sys.argv[2], block_rows=256, shard_rows=64)
"""


def test_crash_leaves_no_store_and_rerun_succeeds(atlas_h5ad: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.zarr"
    proc = subprocess.run(
        [sys.executable, "-c", CRASH, str(atlas_h5ad), str(dst)], capture_output=True, text=True
    )
    assert proc.returncode == 17, proc.stderr
    assert not dst.exists()
    (partial,) = tmp_path.glob("out.zarr.partial-*")
    assert (partial / "X" / "data").is_dir()
    with pytest.raises(NotAnnDataStoreError):
        open_root(partial)  # the partial never claims to be AnnData
    with pytest.raises(Exception):  # noqa: B017 - anndata's error type is unspecified
        ad.read_zarr(partial)
    with pytest.raises(StoreError):
        open_root(dst)
    convert(atlas_h5ad, dst)
    assert_same(ad.read_zarr(dst), ad.read_h5ad(atlas_h5ad))
    assert list(tmp_path.glob("out.zarr.partial-*")) == []  # its owner is dead: removed


def test_partials_of_running_or_unknown_conversions_are_kept(tmp_path: Path) -> None:
    src = write_input(synthetic(n_obs=50), tmp_path / "in.h5ad")
    dst = tmp_path / "out.zarr"
    live = safety.partial_path(dst)  # named after this process, which still runs
    live.mkdir()
    elsewhere = tmp_path / f"out.zarr.partial-00000000-1-1-{'0' * 32}"  # another host's
    elsewhere.mkdir()
    (tmp_path / "out.zarr.partial-unknown").mkdir()
    with pytest.warns(UserWarning, match="partial-unknown"):
        convert(src, dst)
    assert live.exists()
    assert elsewhere.exists()
    assert (tmp_path / "out.zarr.partial-unknown").exists()
    assert_same(ad.read_zarr(dst), ad.read_h5ad(src))


# A conversion killed right after creating its directories: one empty (before the first file),
# one that already claims to be AnnData (after the last write, before the rename), one store
# moved aside by ``overwrite`` (between the two renames).
DEAD = """
import sys
from pathlib import Path
import zarr
from atlasloader.conversion import safety
dst = Path(sys.argv[1])
safety.partial_path(dst).mkdir()
done = zarr.open_group(safety.partial_path(dst), mode="w", zarr_format=3)
done.attrs.put({"encoding-type": "anndata", "encoding-version": "0.1.0"})
safety._owned_name(dst, "old").mkdir()
"""


def test_what_a_dead_conversion_left_is_removed_whenever_it_died(tmp_path: Path) -> None:
    src = write_input(synthetic(n_obs=50), tmp_path / "in.h5ad")
    dst = tmp_path / "out.zarr"
    subprocess.run([sys.executable, "-c", DEAD, str(dst)], check=True)
    left = sorted(p.name.split("-")[0] for p in tmp_path.glob("out.zarr.*"))
    assert left == ["out.zarr.old", "out.zarr.partial", "out.zarr.partial"]
    convert(src, dst)  # the target was missing: the moved-aside store went once it was back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "out.zarr"]
    assert_same(ad.read_zarr(dst), ad.read_h5ad(src))


def test_overwrite(tmp_path: Path) -> None:
    a = write_input(synthetic(n_obs=80, seed=1), tmp_path / "a.h5ad")
    b = write_input(synthetic(n_obs=90, seed=2), tmp_path / "b.h5ad")
    dst = tmp_path / "out.zarr"
    convert(a, dst)
    with pytest.raises(StoreError, match=r"out\.zarr.*overwrite=True"):
        convert(b, dst)
    assert ad.read_zarr(dst).n_obs == 80  # untouched
    convert(b, dst, overwrite=True)
    assert_same(ad.read_zarr(dst), ad.read_h5ad(b))
    f = tmp_path / "file.zarr"
    f.write_text("not a store")
    with pytest.raises(StoreError, match="already exists"):
        convert(a, f)
    convert(a, f, overwrite=True)
    assert ad.read_zarr(f).n_obs == 80
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.h5ad",
        "b.h5ad",
        "file.zarr",
        "out.zarr",
    ]


def test_in_place_conversion(tmp_path: Path) -> None:
    src = write_input(synthetic(n_obs=70), tmp_path / "in.v2.zarr")
    ref = ad.read_zarr(src)
    convert(src, src, overwrite=True)
    assert_same(ad.read_zarr(src), ref)
    assert layout_of(src)["zarr_format"] == 3


# --- errors -------------------------------------------------------------------------------------
def test_bad_inputs(tmp_path: Path) -> None:
    missing = tmp_path / "missing.h5ad"
    with pytest.raises(StoreError, match=r"missing\.h5ad"):
        convert(missing, tmp_path / "o.zarr")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(NotAnnDataStoreError, match=r"notes\.txt.*\.h5ad.*Zarr"):
        convert(text, tmp_path / "o.zarr")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(NotAnnDataStoreError, match=r"other\.h5.*not AnnData"):
        convert(tmp_path / "other.h5", tmp_path / "o.zarr")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(NotAnnDataStoreError, match=r"empty_dir.*\.h5ad"):
        convert(tmp_path / "empty_dir", tmp_path / "o.zarr")
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("name", ["csc.h5ad", "csc.v3.zarr"])
def test_csc_input_raises(tmp_path: Path, name: str) -> None:
    adata = synthetic(n_obs=60)
    adata.layers["csc"] = sp.csc_matrix(adata.X)
    src = write_input(adata, tmp_path / name)
    with pytest.raises(InvalidTypeError, match=r"layers\['csc'\].*CSC.*tocsr"):
        convert(src, tmp_path / "o.zarr")
    assert sorted(os.listdir(tmp_path)) == [name]  # the partial store was removed


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"codec": "gzip"}, InvalidArgumentError),
        ({"codec": 3}, InvalidTypeError),
        ({"chunk_rows": 0}, InvalidArgumentError),
        ({"chunk_rows": 1.5}, InvalidTypeError),
        ({"shard_rows": -1}, InvalidArgumentError),
        ({"block_rows": 0}, InvalidArgumentError),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, error: type[Exception]) -> None:
    src = write_input(synthetic(n_obs=20), tmp_path / "in.h5ad")
    with pytest.raises(error):
        convert(src, tmp_path / "o.zarr", **kwargs)


def test_public_name_and_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_input(synthetic(n_obs=100), tmp_path / "in.h5ad")
    out = atlasloader.convert(src, tmp_path / "o.zarr", progress=True)
    assert "adata.X" in capsys.readouterr().err
    assert ad.read_zarr(out).n_obs == 100


# --- memory -------------------------------------------------------------------------------------
MEMORY = """
import json, sys
import anndata, h5py, numcodecs, zarr  # imported before measuring: not the conversion's memory
from atlasloader.conversion.convert import convert

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
base = status("VmRSS:")
convert(sys.argv[1], sys.argv[2], block_rows=16_384)
print(json.dumps({"base": base, "peak": status("VmHWM:")}))
"""


@pytest.mark.slow
def test_memory_is_bounded(tmp_path: Path) -> None:
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak resident size")
    src = make_atlas_h5ad(tmp_path / "big.h5ad", n_cells=300_000, n_genes=2_000, nnz_per_cell=100)
    with h5py.File(src) as f:
        x_bytes = f["X/data"].nbytes + f["X/indices"].nbytes + f["X/indptr"].nbytes
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEMORY), src, str(tmp_path / "big.zarr")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    mem = json.loads(proc.stdout.strip().splitlines()[-1])
    extra = mem["peak"] - mem["base"]
    # Two 13 MB blocks in flight plus obs (read whole, ~60 MB for 300k cells); X is ~240 MB.
    assert extra < 0.5 * x_bytes, f"peak {extra / 1e6:.0f} MB for X of {x_bytes / 1e6:.0f} MB"
    assert layout_of(tmp_path / "big.zarr")["nnz"] == (x_bytes - 8 * 300_001) // 8
