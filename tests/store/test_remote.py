"""Registering a store on an S3-compatible server (moto on loopback), including persisted reuse."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import anndata as ad
import numpy as np
import pytest

from atlasloader import AnnDataManager, read_lazy
from atlasloader.fields import CategoricalJointObsField, CategoricalObsField, LayerField

pytestmark = pytest.mark.s3

BUCKET = "atlas"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    pytest.importorskip("s3fs", reason="s3fs is not installed")
    from atlasloader.testing.s3 import S3Server

    with S3Server(bucket=BUCKET) as server:
        yield server.endpoint


@pytest.fixture
def storage_options(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return {"client_kwargs": {"endpoint_url": s3_endpoint}, "key": "x", "secret": "x"}


@pytest.fixture
def s3fs_(storage_options: dict[str, Any]) -> Any:
    import s3fs

    fs = s3fs.S3FileSystem(**storage_options, skip_instance_cache=True)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    return fs


def objects(fs: Any, url: str) -> dict[str, str]:
    """Every object under ``url`` with its ETag (changes whenever an object is rewritten)."""
    fs.invalidate_cache()
    return {k: v["ETag"] for k, v in fs.find(url, detail=True).items()}


def fields() -> list[Any]:
    return [
        LayerField("X", None, is_count_data=True),
        CategoricalObsField("batch", "batch"),
        CategoricalJointObsField("extra_categorical_covs", ["labels"]),
    ]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_register_store_on_s3(
    zarr_format: int,
    seed_adata: ad.AnnData,
    storage_options: dict[str, Any],
    s3fs_: Any,
    tmp_path: Any,
    render: Callable[..., str],
) -> None:
    import zarr

    url = f"s3://{BUCKET}/seed-v{zarr_format}.zarr"
    local = tmp_path / "seed.zarr"
    with warnings.catch_warnings(), ad.settings.override(zarr_write_format=zarr_format):
        warnings.simplefilter("ignore", UserWarning)
        seed_adata.write_zarr(local)
    s3fs_.put(str(local), url, recursive=True)
    assert s3fs_.exists(f"{url}/obs")

    adata = read_lazy(url, storage_options=storage_options)
    assert adata.shape == (400, 100)
    assert adata.writable
    manager = AnnDataManager(fields=fields())
    manager.register_fields(adata)
    assert manager.summary_stats == {
        "n_cells": 400,
        "n_vars": 100,
        "n_batch": 2,
        "n_extra_categorical_covs": 1,
    }
    assert list(manager.get_state_registry("batch").categorical_mapping) == ["batch_0", "batch_1"]

    # The encodings are in the bucket, readable by anndata, next to the untouched user columns.
    store = zarr.storage.FsspecStore.from_url(url, storage_options=storage_options)
    remote = ad.read_zarr(store)
    np.testing.assert_array_equal(remote.obs["_scvi_batch"], np.repeat([0, 1], 200))
    np.testing.assert_array_equal(
        np.asarray(remote.obsm["_scvi_extra_categorical_covs"])[:, 0],
        seed_adata.obs["labels"].cat.codes,
    )
    assert list(remote.obs["batch"]) == list(seed_adata.obs["batch"])
    assert not [k for k in objects(s3fs_, url) if "staging" in k]
    meta = zarr.open_group(store, mode="r", use_consolidated=False).attrs["atlasloader"]
    assert meta["encoding-type"] == "atlasloader-store"

    # Reopening reuses the persisted registration: not one object is rewritten.
    before = objects(s3fs_, url)
    again = AnnDataManager(fields=fields())
    again.register_fields(read_lazy(url, storage_options=storage_options))
    assert objects(s3fs_, url) == before
    assert again.adata_uuid == manager.adata_uuid
    assert render(again) == render(manager)

    # Read-only access with the persisted registration works too.
    ro = AnnDataManager(fields=fields())
    ro.register_fields(read_lazy(url, mode="r", storage_options=storage_options))
    assert ro.summary_stats == manager.summary_stats


def test_endpoint_from_environment(
    seed_adata: ad.AnnData,
    s3_endpoint: str,
    storage_options: dict[str, Any],
    s3fs_: Any,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"s3://{BUCKET}/env.zarr"
    local = tmp_path / "env.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        seed_adata.write_zarr(local)
    s3fs_.put(str(local), url, recursive=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    manager = AnnDataManager(fields=[CategoricalObsField("batch", "batch")])
    manager.register_fields(read_lazy(url))
    assert manager.summary_stats.n_batch == 2
