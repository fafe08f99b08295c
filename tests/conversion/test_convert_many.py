"""Tests of ``atlasloader.convert`` with many inputs, gene joins, shuffling and dask schedulers.

Real files only: inputs are generated with ``make_atlas_h5ad`` / ``make_atlas_store`` (or
written with anndata), results compared with ``anndata.concat`` of the inputs read into memory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import anndata as ad
import dask
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from distributed import get_task_stream
from hypothesis import given, settings
from hypothesis import strategies as st

import atlasloader
from atlasloader.conversion.convert import POSITION_KEY, SOURCE_KEY, convert, original_order
from atlasloader.conversion.shuffle import take_ranges
from atlasloader.conversion.tasks import pieces_of
from atlasloader.data import make_atlas_h5ad, make_atlas_store
from atlasloader.errors import (
    InvalidArgumentError,
    InvalidDataError,
    InvalidTypeError,
    NotAnnDataStoreError,
    StoreError,
)

from .test_convert_store import assert_matrix_equal, read_input, synthetic, write_input

SMALL = {"n_genes": 60, "nnz_per_cell": 12}
# Tiny shards and blocks: many tasks, CSR rows straddling shards and shuffle buckets.
TINY = {"shard_rows": 32, "block_rows": 100}


def read(path: str | Path) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_input(Path(path))


def rewrite_h5ad(path: str, edit: object) -> str:
    """Read a small generated .h5ad, let ``edit`` change it in place, write it back."""
    adata = ad.read_h5ad(path)
    edit(adata)  # type: ignore[operator]
    write_input(adata, Path(path))
    return path


@pytest.fixture(scope="module")
def mixed_inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """CSR .h5ad, CSR Zarr v3 (other batches), dense .h5ad with other obs columns and types."""
    tmp = tmp_path_factory.mktemp("mixed")
    a = make_atlas_h5ad(tmp / "a.h5ad", n_cells=700, n_batches=3, seed=0, **SMALL)
    b = make_atlas_store(tmp / "b.zarr", n_cells=500, n_batches=5, seed=1, **SMALL)

    def edit(adata: ad.AnnData) -> None:
        adata.obs["batch"] = adata.obs["batch"].astype(str).str.replace("batch", "donor")
        adata.obs["donor"] = np.where(np.arange(adata.n_obs) % 2, "d1", "d2").astype(object)
        adata.obs["flag"] = np.arange(adata.n_obs) % 3 == 0
        adata.obs["n_counts"] = adata.obs["n_counts"].round().astype(np.int64)

    c = make_atlas_h5ad(tmp / "c.h5ad", n_cells=300, n_batches=2, seed=2, dense=True, **SMALL)
    return [a, b, rewrite_h5ad(c, edit)]


def concat_ref(paths: list[str], **kwargs: object) -> ad.AnnData:
    """``anndata.concat`` of the inputs in memory, with convert's ``source_file`` column."""
    adatas = [read(p) for p in paths]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ad.concat(adatas, **kwargs)  # type: ignore[call-overload]
    codes = np.repeat(np.arange(len(paths)), [a.n_obs for a in adatas])
    ref.obs[SOURCE_KEY] = pd.Categorical.from_codes(codes, categories=[str(p) for p in paths])
    return ref


def as_objects(values: pd.Series) -> list[object]:
    """Values with every kind of missing value as None (categorical, string or object)."""
    return [None if pd.isna(v) else v for v in values.astype(object)]


def assert_obs_like_concat(out: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(out.index) == list(ref.index)
    assert set(out.columns) == set(ref.columns)
    for col in ref.columns:
        o, r = out[col], ref[col]
        if isinstance(r.dtype, pd.CategoricalDtype):
            assert isinstance(o.dtype, pd.CategoricalDtype), col
            assert list(o.cat.categories) == list(r.cat.categories), col
        if r.dtype.kind == "f":
            np.testing.assert_array_equal(o.to_numpy(), r.to_numpy(), err_msg=col)
            assert o.dtype == r.dtype, col
        else:
            assert as_objects(o) == as_objects(r), col


def assert_x_equal(out: object, ref: object) -> None:
    assert sp.issparse(out)
    assert out.format == "csr"  # type: ignore[union-attr]
    assert out.has_sorted_indices  # type: ignore[union-attr]
    assert out.shape == ref.shape  # type: ignore[attr-defined]
    assert out.dtype == ref.dtype  # type: ignore[attr-defined]
    assert (out != sp.csr_matrix(ref)).nnz == 0  # type: ignore[operator]


# --- many inputs --------------------------------------------------------------------------------
def test_many_inputs_equal_anndata_concat(mixed_inputs: list[str], tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"obs_names collide.*cell_0.*'-<input position>'"):
        out = convert(mixed_inputs, tmp_path / "abc.zarr", **TINY)
    result = ad.read_zarr(out)
    ref = concat_ref(mixed_inputs, join="outer", index_unique="-")
    assert_x_equal(result.X, ref.X)  # CSR + CSR + dense -> CSR
    pd.testing.assert_index_equal(result.var_names, ref.var_names)
    assert_obs_like_concat(result.obs, ref.obs)
    obs = result.obs
    # The union of categories, naturally sorted; categorical + string -> categorical.
    assert isinstance(obs["batch"].dtype, pd.CategoricalDtype)
    assert list(obs["batch"].cat.categories) == [
        *(f"batch_{i}" for i in range(5)),
        "donor_0",
        "donor_1",
    ]
    # Missing values: NaN for numbers, missing category for strings, NA for booleans.
    assert obs["n_counts"].dtype == np.float64
    assert isinstance(obs["donor"].dtype, pd.CategoricalDtype)
    assert obs["donor"].isna().sum() == 1_200
    assert str(obs["flag"].dtype) == "boolean"
    assert obs["flag"].isna().sum() == 1_200
    assert list(obs[SOURCE_KEY].cat.categories) == mixed_inputs
    assert list(obs.columns)[-1] == SOURCE_KEY


def test_unique_obs_names_are_kept(tmp_path: Path) -> None:
    a = write_input(synthetic(n_obs=40, seed=1), tmp_path / "a.h5ad")
    other = synthetic(n_obs=30, seed=2)
    other.obs_names = [f"other_{i}" for i in range(30)]
    b = write_input(other, tmp_path / "b.v2.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no renaming notice...
        warnings.filterwarnings("ignore", "adata.obsp", UserWarning)  # ...only obsp dropped
        out = convert([a, b], tmp_path / "ab.zarr", source_key="dataset")
    result = ad.read_zarr(out)
    ref = concat_ref([a, b])
    assert list(result.obs_names) == list(ref.obs_names)
    assert list(result.obs["dataset"].cat.categories) == [str(a), str(b)]
    assert SOURCE_KEY not in result.obs


def test_layers_obsm_raw_and_dropped_elements(tmp_path: Path) -> None:
    one, two = synthetic(n_obs=90, seed=1), synthetic(n_obs=70, seed=2)
    del two.layers["dense"]  # in one input only: dropped
    two.obsm["X_pca"] = sp.csr_matrix(two.obsm["X_pca"])  # dense + CSR -> CSR
    a = write_input(one, tmp_path / "a.v3.zarr")
    b = write_input(two, tmp_path / "b.h5ad")
    with pytest.warns(UserWarning, match="is not converted|obs_names collide") as record:
        out = convert([a, b], tmp_path / "ab.zarr", **TINY)
    messages = " ".join(str(w.message) for w in record)
    assert "adata.layers['dense'] is not converted: missing in" in messages
    assert "adata.obsp['distances'] is not converted" in messages
    result = ad.read_zarr(out)
    ref = concat_ref([a, b], join="outer", index_unique="-")
    assert sorted(result.layers) == ["counts"]
    assert_matrix_equal(result.layers["counts"], sp.csr_matrix(ref.layers["counts"]), "counts")
    assert_x_equal(result.obsm["X_pca"], ref.obsm["X_pca"])
    pd.testing.assert_frame_equal(result.obsm["meta"], ref.obsm["meta"])
    assert len(result.obsp) == 0
    assert_matrix_equal(result.raw.X, sp.vstack([one.raw.X, two.raw.X], format="csr"), "raw.X")
    pd.testing.assert_frame_equal(result.raw.var, one.raw.var)
    pd.testing.assert_frame_equal(result.var, one.var)  # var, varm, uns: the first input's
    np.testing.assert_array_equal(result.varm["loadings"], one.varm["loadings"])
    assert result.uns["title"] == "synthetic"


# --- genes --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def other_genes(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two atlases: the second has 45 of the first's 60 genes (reordered) plus 5 of its own."""
    tmp = tmp_path_factory.mktemp("genes")
    a = make_atlas_h5ad(tmp / "a.h5ad", n_cells=400, seed=0, **SMALL)
    b_full = ad.read_h5ad(make_atlas_h5ad(tmp / "full.h5ad", n_cells=300, seed=1, **SMALL))
    rng = np.random.default_rng(0)
    keep = rng.permutation(60)[:50]
    b = b_full[:, keep].copy()
    b.var_names = [*b.var_names[:45], *(f"new_{i}" for i in range(5))]
    b.var["score"] = np.arange(50.0)
    return [a, str(write_input(b, tmp / "b.v3.zarr"))]


def test_inner_join(other_genes: list[str], tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # obs_names collide
        out = convert(other_genes, tmp_path / "inner.zarr", join="inner", **TINY)
    result = ad.read_zarr(out)
    ref = concat_ref(other_genes, join="inner", index_unique="-")
    assert result.n_vars == 45
    pd.testing.assert_index_equal(result.var_names, ref.var_names)  # the first input's order
    assert_x_equal(result.X, ref.X)
    np.testing.assert_array_equal(result.obs["n_counts"], ref.obs["n_counts"])


def test_inner_join_dense(tmp_path: Path) -> None:
    a = make_atlas_h5ad(tmp_path / "a.h5ad", n_cells=200, dense=True, seed=0, **SMALL)
    b = ad.read_h5ad(make_atlas_h5ad(tmp_path / "b.h5ad", n_cells=100, dense=True, seed=1, **SMALL))
    b = write_input(b[:, ::-2].copy(), tmp_path / "b2.h5ad")  # every other gene, reversed
    with pytest.warns(UserWarning, match="obs_names collide"):
        out = convert([a, b], tmp_path / "o.zarr", join="inner", source_key=None, **TINY)
    result = ad.read_zarr(out)
    ref = concat_ref([a, str(b)], join="inner", index_unique="-")
    assert isinstance(result.X, np.ndarray)
    np.testing.assert_array_equal(result.X, ref.X)
    assert list(result.var_names) == list(ref.var_names)
    assert SOURCE_KEY not in result.obs


def test_gene_mismatch_error(other_genes: list[str], tmp_path: Path) -> None:
    a, b = other_genes
    with pytest.raises(InvalidDataError) as info:
        convert([a, b], tmp_path / "o.zarr")
    text = str(info.value)
    assert a in text
    assert b in text
    assert "15 only in" in text  # genes of a missing from b
    assert "'new_0'" in text  # genes only in b are listed
    assert "join='inner'" in text
    assert "45 genes in every input" in text
    assert not (tmp_path / "o.zarr").exists()
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_same_genes_in_another_order(tmp_path: Path) -> None:
    a = make_atlas_h5ad(tmp_path / "a.h5ad", n_cells=50, seed=0, **SMALL)
    b = ad.read_h5ad(make_atlas_h5ad(tmp_path / "b.h5ad", n_cells=50, seed=1, **SMALL))
    b = write_input(b[:, ::-1].copy(), tmp_path / "b.h5ad")
    with pytest.raises(InvalidDataError, match=r"same 60 genes .* in another order"):
        convert([a, b], tmp_path / "o.zarr")
    with pytest.warns(UserWarning, match="obs_names collide"):
        out = convert([a, b], tmp_path / "o.zarr", join="inner")
    result = ad.read_zarr(out)
    assert list(result.var_names) == [f"gene_{i}" for i in range(60)]
    assert_x_equal(result.X, concat_ref([a, str(b)], join="inner", index_unique="-").X)


# --- shuffle ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A generated CSR .h5ad and a Zarr store with a CSR and a dense layer and obsm."""
    tmp = tmp_path_factory.mktemp("two")
    a = make_atlas_h5ad(tmp / "a.h5ad", n_cells=600, n_genes=40, nnz_per_cell=8, seed=0)
    b = synthetic(n_obs=250, n_vars=40, seed=3)
    b.var_names = ad.read_h5ad(a).var_names
    b.obs_names = [f"b_{i}" for i in range(250)]
    b.raw = None
    for k in ("counts", "dense"):
        del b.layers[k]
    del b.obsp["distances"]
    return [a, str(write_input(b, tmp / "b.v3.zarr"))]


def test_shuffle_and_original_order(two_inputs: list[str], tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # obsm entries only in one input
        plain = ad.read_zarr(convert(two_inputs, tmp_path / "plain.zarr", **TINY))
        path = convert(two_inputs, tmp_path / "shuffled.zarr", shuffle=True, seed=7, **TINY)
        again = convert(two_inputs, tmp_path / "again.zarr", shuffle=True, seed=7)
    shuffled = ad.read_zarr(path)
    position = shuffled.obs[POSITION_KEY].to_numpy()
    assert position.dtype == np.int64
    assert sorted(position) == list(range(850))
    assert not np.array_equal(position, np.arange(850))
    assert not (position[:600] < 600).all()  # the inputs' cells are mixed
    order = original_order(path)
    np.testing.assert_array_equal(order, np.argsort(position))
    back = shuffled[order]
    assert_x_equal(back.X, plain.X)
    pd.testing.assert_frame_equal(back.obs.drop(columns=POSITION_KEY), plain.obs)
    np.testing.assert_array_equal(back.obs[POSITION_KEY], np.arange(850))
    # The same seed gives the same order (whatever the shard and block sizes).
    np.testing.assert_array_equal(ad.read_zarr(again).obs[POSITION_KEY], position)
    np.testing.assert_array_equal(original_order(tmp_path / "plain.zarr"), np.arange(850))


def test_shuffle_single_input_dense_layers(tmp_path: Path) -> None:
    adata = synthetic(n_obs=300, n_vars=30, seed=4)
    adata.X = adata.X.toarray()
    src = write_input(adata, tmp_path / "in.h5ad")
    with pytest.warns(UserWarning, match=r"obsp\['distances'\] is not converted"):
        out = convert(src, tmp_path / "o.zarr", shuffle=True, seed=1, **TINY)
    result = ad.read_zarr(out)
    order = original_order(out)
    back = result[order].copy()
    np.testing.assert_array_equal(back.X, adata.X)
    for key in ("counts", "dense"):
        assert_matrix_equal(back.layers[key], adata.layers[key], key)
    np.testing.assert_array_equal(back.obsm["X_pca"], adata.obsm["X_pca"])
    pd.testing.assert_frame_equal(back.obsm["meta"], adata.obsm["meta"])
    assert_matrix_equal(back.raw.X, adata.raw.X, "raw.X")
    assert list(back.obs_names) == list(adata.obs_names)
    assert SOURCE_KEY not in result.obs  # one input: no source column


def test_original_order_rejects_a_broken_position_column(tmp_path: Path) -> None:
    adata = synthetic(n_obs=20)
    adata.obs[POSITION_KEY] = np.zeros(20, dtype=np.int64)
    path = write_input(adata, tmp_path / "bad.v3.zarr")
    with pytest.raises(InvalidDataError, match="not a permutation"):
        original_order(path)


# --- schedulers ---------------------------------------------------------------------------------
def store_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("shuffle", [False, True])
def test_distributed_equals_threaded(
    two_inputs: list[str], tmp_path: Path, distributed_client: object, shuffle: bool
) -> None:
    kwargs = {"shuffle": shuffle, "seed": 3, **TINY}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with dask.config.set(scheduler="threads"):
            threaded = convert(two_inputs, tmp_path / "threads.zarr", **kwargs)
        with get_task_stream(distributed_client) as stream:
            on_cluster = convert(two_inputs, tmp_path / "cluster.zarr", **kwargs)
    ran = {t["key"].split("-")[1] for t in stream.data}  # the tasks ran on the workers
    assert ran >= ({"scatter", "gather"} if shuffle else {"copy_csr_shard", "count_into"})
    a, b = store_files(Path(threaded)), store_files(Path(on_cluster))
    assert sorted(a) == sorted(b)
    assert len([k for k in a if "/c/" in k]) > 10  # many shards, written by many tasks
    for name in a:
        assert a[name] == b[name], name  # byte-identical: same layout, shards and metadata


def test_synchronous_scheduler_and_progress(
    two_inputs: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings(), dask.config.set(scheduler="synchronous"):
        warnings.simplefilter("ignore", UserWarning)
        out = atlasloader.convert(two_inputs, tmp_path / "o.zarr", shuffle=True, progress=True)
    err = capsys.readouterr().err
    assert "adata.X: counting values per row" in err
    assert "adata.X: shuffling rows" in err
    assert ad.read_zarr(out).n_obs == 850
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        convert(two_inputs, tmp_path / "q.zarr", join="inner")
    assert capsys.readouterr().err == ""  # quiet by default


# --- bad inputs ---------------------------------------------------------------------------------
def test_bad_input_lists(two_inputs: list[str], tmp_path: Path) -> None:
    a, b = two_inputs
    dst = tmp_path / "o.zarr"
    with pytest.raises(StoreError, match=r"missing\.h5ad.*does not exist"):
        convert([a, tmp_path / "missing.h5ad"], dst)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(NotAnnDataStoreError, match=r"notes\.txt.*\.h5ad.*Zarr"):
        convert([a, text], dst)
    with pytest.raises(InvalidArgumentError, match="src is empty"):
        convert([], dst)
    with pytest.raises(InvalidArgumentError, match="twice"):
        convert([a, a], dst)
    with pytest.raises(InvalidTypeError, match="paths"):
        convert([a, 3], dst)  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="join must be one of"):
        convert([a, b], dst, join="outer")
    with pytest.raises(InvalidArgumentError, match="seed must be"):
        convert([a, b], dst, seed=-1)
    with pytest.raises(InvalidTypeError, match="shuffle must be"):
        convert([a, b], dst, shuffle="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="source_key"):
        convert([a, b], dst, source_key=POSITION_KEY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_existing_columns_are_never_overwritten(two_inputs: list[str], tmp_path: Path) -> None:
    a, _ = two_inputs
    adata = synthetic(n_obs=30, n_vars=40)
    adata.var_names = ad.read_h5ad(a).var_names
    adata.obs[SOURCE_KEY] = "mine"
    adata.obs[POSITION_KEY] = np.arange(30)
    b = write_input(adata, tmp_path / "b.h5ad")
    with pytest.raises(InvalidArgumentError, match=r"obs\['source_file'\] already exists.*b\.h5ad"):
        convert([a, b], tmp_path / "o.zarr")
    with pytest.raises(InvalidArgumentError, match=r"obs\['original_position'\] already exists"):
        convert(b, tmp_path / "o.zarr", shuffle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = convert([a, b], tmp_path / "o.zarr", source_key="input")
    obs = ad.read_zarr(out).obs
    assert as_objects(obs[SOURCE_KEY])[-30:] == ["mine"] * 30
    assert list(obs["input"].cat.categories) == [a, str(b)]


def test_obs_columns_of_conflicting_types(two_inputs: list[str], tmp_path: Path) -> None:
    a, _ = two_inputs
    adata = ad.read_h5ad(a)[:20].copy()
    adata.obs["n_counts"] = "many"  # numbers in a, strings here
    b = write_input(adata, tmp_path / "b.h5ad")
    with (
        pytest.warns(UserWarning, match="obs_names collide"),
        pytest.raises(InvalidDataError, match=r"obs\['n_counts'\].*float.*a\.h5ad.*b\.h5ad"),
    ):
        convert([a, b], tmp_path / "o.zarr")
    assert not (tmp_path / "o.zarr").exists()


# --- interruption -------------------------------------------------------------------------------
SLOW = """
import sys, time
import atlasloader.conversion.shards as shards
original = shards.ShardWriter._store

def store(self, shard, payload):
    original(self, shard, payload)
    time.sleep(0.05)  # slow enough to be killed mid-way

shards.ShardWriter._store = store
from atlasloader.conversion.convert import convert
convert(sys.argv[1:-1], sys.argv[-1], shuffle=True, shard_rows=32, block_rows=100)
"""


def test_killed_conversion_reruns_clean(two_inputs: list[str], tmp_path: Path) -> None:
    dst = tmp_path / "out.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SLOW), *two_inputs, str(dst)],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("out.zarr.partial-*/X/data/c/*")):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the conversion wrote no shard"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no finally
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not dst.exists()
    (partial,) = tmp_path.glob("out.zarr.partial-*")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zarr: __shuffle__ is not Zarr
        with pytest.raises(NotAnnDataStoreError):
            atlasloader.read_lazy(partial)
        convert(two_inputs, dst, shuffle=True)
        ref = convert(two_inputs, tmp_path / "ref.zarr", shuffle=True)
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []  # removed
    assert store_files(dst) == store_files(Path(ref))


# --- index maths --------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 20), min_size=1, max_size=6),
    data=st.data(),
)
def test_pieces_of(sizes: list[int], data: st.DataObject) -> None:
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    total = int(offsets[-1])
    start = data.draw(st.integers(0, total))
    stop = data.draw(st.integers(start, total))
    pieces = pieces_of(offsets, start, stop)
    rows = [int(offsets[k]) + r for k, a, b in pieces for r in range(a, b)]
    assert rows == list(range(start, stop))
    assert all(0 <= a < b <= sizes[k] for k, a, b in pieces)


@settings(max_examples=50, deadline=None)
@given(
    counts=st.lists(st.integers(0, 5), min_size=1, max_size=30),
    data=st.data(),
)
def test_take_ranges(counts: list[int], data: st.DataObject) -> None:
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = np.array(
        data.draw(st.lists(st.integers(0, len(counts) - 1), max_size=40)), dtype=np.int64
    )
    expected = [v for r in rows for v in range(ptr[r], ptr[r + 1])]
    assert take_ranges(ptr, rows).tolist() == expected
