"""ChunkReader: direct chunk reads must equal numpy slicing of the source, on every layout."""

from __future__ import annotations

import os
import pickle
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, GzipCodec, ShardingCodec, TransposeCodec, ZstdCodec

from atlasloader.errors import CorruptChunkError, InvalidArgumentError
from atlasloader.reading.chunks import ChunkReader

LZ4 = BloscCodec(cname="lz4", clevel=3, shuffle="shuffle")
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _source(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    # Small values compress, so codecs do real work (and runs of zeros give missing chunks).
    return rng.integers(-50, 50, size=shape).astype(dtype)


def _write(path: Path | str, x: np.ndarray, **kw: Any) -> zarr.Array:
    kw.setdefault("fill_value", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr warns about v2 and about numcodecs in v3
        a = zarr.create_array(str(path), shape=x.shape, dtype=x.dtype, **kw)
        a[...] = x
    return a


def _expected(x: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    parts = [x[lo:hi] for lo, hi in ranges.tolist()]
    return np.concatenate(parts) if parts else x[:0]


def _ranges(n: int) -> st.SearchStrategy[np.ndarray]:
    pair = st.tuples(st.integers(0, n), st.integers(0, n)).map(lambda t: (min(t), max(t)))
    return st.lists(pair, max_size=12).map(lambda p: np.array(p, dtype=np.int64).reshape(-1, 2))


# name -> (shape, dtype, create_array keyword arguments); all must be read directly.
LAYOUTS: dict[str, tuple[tuple[int, ...], str, dict[str, Any]]] = {
    "v3-lz4-i32": ((1003,), "int32", {"chunks": (16,), "compressors": LZ4}),
    "v3-zstd-f32": ((1003,), "float32", {"chunks": (16,), "compressors": ZstdCodec()}),
    "v3-raw-i64": ((1003,), "int64", {"chunks": (16,), "compressors": None}),
    "v3-gzip-f32": ((500,), "float32", {"chunks": (32,), "compressors": GzipCodec()}),
    "v3-shard-lz4-f32": ((1003,), "float32", {"chunks": (16,), "shards": (128,)}),
    "v3-shard-zstd-i64": (
        (1003,),
        "int64",
        {"chunks": (8,), "shards": (64,), "compressors": ZstdCodec(checksum=True)},
    ),
    "v3-shard-raw-i32": ((1003,), "int32", {"chunks": (16,), "shards": (64,), "compressors": None}),
    "v3-shard-start-i32": (
        (1003,),
        "int32",
        {
            "chunks": (64,),
            "serializer": ShardingCodec(
                chunk_shape=(16,), codecs=[zarr.codecs.BytesCodec(), LZ4], index_location="start"
            ),
            "compressors": None,
        },
    ),
    "v3-lz4-crc32c-f32": (
        (300,),
        "float32",
        {"chunks": (16,), "compressors": [LZ4, zarr.codecs.Crc32cCodec()]},
    ),
    "v3-dot-keys-i32": (
        (300,),
        "int32",
        {"chunks": (16,), "chunk_key_encoding": {"name": "default", "separator": "."}},
    ),
    "v3-2d-lz4-f32": ((203, 7), "float32", {"chunks": (16, 7), "compressors": LZ4}),
    "v3-2d-shard-i32": ((203, 7), "int32", {"chunks": (16, 7), "shards": (64, 7)}),
    "v3-2d-padded-cols-f32": ((203, 7), "float32", {"chunks": (16, 8)}),
    "v3-2d-shard-raw-f32": (
        (203, 7),
        "float32",
        {"chunks": (16, 7), "shards": (64, 7), "compressors": None},
    ),
    "v3-2d-padded-raw-i32": ((203, 7), "int32", {"chunks": (16, 8), "compressors": None}),
    "v2-blosc-i32": (
        (1003,),
        "int32",
        {"chunks": (16,), "zarr_format": 2, "compressors": numcodecs.Blosc("lz4")},
    ),
    "v2-zstd-f32": (
        (1003,),
        "float32",
        {"chunks": (16,), "zarr_format": 2, "compressors": numcodecs.Zstd()},
    ),
    "v2-raw-i64": ((1003,), "int64", {"chunks": (16,), "zarr_format": 2, "compressors": None}),
    "v2-2d-blosc-f32": (
        (203, 5),
        "float32",
        {"chunks": (16, 5), "zarr_format": 2, "compressors": numcodecs.Blosc()},
    ),
    "v2-slash-keys-i32": (
        (203, 5),
        "int32",
        {
            "chunks": (16, 5),
            "zarr_format": 2,
            "chunk_key_encoding": {"name": "v2", "separator": "/"},
        },
    ),
}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, ChunkReader]]:
    root = tmp_path_factory.mktemp("layouts")
    out = {}
    for i, (name, (shape, dtype, kw)) in enumerate(LAYOUTS.items()):
        x = _source(shape, dtype, seed=i)
        out[name] = (x, ChunkReader(_write(root / f"{name}.zarr", x, **kw)))
    return out


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_is_fast_and_exact(stores: dict, name: str) -> None:
    x, reader = stores[name]
    assert reader.fast, reader.fallback_reason
    n = x.shape[0]
    c = reader.chunk_rows
    # Whole array, single rows, ranges crossing chunk (and shard) boundaries, overlaps, repeats.
    ranges = np.array(
        [[0, n], [n - 1, n], [c - 1, c + 1], [c, 2 * c], [3, 3 * c + 5], [0, 1], [3, 3 * c + 5]]
    )
    np.testing.assert_array_equal(reader.read_many(ranges), _expected(x, ranges))
    np.testing.assert_array_equal(reader.read(c - 3, n), x[c - 3 : n])


@pytest.mark.parametrize("name", ["v3-shard-lz4-f32", "v3-zstd-f32", "v2-2d-blosc-f32"])
@SETTINGS
@given(data=st.data())
def test_read_many_matches_numpy(stores: dict, name: str, data: st.DataObject) -> None:
    x, reader = stores[name]
    ranges = data.draw(_ranges(x.shape[0]))
    np.testing.assert_array_equal(reader.read_many(ranges), _expected(x, ranges))


@st.composite
def _arrays(draw: st.DrawFn) -> tuple[np.ndarray, dict[str, Any]]:
    dtype = draw(st.sampled_from(["int32", "float32", "int64", "uint8"]))
    chunk = draw(st.integers(1, 20))
    n = draw(st.integers(1, 200))
    cols = draw(st.sampled_from([None, 1, 3]))
    shape = (n,) if cols is None else (n, cols)
    x = _source(shape, dtype, seed=draw(st.integers(0, 2**16)))
    if draw(st.booleans()):  # runs of fill values make chunks (and whole shards) go missing
        lo = draw(st.integers(0, n))
        x[lo : lo + draw(st.integers(0, n))] = 0
    kind = draw(st.sampled_from(["v3", "v3-shard", "v2"]))
    comp = draw(st.sampled_from(["lz4", "zstd", "none"]))
    kw: dict[str, Any] = {"chunks": (chunk, *shape[1:])}
    if kind == "v2":
        kw["zarr_format"] = 2
        kw["compressors"] = {"lz4": numcodecs.Blosc("lz4"), "zstd": numcodecs.Zstd(), "none": None}[
            comp
        ]
    else:
        kw["compressors"] = {"lz4": LZ4, "zstd": ZstdCodec(), "none": None}[comp]
        if kind == "v3-shard":
            kw["shards"] = (chunk * draw(st.integers(1, 5)), *shape[1:])
    return x, kw


@settings(max_examples=40, deadline=None)
@given(arr=_arrays(), data=st.data())
def test_random_arrays_match_numpy(arr: tuple[np.ndarray, dict[str, Any]], data: Any) -> None:
    x, kw = arr
    with tempfile.TemporaryDirectory() as tmp:
        reader = ChunkReader(_write(Path(tmp) / "a.zarr", x, **kw))
        assert reader.fast, reader.fallback_reason
        ranges = data.draw(_ranges(x.shape[0]))
        got = reader.read_many(ranges)
        assert got.dtype == x.dtype
        np.testing.assert_array_equal(got, _expected(x, ranges))


# --- missing chunks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"chunks": (16,)},
        {"chunks": (16,), "shards": (64,)},
        {"chunks": (16,), "zarr_format": 2},
        {"chunks": (16,), "shards": (64,), "compressors": None},
        {"chunks": (16,), "zarr_format": 2, "compressors": None},
    ],
    ids=["v3", "v3-shard", "v2", "v3-shard-raw", "v2-raw"],
)
def test_missing_chunks_read_as_fill_value(tmp_path: Path, kw: dict[str, Any]) -> None:
    x = _source((300,), "float32") + 100
    x[16:48] = 7.5  # whole chunks equal to the fill value are not written
    x[128:192] = 7.5  # a whole shard of fill: no shard file at all
    a = _write(tmp_path / "a.zarr", x, fill_value=7.5, **kw)
    reader = ChunkReader(a)
    assert reader.fast
    files = {p.name for p in (tmp_path / "a.zarr").rglob("*") if p.is_file()}
    # Chunk 1 (v3, v2) or shard 2 really is missing; shard 0 marks chunks 1 and 2 absent.
    assert ("2" if "shards" in kw else "1") not in files
    ranges = np.array([[0, 300], [10, 50], [120, 200], [17, 18]])
    np.testing.assert_array_equal(reader.read_many(ranges), _expected(x, ranges))


def test_deleted_chunk_file_reads_as_fill_value(tmp_path: Path) -> None:
    x = _source((100,), "int32") + 1000
    a = _write(tmp_path / "a.zarr", x, chunks=(10,), fill_value=-1)
    (tmp_path / "a.zarr" / "c" / "3").unlink()
    expected = x.copy()
    expected[30:40] = -1
    got = ChunkReader(a).read_many(np.array([[25, 45], [0, 100]]))
    np.testing.assert_array_equal(got, np.concatenate([expected[25:45], expected]))
    np.testing.assert_array_equal(expected, a[:])  # the same as zarr-python


def test_v2_null_fill_value_reads_zeros(tmp_path: Path) -> None:
    x = _source((64,), "float32")
    a = _write(tmp_path / "a.zarr", x, chunks=(16,), zarr_format=2, fill_value=None)
    (tmp_path / "a.zarr" / "1").unlink()
    reader = ChunkReader(a)
    assert reader.fast
    np.testing.assert_array_equal(reader.read(0, 64), a[:])


# --- fallback -----------------------------------------------------------------------------------


def _fallback_cases(tmp: Path) -> list[tuple[np.ndarray, zarr.Array]]:
    x2 = _source((50, 6), "float32")
    x1 = _source((200,), "int32")
    cases = [
        (x2, _write(tmp / "t.zarr", x2, chunks=(8, 6), filters=[TransposeCodec(order=(1, 0))])),
        (
            x1,
            _write(
                tmp / "d.zarr", x1, chunks=(16,), zarr_format=2, filters=[numcodecs.Delta("i4")]
            ),
        ),
        (x2, _write(tmp / "f.zarr", x2, chunks=(8, 6), zarr_format=2, order="F")),
        (x2, _write(tmp / "cols.zarr", x2, chunks=(8, 4))),  # chunks split the columns
        (x1.astype(">i4"), _write(tmp / "be.zarr", x1.astype(">i4"), chunks=(16,), zarr_format=2)),
    ]
    # A wrapped store (here logging every call) is read through zarr-python: wrappers may change
    # the bytes or count the calls.
    wrapped = zarr.storage.LoggingStore(zarr.storage.LocalStore(tmp / "w.zarr"))
    a = zarr.create_array(wrapped, shape=x1.shape, dtype=x1.dtype, chunks=(16,), fill_value=0)
    a[...] = x1
    cases.append((x1, zarr.open_array(wrapped, mode="r")))
    return cases


def test_unsupported_layouts_fall_back_with_equal_results(tmp_path: Path) -> None:
    for x, a in _fallback_cases(tmp_path):
        reader = ChunkReader(a)
        assert not reader.fast
        assert reader.fallback_reason
        ranges = np.array([[0, 3], [5, 40], [0, x.shape[0]], [9, 9]])
        got = reader.read_many(ranges)
        np.testing.assert_array_equal(got, _expected(x, ranges))
        assert got.dtype == reader.dtype


# --- corruption ---------------------------------------------------------------------------------


def _assert_corrupt(reader: ChunkReader, lo: int, hi: int, file: Path, chunk: str) -> None:
    with pytest.raises(CorruptChunkError) as info:
        reader.read(lo, hi)
    msg = str(info.value)
    assert str(file) in msg
    assert chunk in msg
    assert repr(reader.array.name) in msg
    assert "re-create" in msg
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "kw",
    [
        {"compressors": LZ4},
        {"compressors": ZstdCodec()},
        {"compressors": [LZ4, zarr.codecs.Crc32cCodec()]},
        {"zarr_format": 2},
    ],
)
def test_overwritten_chunk_raises(tmp_path: Path, kw: dict[str, Any]) -> None:
    x = _source((100,), "float32")
    _write(tmp_path / "g" / "arr", x, chunks=(10,), **kw)
    f = next(p for p in (tmp_path / "g" / "arr").rglob("4") if p.is_file())
    f.write_bytes(bytes(len(f.read_bytes())))  # same length, all zeros
    reader = ChunkReader(zarr.open_array(str(tmp_path / "g"), path="arr", mode="r"))
    assert reader.fast
    np.testing.assert_array_equal(reader.read(0, 40), x[:40])  # other chunks still fine
    _assert_corrupt(reader, 35, 45, f, "chunk 4")


def test_truncated_uncompressed_chunk_raises(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.zarr", _source((100,), "int64"), chunks=(10,), compressors=None)
    f = tmp_path / "a.zarr" / "c" / "2"
    f.write_bytes(f.read_bytes()[:-8])
    _assert_corrupt(ChunkReader(a), 0, 100, f, "chunk 2")


def test_raw_reads_only_the_rows_asked_for(tmp_path: Path) -> None:
    x = _source((256, 3), "int32")
    a = _write(tmp_path / "a.zarr", x, chunks=(16, 3), shards=(64, 3), compressors=None)
    reader = ChunkReader(a)
    assert reader.fast
    assert reader._layout is not None
    assert reader._layout.raw
    ranges = np.array([[70, 71], [5, 40], [250, 256], [64, 64], [0, 256]])
    np.testing.assert_array_equal(reader.read_many(ranges), _expected(x, ranges))
    out = np.full((41, 3), -7, dtype=np.int32)  # into a caller's buffer, every row written
    reader.read_many(np.array([[3, 9], [100, 135]]), out=out)
    np.testing.assert_array_equal(out, np.concatenate([x[3:9], x[100:135]]))


def test_raw_chunk_of_the_wrong_size_raises(tmp_path: Path) -> None:
    x = _source((128,), "int64")
    a = _write(tmp_path / "a.zarr", x, chunks=(16,), shards=(64,), compressors=None)
    f = tmp_path / "a.zarr" / "c" / "1"
    raw = bytearray(f.read_bytes())
    entries = np.frombuffer(bytes(raw[-(16 * 4 + 4) : -4]), "<u8").reshape(4, 2).copy()
    entries[1, 1] -= 8  # inner chunk 5 claims one value less: the index no longer fits the dtype
    raw[-(16 * 4 + 4) : -4] = entries.tobytes()
    raw[-4:] = bytes(numcodecs.checksum32.CRC32C().encode(entries.tobytes()))[-4:]
    f.write_bytes(bytes(raw))
    reader = ChunkReader(a)
    np.testing.assert_array_equal(reader.read(60, 80), x[60:80])  # chunks 3, 4: still fine
    _assert_corrupt(reader, 80, 90, f, "chunk 5")
    g = tmp_path / "a.zarr" / "c" / "0"
    g.write_bytes(g.read_bytes()[:100])  # shorter than its index says
    _assert_corrupt(reader, 0, 5, g, "chunks 0..3")


def test_corrupt_shard_index_raises(tmp_path: Path) -> None:
    x = _source((256,), "float32")
    a = _write(tmp_path / "a.zarr", x, chunks=(16,), shards=(64,))
    f = tmp_path / "a.zarr" / "c" / "1"
    raw = bytearray(f.read_bytes())
    raw[-10] ^= 0xFF  # inside the index, before its crc32c
    f.write_bytes(bytes(raw))
    reader = ChunkReader(a)
    np.testing.assert_array_equal(reader.read(0, 64), x[:64])
    _assert_corrupt(reader, 60, 70, f, "chunks 4..7")


def test_corrupt_inner_chunk_and_truncated_shard_raise(tmp_path: Path) -> None:
    x = _source((256,), "float32")
    a = _write(tmp_path / "a.zarr", x, chunks=(16,), shards=(64,))
    f = tmp_path / "a.zarr" / "c" / "0"
    raw = bytearray(f.read_bytes())
    index = np.frombuffer(bytes(raw[-(16 * 4 + 4) : -4]), "<u8").reshape(4, 2)
    off = int(index[2, 0])
    raw[off : off + 16] = bytes(16)  # blosc header of inner chunk 2
    f.write_bytes(bytes(raw))
    reader = ChunkReader(a)
    np.testing.assert_array_equal(reader.read(0, 32), x[:32])
    _assert_corrupt(reader, 30, 40, f, "chunk 2")
    g = tmp_path / "a.zarr" / "c" / "2"
    g.write_bytes(g.read_bytes()[:-200] + g.read_bytes()[-68:])  # keep a valid-looking index
    _assert_corrupt(reader, 130, 131, g, "chunks 8..11")
    h = tmp_path / "a.zarr" / "c" / "3"
    h.write_bytes(h.read_bytes()[:20])
    _assert_corrupt(reader, 200, 201, h, "chunks 12..15")


# --- threads, caching, arguments ----------------------------------------------------------------


def test_concurrent_reads_equal_serial(stores: dict) -> None:
    x, reader = stores["v3-shard-lz4-f32"]
    rng = np.random.default_rng(1)
    batches = []
    for _ in range(64):
        lo = rng.integers(0, x.shape[0] - 16, size=20)
        batches.append(np.stack([lo, lo + 16], axis=1))
    serial = [reader.read_many(b) for b in batches]
    fresh = ChunkReader(reader.array)  # empty shard-index cache: threads race to fill it
    barrier = threading.Barrier(4)

    def work(i: int) -> list[np.ndarray]:
        barrier.wait()
        return [fresh.read_many(b) for b in batches[i::4]]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    for i, res in enumerate(results):
        for got, exp in zip(res, serial[i::4]):
            np.testing.assert_array_equal(got, exp)


def test_rewritten_shard_is_reread(tmp_path: Path) -> None:
    x = _source((128,), "int32")
    a = _write(tmp_path / "a.zarr", x, chunks=(16,), shards=(64,))
    reader = ChunkReader(a)
    np.testing.assert_array_equal(reader.read(0, 128), x)
    a[10:20] = 999  # rewrites shard 0 with a different layout
    x[10:20] = 999
    np.testing.assert_array_equal(reader.read(0, 128), x)


def test_small_index_cache(tmp_path: Path) -> None:
    x = _source((1000,), "int32")
    reader = ChunkReader(
        _write(tmp_path / "a.zarr", x, chunks=(10,), shards=(50,)), index_cache_size=2
    )
    ranges = np.array([[0, 1000], [995, 1000], [0, 5], [333, 777]])
    np.testing.assert_array_equal(reader.read_many(ranges), _expected(x, ranges))
    assert len(reader._index_cache) <= 2


def test_out_argument_and_pickle(stores: dict) -> None:
    x, reader = stores["v3-2d-shard-i32"]
    ranges = np.array([[3, 40], [100, 120]])
    buf = np.full((80, 7), -1, dtype=np.int32)
    res = reader.read_many(ranges, out=buf[10:67])
    assert res.base is buf
    np.testing.assert_array_equal(buf[10:67], _expected(x, ranges))
    assert (buf[:10] == -1).all()
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.fast
    np.testing.assert_array_equal(clone.read_many(ranges), _expected(x, ranges))


def test_bad_arguments(stores: dict) -> None:
    x, reader = stores["v3-lz4-i32"]
    n = x.shape[0]
    for bad in ([[0, n + 1]], [[-1, 3]], [[5, 4]], [[0.0, 1.0]], [[1, 2, 3]]):
        with pytest.raises(InvalidArgumentError):
            reader.read_many(np.array(bad))
    with pytest.raises(InvalidArgumentError):
        reader.read_many(np.array([[0, 4]]), out=np.empty(5, np.int32))
    assert reader.read_many(np.empty((0, 2), np.int64)).shape == (0,)
    assert reader.read(7, 7).shape == (0,)


def test_nested_array_path(tmp_path: Path) -> None:
    x = _source((90,), "float32")
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    sub = g.create_group("X")
    a = sub.create_array("data", shape=x.shape, dtype=x.dtype, chunks=(16,), shards=(32,))
    a[:] = x
    reader = ChunkReader(zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["X/data"])
    assert reader.fast
    assert os.path.isdir(tmp_path / "s.zarr" / "X" / "data" / "c")
    np.testing.assert_array_equal(reader.read(5, 90), x[5:])


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_scalar_and_vector_span_plans_agree(data: st.DataObject) -> None:
    """Small shard groups plan their preads in plain Python; the plan equals numpy's."""
    from atlasloader.reading.layout import _MISSING
    from atlasloader.reading.local_reads import _spans_scalar, _spans_vector

    n = data.draw(st.integers(1, 12))
    sizes = data.draw(st.lists(st.integers(1, 50), min_size=n, max_size=n))
    missing = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    gaps = data.draw(st.lists(st.sampled_from([0, 0, 0, 7]), min_size=n, max_size=n))
    index = np.zeros((n, 2), dtype=np.uint64)
    pos = 0
    for i in range(n):  # chunks in file order, some with a gap before them, some missing
        pos += gaps[i]
        if missing[i]:
            index[i] = _MISSING
        else:
            index[i] = (pos, sizes[i])
            pos += sizes[i]
    ids = np.array(sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1))), dtype=np.int64)
    assert _spans_scalar(ids.tolist(), index) == _spans_vector(ids, index)
