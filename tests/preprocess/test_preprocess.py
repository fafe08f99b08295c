"""``preprocess``: persisted columns, reuse, the user's columns, crashes, fields, the loader and
a real ``dask.distributed`` cluster. Every store is a real Zarr store on disk."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import anndata as ad
import dask
import numpy as np
import pandas as pd
import pytest
import zarr

import atlasloader
from atlasloader import AnnDataLoader, AnnDataManager
from atlasloader.errors import (
    InvalidArgumentError,
    InvalidDataError,
    InvalidTypeError,
    ReadOnlyStoreError,
    ViewError,
)
from atlasloader.fields import LayerField, NumericalObsField
from atlasloader.preprocess import gene_stats, highly_variable_genes, library_size, preprocess
from atlasloader.preprocess.persist import read_record
from atlasloader.store.elements import write_elem
from atlasloader.store.records import TOKEN_ATTR

from .conftest import as_format, counts, write

OBS = ["total_counts", "n_genes_by_counts", "size_factor"]
GENES = ["mean_counts", "var_counts", "n_cells_by_counts"]
HVG = ["highly_variable", "highly_variable_rank", "variances_norm", "highly_variable_nbatches"]
ALL = ["library_size", "gene_stats", "highly_variable_genes"]

pytestmark = pytest.mark.filterwarnings(
    "ignore:zarr v3 autosharding:UserWarning", "ignore:Consolidated metadata:UserWarning"
)


def store(tmp_path: Path, name: str = "s", fmt: str = "csr", zarr_format: int = 3, **kw: Any):
    ref = as_format(counts(**kw), fmt)
    return write(ref, tmp_path / f"{name}.zarr", zarr_format=zarr_format), ref


def expected(ref: ad.AnnData, n_top: int, batch_key: str | None) -> tuple[Any, Any]:
    obs = library_size(ref)
    var = gene_stats(ref).join(highly_variable_genes(ref, n_top, batch_key=batch_key))
    return obs, var


def assert_frames(read: ad.AnnData, obs: pd.DataFrame, var: pd.DataFrame) -> None:
    for col in obs.columns:
        np.testing.assert_array_equal(read.obs[col].to_numpy(), obs[col].to_numpy(), err_msg=col)
        assert read.obs[col].dtype == obs[col].dtype, col
    for col in var.columns:
        np.testing.assert_array_equal(read.var[col].to_numpy(), var[col].to_numpy(), err_msg=col)
        assert read.var[col].dtype == var[col].dtype, col


# --- what is persisted --------------------------------------------------------------------------
@pytest.mark.usefixtures("small_tasks")
@pytest.mark.parametrize(("fmt", "zarr_format"), [("csr", 3), ("dense", 3), ("csr", 2)])
def test_columns_are_persisted_and_anndata_reads_them(
    tmp_path: Path, fmt: str, zarr_format: int
) -> None:
    path, ref = store(tmp_path, fmt=fmt, zarr_format=zarr_format)
    out = preprocess(path, n_top_genes=20, batch_key="batch")
    assert out["computed"] == ALL
    assert out["reused"] == []
    assert out["passes_over_x"] in (1, 2)
    assert out["obs_columns"] == OBS
    assert out["var_columns"] == GENES + HVG
    assert out["summary"]["n_highly_variable"] == 20
    assert out["summary"]["median_total_counts"] == np.median(np.asarray(ref.X.sum(1)))
    read = ad.read_zarr(path)
    assert list(read.obs.columns) == ["batch", *OBS]
    assert list(read.var.columns) == GENES + HVG
    assert_frames(read, *expected(ref, 20, "batch"))
    root = zarr.open_group(str(path), mode="r")
    record = read_record(root)
    assert set(record["passes"]) == set(ALL)
    for loc, token in record["columns"].items():
        assert root[loc].attrs[TOKEN_ATTR] == token  # written by us, and recorded
        assert root[loc].attrs["atlasloader-preprocess"] in ALL
    assert "__atlasloader_staging__" not in root["obs"]


def test_only_what_is_asked(tmp_path: Path) -> None:
    path, _ = store(tmp_path)
    out = preprocess(path, gene_stats=False)
    assert out["computed"] == ["library_size"]
    assert out["var_columns"] == []
    read = ad.read_zarr(path)
    assert list(read.obs.columns) == ["batch", *OBS]
    assert list(read.var.columns) == []
    out = preprocess(path, size_factors=False, n_top_genes=10)  # HVG without batches
    assert out["computed"] == ["gene_stats", "highly_variable_genes"]
    assert list(ad.read_zarr(path).var.columns) == GENES + HVG[:3]


def test_a_layer(tmp_path: Path) -> None:
    ref = counts(n_obs=200, n_vars=40)
    ref.layers["counts"] = ref.X.copy()
    ref.X = np.log1p(ref.X)
    path = write(ref, tmp_path / "l.zarr")
    preprocess(path, n_top_genes=10, layer="counts")
    read = ad.read_zarr(path)
    np.testing.assert_allclose(read.obs["total_counts"], np.asarray(ref.layers["counts"]).sum(1))
    on_counts = highly_variable_genes(ref, 10, layer="counts")
    np.testing.assert_array_equal(read.var["highly_variable"], on_counts["highly_variable"])


# --- reuse ----------------------------------------------------------------------------------------
def test_a_second_run_reuses_without_reading_x(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = store(tmp_path)
    first = preprocess(path, n_top_genes=20, batch_key="batch")
    before = ad.read_zarr(path)

    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("X was read again")

    monkeypatch.setattr("atlasloader.preprocess.pipeline.scan", no_scan)
    again = preprocess(atlasloader.read_lazy(path), n_top_genes=20, batch_key="batch")
    assert again["reused"] == ALL
    assert again["computed"] == []
    assert again["passes_over_x"] == 0
    assert again["summary"] == first["summary"]
    assert_frames(ad.read_zarr(path), before.obs, before.var)
    monkeypatch.undo()
    # New HVG parameters: only that pass runs again.
    changed = preprocess(path, n_top_genes=30, batch_key="batch")
    assert changed["computed"] == ["highly_variable_genes"]
    assert changed["reused"] == ["library_size", "gene_stats"]
    assert ad.read_zarr(path).var["highly_variable"].sum() == 30


def test_changed_data_is_recomputed(tmp_path: Path) -> None:
    path, ref = store(tmp_path)
    preprocess(path)
    data = zarr.open_group(str(path), mode="r+")["X/data"]
    data[:] = np.asarray(data[:]) * 2  # every chunk changes, sampled ones included
    out = preprocess(path)
    assert out["computed"] == ["library_size", "gene_stats"]
    np.testing.assert_allclose(ad.read_zarr(path).obs["total_counts"], 2 * ref.X.toarray().sum(1))


# --- the user's columns ---------------------------------------------------------------------------
def test_user_columns_are_never_replaced(tmp_path: Path) -> None:
    ref = counts(n_obs=200, n_vars=40)
    ref.obs["size_factor"] = np.arange(200.0)
    ref.var["highly_variable"] = np.zeros(40, dtype=bool)
    path = write(ref, tmp_path / "u.zarr")
    with pytest.raises(InvalidDataError) as info:
        preprocess(path, n_top_genes=5)
    msg = str(info.value)
    assert "adata.obs['size_factor']" in msg
    assert "adata.var['highly_variable']" in msg
    assert "overwrite=True" in msg
    read = ad.read_zarr(path)  # nothing was written, not even the other columns
    assert list(read.obs.columns) == ["batch", "size_factor"]
    assert list(read.var.columns) == ["highly_variable"]
    np.testing.assert_array_equal(read.obs["size_factor"], np.arange(200.0))
    out = preprocess(path, n_top_genes=5, overwrite=True)
    assert out["computed"] == ALL
    read = ad.read_zarr(path)
    assert read.obs["size_factor"].dtype == np.float32
    assert read.var["highly_variable"].sum() == 5
    assert preprocess(path, n_top_genes=5)["reused"] == ALL  # ours now: no overwrite needed


def test_a_column_rewritten_by_the_user_becomes_theirs(tmp_path: Path) -> None:
    path, _ = store(tmp_path)
    preprocess(path)
    root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        write_elem(root["obs"], "size_factor", np.ones(600))  # anndata's writer: no token
    with pytest.raises(InvalidDataError, match=r"adata\.obs\['size_factor'\] already exists"):
        preprocess(path)
    assert preprocess(path, overwrite=True)["computed"] == ["library_size"]


def test_in_memory_anndata(tmp_path: Path) -> None:
    ref = counts(n_obs=300, n_vars=50)
    adata = ref.copy()
    out = preprocess(adata, n_top_genes=10, batch_key="batch")
    assert out["computed"] == ALL
    obs, var = expected(ref, 10, "batch")
    assert_frames(adata, obs, var)
    assert sorted(adata.uns["atlasloader_preprocess"]["columns"]) == sorted(
        [f"obs/{c}" for c in OBS] + [f"var/{c}" for c in GENES + HVG]
    )
    assert preprocess(adata, n_top_genes=10, batch_key="batch")["computed"] == ALL  # ours
    user = ref.copy()
    user.obs["total_counts"] = 1.0
    with pytest.raises(InvalidDataError, match=r"adata\.obs\['total_counts'\]"):
        preprocess(user)
    np.testing.assert_array_equal(user.obs["total_counts"], 1.0)
    with pytest.raises(ViewError, match="copy"):
        preprocess(ref[:10])


def test_read_only_stores(tmp_path: Path) -> None:
    path, _ = store(tmp_path)
    with pytest.raises(ReadOnlyStoreError, match=r"read-only store .*mode='r\+'"):
        preprocess(atlasloader.read_lazy(path, mode="r"))
    preprocess(path)
    assert preprocess(atlasloader.read_lazy(path, mode="r"))["reused"] == ALL[:2]


def test_atlasloader_exports_the_package() -> None:
    code = (
        "import atlasloader; p = atlasloader.preprocess; import atlasloader.preprocess as q; "
        "assert p is q and p.__name__ == 'atlasloader.preprocess' and callable(q.preprocess)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_arguments() -> None:
    a = counts(n_obs=50, n_vars=10)
    with pytest.raises(InvalidArgumentError, match="batch_key='batch' is only used"):
        preprocess(a, batch_key="batch")
    with pytest.raises(InvalidArgumentError, match="nothing to compute"):
        preprocess(a, size_factors=False, gene_stats=False)
    with pytest.raises(InvalidArgumentError, match="n_top_genes"):
        preprocess(a, n_top_genes=0)
    with pytest.raises(InvalidTypeError, match="got list"):
        preprocess([a])


# --- crashes --------------------------------------------------------------------------------------
def test_an_interrupted_run_leaves_a_readable_store_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, ref = store(tmp_path)
    from atlasloader.preprocess import persist

    real = persist.publish_column
    calls = []

    def dying(*args: Any, **kwargs: Any) -> None:
        calls.append(args[2])
        if len(calls) == 5:  # library sizes (3 columns) published, then one gene statistic
            raise KeyboardInterrupt  # mid-way through the gene statistics
        real(*args, **kwargs)

    monkeypatch.setattr(persist, "publish_column", dying)
    with pytest.raises(KeyboardInterrupt):
        preprocess(path, n_top_genes=10)
    monkeypatch.undo()
    read = ad.read_zarr(path)  # opens, with whatever was complete
    assert read.shape == ref.shape
    out = preprocess(path, n_top_genes=10)  # the half-written columns are recognised as ours
    assert out["reused"] == ["library_size"]
    assert out["computed"] == ["gene_stats", "highly_variable_genes"]
    assert_frames(ad.read_zarr(path), *expected(ref, 10, None))
    # Dying while replacing our own columns (new data) leaves them ours as well.
    data = zarr.open_group(str(path), mode="r+")["X/data"]
    data[:] = np.asarray(data[:]) + 1
    calls.clear()
    monkeypatch.setattr(persist, "publish_column", dying)
    with pytest.raises(KeyboardInterrupt):
        preprocess(path, n_top_genes=10)
    monkeypatch.undo()
    assert preprocess(path, n_top_genes=10)["computed"] == ALL[1:]  # no overwrite needed
    changed = ref.copy()
    changed.X.data += 1
    assert_frames(ad.read_zarr(path), *expected(changed, 10, None))


# --- fields and the loader -----------------------------------------------------------------------
def test_size_factors_register_and_load(tmp_path: Path) -> None:
    path, ref = store(tmp_path)
    preprocess(path, n_top_genes=12)
    adata = atlasloader.read_lazy(path)
    manager = AnnDataManager(
        fields=[
            LayerField("X", None, is_count_data=True),
            NumericalObsField("size_factor", "size_factor"),
        ]
    )
    manager.register_fields(adata)
    factors = np.concatenate(
        [b["size_factor"].numpy().ravel() for b in AnnDataLoader(manager, batch_size=128)]
    )
    np.testing.assert_array_equal(factors, ad.read_zarr(path).obs["size_factor"].to_numpy())
    subset = AnnDataManager(fields=[LayerField("X", None, var_subset="highly_variable")])
    subset.register_fields(adata)
    assert subset.summary_stats["n_vars"] == 12
    first = next(iter(AnnDataLoader(subset, batch_size=600)))["X"].numpy()
    chosen = ad.read_zarr(path).var["highly_variable"].to_numpy()
    np.testing.assert_array_equal(first, ref.X.toarray()[:, chosen])


# --- schedulers -----------------------------------------------------------------------------------
@pytest.mark.usefixtures("small_tasks")
def test_a_distributed_cluster_gives_the_same(
    tmp_path: Path, distributed_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from distributed import get_task_stream

    path, _ = store(tmp_path, "threads", outliers=30)  # values above their clip: two passes
    shutil.copytree(path, tmp_path / "cluster.zarr")
    with dask.config.set(scheduler="threads"):
        threaded = preprocess(path, n_top_genes=20, batch_key="batch")
    with get_task_stream(distributed_client) as stream:
        on_cluster = preprocess(
            tmp_path / "cluster.zarr", n_top_genes=20, batch_key="batch", progress=True
        )
    assert "clipped variances" in capsys.readouterr().err  # progress from the futures
    ran = {t["key"].split("-")[0] for t in stream.data if isinstance(t["key"], str)}
    assert {"block_moments", "block_excess"} <= ran  # the passes ran on the workers
    assert threaded["passes_over_x"] == on_cluster["passes_over_x"] == 2
    assert threaded["summary"] == on_cluster["summary"]
    a, b = ad.read_zarr(path), ad.read_zarr(tmp_path / "cluster.zarr")
    assert_frames(b, a.obs[OBS], a.var[GENES + HVG])
    in_memory = ad.read_zarr(path)  # the same data, in memory, on the cluster
    preprocess(in_memory, n_top_genes=20, batch_key="batch", overwrite=True)
    assert_frames(in_memory, a.obs[OBS], a.var[GENES + HVG])


def test_progress_bars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = store(tmp_path, outliers=30)
    with dask.config.set(scheduler="synchronous"):
        preprocess(path, n_top_genes=10, progress=True)
    err = capsys.readouterr().err
    assert "statistics" in err
    assert "clipped variances" in err
