"""Reading stores from an S3-compatible server (moto on loopback), through a faulty proxy too.

The remote path of the chunk reader (concurrent ranged GETs, shard indices cached, near inner
chunks coalesced) must return exactly what local reads of the same store return, survive
transient faults (5xx, stalls), fail fast and clearly on permanent ones (403), and name the
object when one is damaged.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pytest
import zarr

import atlasloader
from atlasloader import AnnDataLoader, AnnDataManager, read_lazy
from atlasloader.data import make_atlas_h5ad
from atlasloader.errors import CorruptChunkError, RemoteStoreError, StoreError
from atlasloader.fields import CategoricalObsField, LayerField
from atlasloader.reading.chunks import ChunkReader

pytestmark = pytest.mark.s3
pytest.importorskip("moto.server", reason="moto[server] is not installed")

from atlasloader.testing.s3 import FaultProxy, S3Server  # noqa: E402


@pytest.fixture(scope="module")
def stores(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A converted sparse store (Zarr v3, sharded) and a dense one written by anndata (Zarr v2,
    one object per chunk), local and in the bucket."""
    d = tmp_path_factory.mktemp("remote")
    make_atlas_h5ad(d / "a.h5ad", n_cells=6000, n_genes=300, nnz_per_cell=40, seed=1)
    atlasloader.convert(str(d / "a.h5ad"), str(d / "sparse.zarr"))
    dense = ad.read_h5ad(d / "a.h5ad")[:1500].to_memory()
    dense.X = np.asarray(dense.X.todense(), dtype=np.float32)
    dense.write_zarr(d / "dense.zarr", chunks=(64, 300))  # whole rows per chunk, unsharded
    # Uncompressed, one object per chunk, rows 128:256 all zeros (never written: the fill).
    x = np.asarray(dense.X[:1000], dtype=np.float32).copy()
    x[128:256] = 0
    raw = zarr.create_array(
        str(d / "raw.zarr"), shape=x.shape, dtype=x.dtype, chunks=(64, 300), compressors=None
    )
    raw[:] = x
    fs = s3.filesystem()
    for name in ("sparse", "dense", "raw"):
        fs.put(str(d / f"{name}.zarr"), f"{s3.bucket}/{name}.zarr", recursive=True)
    return {"dir": d, "fs": fs}


def random_ranges(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo = rng.integers(0, n, k)
    hi = np.minimum(n, lo + rng.integers(0, 200, k))
    return np.stack([lo, hi], axis=1)


def reader_pair(s3: S3Server, stores: dict[str, Any], store: str, array: str, **opts: Any):
    url, path = f"s3://{s3.bucket}/{store}.zarr", str(stores["dir"] / f"{store}.zarr")
    options = s3.storage_options(**opts)
    if not array:  # the store is an array
        remote = zarr.open_array(url, mode="r", storage_options=options)
        return ChunkReader(remote), ChunkReader(zarr.open_array(path, mode="r"))
    remote_group = zarr.open_group(url, mode="r", storage_options=options)
    local = zarr.open_group(path, mode="r")
    return ChunkReader(remote_group[array]), ChunkReader(local[array])


@pytest.mark.parametrize(
    ("store", "array"),
    [
        ("sparse", "X/data"),
        ("sparse", "X/indices"),
        ("sparse", "X/indptr"),  # uncompressed, sharded: only the rows asked for are fetched
        ("dense", "X"),
        ("raw", ""),  # uncompressed, one object per chunk, some never written
    ],
)
def test_remote_reads_equal_local_reads(
    s3: S3Server, stores: dict[str, Any], store: str, array: str
) -> None:
    remote, local = reader_pair(s3, stores, store, array)
    assert remote.fast, remote.fallback_reason
    ranges = random_ranges(remote.shape[0], 300, seed=len(array))
    np.testing.assert_array_equal(remote.read_many(ranges), local.read_many(ranges))
    # Twice: the second read uses the cached shard indices.
    np.testing.assert_array_equal(remote.read_many(ranges[::-1]), local.read_many(ranges[::-1]))
    assert np.array_equal(remote.read(0, remote.shape[0]), np.asarray(local.array[:]))


def manager_for(adata: Any) -> AnnDataManager:
    manager = AnnDataManager(
        fields=[LayerField("X", None, is_count_data=True), CategoricalObsField("batch", "batch")]
    )
    manager.register_fields(adata)
    return manager


@pytest.mark.parametrize("sparse", [False, True])
def test_loader_from_s3_yields_the_local_batches(
    s3: S3Server, stores: dict[str, Any], sparse: bool
) -> None:
    local = manager_for(read_lazy(stores["dir"] / "sparse.zarr"))
    url = f"s3://{s3.bucket}/sparse.zarr"
    remote = manager_for(read_lazy(url, mode="r+", storage_options=s3.storage_options()))
    kw = dict(batch_size=256, shuffle=True, seed=3, sparse=sparse)
    for a, b in zip(AnnDataLoader(local, **kw), AnnDataLoader(remote, **kw), strict=True):
        xa, xb = (a["X"].to_dense(), b["X"].to_dense()) if sparse else (a["X"], b["X"])
        assert np.array_equal(xa.numpy(), xb.numpy())
        assert np.array_equal(a["batch"].numpy(), b["batch"].numpy())


class EveryNth:
    """Fault rule: the n-th, 2n-th... ranged GET of a chunk object gets ``fault``."""

    def __init__(self, n: int, fault: tuple[str, float], limit: int | None = None) -> None:
        self.n, self.fault, self.limit = n, fault, limit
        self.seen = 0
        self.hits = 0
        self._lock = threading.Lock()

    def __call__(self, method: str, path: str, headers: dict[str, str]) -> Any:
        name = path.rsplit("/", 1)[-1]
        if method != "GET" or "/X/" not in path or name in (".zarray", ".zattrs", "zarr.json"):
            return None  # only chunk objects of X
        with self._lock:
            self.seen += 1
            if self.seen % self.n or (self.limit is not None and self.hits >= self.limit):
                return None
            self.hits += 1
            return self.fault


def test_transient_5xx_are_retried(
    s3: S3Server, stores: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATLASLOADER_REMOTE_RETRIES", "6")
    rule = EveryNth(2, ("status", 503))
    with FaultProxy(s3.endpoint, rule=rule) as proxy:
        # botocore's own retries off, so that ours are the ones exercised.
        opts = s3.storage_options(proxy.endpoint, retries={"max_attempts": 1})
        remote = zarr.open_group(f"s3://{s3.bucket}/sparse.zarr", mode="r", storage_options=opts)
        reader = ChunkReader(remote["X/data"])
        local = ChunkReader(zarr.open_group(str(stores["dir"] / "sparse.zarr"))["X/data"])
        ranges = random_ranges(reader.shape[0], 400, seed=7)
        np.testing.assert_array_equal(reader.read_many(ranges), local.read_many(ranges))
    assert rule.hits >= 1
    assert proxy.faults == rule.hits


def test_a_stalled_request_times_out_and_is_retried(
    s3: S3Server, stores: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATLASLOADER_REMOTE_TIMEOUT", "1")
    rule = EveryNth(1, ("stall", 60.0), limit=1)  # the first chunk GET never answers
    with FaultProxy(s3.endpoint, rule=rule) as proxy:
        opts = s3.storage_options(proxy.endpoint, retries={"max_attempts": 1})
        remote = zarr.open_group(f"s3://{s3.bucket}/dense.zarr", mode="r", storage_options=opts)
        reader = ChunkReader(remote["X"])
        local = ChunkReader(zarr.open_group(str(stores["dir"] / "dense.zarr"))["X"])
        ranges = random_ranges(reader.shape[0], 50, seed=8)
        np.testing.assert_array_equal(reader.read_many(ranges), local.read_many(ranges))
    assert rule.hits == 1


def test_access_denied_names_the_object_at_once(
    s3: S3Server, stores: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = EveryNth(1, ("status", 403))
    with FaultProxy(s3.endpoint, rule=rule) as proxy:
        opts = s3.storage_options(proxy.endpoint, retries={"max_attempts": 1})
        remote = zarr.open_group(f"s3://{s3.bucket}/sparse.zarr", mode="r", storage_options=opts)
        reader = ChunkReader(remote["X/indices"])
        with pytest.raises(
            RemoteStoreError,
            match=r"s3://atlas/sparse.zarr/X/indices/c/0.*credentials and permissions",
        ):
            reader.read(0, 10)
    assert rule.hits == 1  # not retried


def test_persistent_errors_exhaust_the_retries(
    s3: S3Server, stores: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATLASLOADER_REMOTE_RETRIES", "2")
    rule = EveryNth(1, ("status", 500))
    with FaultProxy(s3.endpoint, rule=rule) as proxy:
        opts = s3.storage_options(proxy.endpoint, retries={"max_attempts": 1})
        remote = zarr.open_group(f"s3://{s3.bucket}/dense.zarr", mode="r", storage_options=opts)
        reader = ChunkReader(remote["X"])
        with pytest.raises(RemoteStoreError, match=r"X/0\.0.*after 3 attempts"):
            reader.read(0, 10)


def put_damaged_copy(s3: S3Server, stores: dict[str, Any], name: str, damage: Any) -> str:
    """The sparse store uploaded as ``name`` with its first X/data shard damaged locally."""
    fs = stores["fs"]
    url = f"{s3.bucket}/{name}.zarr"
    fs.put(str(stores["dir"] / "sparse.zarr"), url, recursive=True)
    raw = fs.cat_file(f"{url}/X/data/c/0")
    fs.pipe_file(f"{url}/X/data/c/0", damage(raw))
    return f"s3://{url}"


def test_truncated_shard_object_names_the_object(s3: S3Server, stores: dict[str, Any]) -> None:
    # Cut in the middle, keeping a valid-looking index: the index points past the object's end.
    def truncate(raw: bytes) -> bytes:
        group = zarr.open_group(str(stores["dir"] / "sparse.zarr"), mode="r")
        n_index = 16 * (group["X/data"].shards[0] // group["X/data"].chunks[0]) + 4
        return raw[: len(raw) // 2] + raw[-n_index:]

    url = put_damaged_copy(s3, stores, "truncated", truncate)
    g = zarr.open_group(url, mode="r", storage_options=s3.storage_options())
    reader = ChunkReader(g["X/data"])
    with pytest.raises(
        CorruptChunkError,
        match=r"from object s3://atlas/truncated.zarr/X/data/c/0: object truncated",
    ):
        reader.read(0, reader.shape[0])


def test_shard_index_past_the_end_is_a_corrupt_chunk(s3: S3Server, stores: dict[str, Any]) -> None:
    def bad_index(raw: bytes) -> bytes:
        group = zarr.open_group(str(stores["dir"] / "sparse.zarr"), mode="r")
        n = group["X/data"].shards[0] // group["X/data"].chunks[0]
        body, index = raw[: -(16 * n + 4)], np.frombuffer(raw[-(16 * n + 4) : -4], "<u8").copy()
        index[0] = len(raw) * 4  # first chunk's offset far past the end
        import numcodecs.checksum32

        idx = numcodecs.checksum32.CRC32C().encode(index.tobytes())
        return body + bytes(idx)

    url = put_damaged_copy(s3, stores, "badindex", bad_index)
    g = zarr.open_group(url, mode="r", storage_options=s3.storage_options())
    with pytest.raises(CorruptChunkError, match=r"object truncated.*points past the object's end"):
        ChunkReader(g["X/data"]).read(0, 100)


def test_missing_bucket_and_missing_credentials_are_named(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(StoreError, match="no-such-bucket"):
        read_lazy("s3://no-such-bucket/a.zarr", storage_options=s3.storage_options())
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    opts = {"client_kwargs": {"endpoint_url": s3.endpoint}}
    with pytest.raises(StoreError, match=r"s3://atlas/sparse.zarr.*credentials"):
        read_lazy(f"s3://{s3.bucket}/sparse.zarr", storage_options=opts)


def test_worker_processes_read_from_s3(s3: S3Server, stores: dict[str, Any]) -> None:
    local = manager_for(read_lazy(stores["dir"] / "sparse.zarr"))
    url = f"s3://{s3.bucket}/sparse.zarr"
    remote = manager_for(read_lazy(url, mode="r+", storage_options=s3.storage_options()))
    kw = dict(batch_size=500, shuffle=True, seed=2)
    expected = sorted(b["X"].sum().item() for b in AnnDataLoader(local, num_workers=2, **kw))
    got = sorted(b["X"].sum().item() for b in AnnDataLoader(remote, num_workers=2, **kw))
    assert got == expected
