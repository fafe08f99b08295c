"""convert to S3, then preprocess, register, transfer and validate stores in the bucket.

The same guarantees as on local disk: an upload never leaves a URL that opens half-written (the
root metadata goes last), an existing store is refused unless ``overwrite``, and the passes
write their columns into the bucket where anndata reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pytest
import zarr

import atlasloader
from atlasloader import AnnDataManager, read_lazy
from atlasloader.data import make_atlas_h5ad
from atlasloader.errors import NotAnnDataStoreError, StoreError
from atlasloader.fields import CategoricalObsField, LayerField
from atlasloader.preprocess import preprocess
from atlasloader.validation.validate import validate_store

pytestmark = [pytest.mark.s3, pytest.mark.filterwarnings("ignore:obs_names collide")]
pytest.importorskip("moto.server", reason="moto[server] is not installed")

from atlasloader.testing.s3 import FaultProxy, S3Server  # noqa: E402


@pytest.fixture(scope="module")
def h5ads(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("ops")
    return [
        Path(make_atlas_h5ad(d / f"in{i}.h5ad", n_cells=2500, n_genes=200, nnz_per_cell=30, seed=i))
        for i in (0, 1)
    ]


def fields() -> list[Any]:
    return [LayerField("X", None, is_count_data=True), CategoricalObsField("batch", "batch")]


def test_convert_preprocess_register_validate_in_the_bucket(
    s3: S3Server, h5ads: list[Path], tmp_path: Path
) -> None:
    opts = s3.storage_options()
    url = f"s3://{s3.bucket}/ops.zarr"
    assert atlasloader.convert(h5ads, url, storage_options=opts) == url
    local = atlasloader.convert(h5ads, tmp_path / "local.zarr")
    remote = ad.read_zarr(zarr.storage.FsspecStore.from_url(url, storage_options=opts))
    expected = ad.read_zarr(local)
    assert remote.shape == expected.shape == (5000, 200)
    assert (remote.X != expected.X).nnz == 0
    assert list(remote.obs["source_file"]) == list(expected.obs["source_file"])

    # A second conversion to the same URL is refused before any work; overwrite replaces it.
    with pytest.raises(StoreError, match=r"already exists.*overwrite"):
        atlasloader.convert(h5ads[:1], url, storage_options=opts)
    atlasloader.convert(h5ads[:1], url, storage_options=opts, overwrite=True)
    assert read_lazy(url, storage_options=opts).n_obs == 2500
    atlasloader.convert(h5ads, url, storage_options=opts, overwrite=True)

    stats = preprocess(read_lazy(url, mode="r+", storage_options=opts), n_top_genes=50)
    assert stats is not None
    local_stats = preprocess(str(local), n_top_genes=50)
    assert local_stats is not None
    again = ad.read_zarr(zarr.storage.FsspecStore.from_url(url, storage_options=opts))
    np.testing.assert_allclose(again.obs["total_counts"], ad.read_zarr(local).obs["total_counts"])
    assert again.var["highly_variable"].sum() == 50

    ref = AnnDataManager(fields=fields())
    ref.register_fields(read_lazy(url, mode="r+", storage_options=opts))
    qurl = f"s3://{s3.bucket}/query.zarr"
    atlasloader.convert(h5ads[1], qurl, storage_options=opts)
    query = ref.transfer_fields(read_lazy(qurl, mode="r+", storage_options=opts))
    assert query.summary_stats.n_batch == ref.summary_stats.n_batch
    assert validate_store(url, storage_options=opts) == []

    # Per-cell arrays are compressed in the bucket (a loader's runs fetch few bytes), stored
    # uncompressed on local disk (read in place).
    bucket = zarr.open_group(zarr.storage.FsspecStore.from_url(url, storage_options=opts), mode="r")
    ours = zarr.open_group(str(local), mode="r")
    assert [c.cname.value for c in bucket["X/indptr"].compressors] == ["lz4"]
    assert ours["X/indptr"].compressors == ()
    codes = next(k for k in bucket["obs"].array_keys() if k.startswith("_scvi_"))
    assert [c.cname.value for c in bucket[f"obs/{codes}"].compressors] == ["lz4"]


def test_an_interrupted_upload_never_opens_and_a_rerun_starts_clean(
    s3: S3Server, h5ads: list[Path]
) -> None:
    """The root zarr.json goes last: kill the upload before it, and the URL is not a store."""
    url = f"s3://{s3.bucket}/cut.zarr"

    def refuse_root_metadata(method: str, path: str, headers: dict[str, str]) -> Any:
        return ("status", 403) if method == "PUT" and path.endswith("/cut.zarr/zarr.json") else None

    with FaultProxy(s3.endpoint, rule=refuse_root_metadata) as proxy:
        opts = s3.storage_options(proxy.endpoint, retries={"max_attempts": 1})
        with pytest.raises(StoreError, match=r"cut\.zarr"):
            atlasloader.convert(h5ads[0], url, storage_options=opts)
    fs = s3.filesystem()
    assert fs.find(f"{s3.bucket}/cut.zarr")  # the chunks and inner metadata are there...
    with pytest.raises(NotAnnDataStoreError):  # ...but the URL does not open as a store
        read_lazy(url, storage_options=s3.storage_options())
    atlasloader.convert(h5ads[0], url, storage_options=s3.storage_options())
    assert read_lazy(url, storage_options=s3.storage_options()).n_obs == 2500


def test_convert_from_a_store_in_the_bucket(
    s3: S3Server, h5ads: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{s3.bucket}/source.zarr"
    atlasloader.convert(h5ads[0], url, storage_options=s3.storage_options())
    # Remote inputs find the endpoint and credentials in the environment, as aws-cli does.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    back = ad.read_zarr(atlasloader.convert(url, tmp_path / "back.zarr"))
    direct = ad.read_zarr(atlasloader.convert(h5ads[0], tmp_path / "direct.zarr"))
    assert (back.X != direct.X).nnz == 0
    assert list(back.obs_names) == list(direct.obs_names)
