"""Direct chunk reads of Zarr arrays (local or remote): many small row ranges, little Python each.

zarr-python spends tens of microseconds of Python per chunk (selection planning, codec pipeline,
event-loop round trip) and serialises that work on the GIL, so reading small random runs of rows
tops out far below what the decompressors can do and gains nothing from threads. The loader only
needs one access pattern: contiguous ranges ``[lo, hi)`` along the first axis of a 1-D array (the
``data`` / ``indices`` arrays of a CSR group) or of a row-chunked dense 2-D array. For arrays on a
local filesystem whose codecs we understand, :class:`ChunkReader` computes the chunk files itself,
``os.pread``-s exactly the bytes of the needed chunks (inner chunks of shards included), and decodes
them with numcodecs, which releases the GIL, so several threads can decode in parallel.

Remote stores (``s3://``, ``gs://``, ``http(s)://`` through fsspec, or obstore) take the same plan:
the chunks of a read become concurrent ranged GETs (:mod:`.remote`), near inner chunks of a
shard one request, each decoded as it arrives. Anything else (wrapped stores, filters and
array-to-array codecs, big-endian data, chunking across the trailing axes...) falls back
transparently to zarr-python; :attr:`ChunkReader.fast` says which path a reader takes and
:attr:`ChunkReader.fallback_reason` why.

The reader assumes the array is not resized while it is in use (shape and chunking are read once).
Local chunk and shard files may be rewritten: shard indices are cached keyed by the file's inode,
size and modification time, and files are opened anew on every call. Remote shard indices are
cached for the reader's lifetime (objects have no cheap modification stamp).
"""

from __future__ import annotations

import math
import os
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numcodecs
import numcodecs.blosc
import numcodecs.zstd
import numpy as np
import zarr
from zarr.storage import LocalStore

from ..errors import CorruptChunkError, InvalidArgumentError
from .remote import RangeRequest, RemoteFetcher, is_remote_store, object_url

try:  # numcodecs only defines CRC32C when a crc32c implementation is installed.
    from numcodecs.checksum32 import CRC32C as _CRC32C

    _crc32c: Any = _CRC32C()
except ImportError:  # pragma: no cover - depends on the environment
    _crc32c = None

__all__ = ["ChunkReader"]

# Sentinel of the sharding index for a chunk that was never written (spec: both fields 2^64-1).
_MISSING = np.uint64(2**64 - 1)
# Largest single pread when coalescing consecutive inner chunks of a shard: big enough that the
# syscall cost vanishes, small enough that one call never holds a huge raw buffer.
_MAX_SPAN_BYTES = 4 << 20
# Remote stores: inner chunks of one shard closer than this in the object are fetched with one
# ranged GET (the bytes in between are discarded; a request costs far more than 256 KiB on a
# link with tens of milliseconds of latency), up to _REMOTE_SPAN_BYTES per request.
_REMOTE_GAP_BYTES = 256 << 10
_REMOTE_SPAN_BYTES = 16 << 20
# Dtype kinds whose bytes we can reinterpret directly (bool, ints, unsigned, floats, complex).
_DTYPE_KINDS = "biufc"
# numcodecs compressors of Zarr v2 arrays that are plain bytes -> bytes transforms.
_V2_COMPRESSORS = frozenset({"blosc", "zstd", "gzip", "zlib"})
_ZSTD_MAGIC = 0xFD2FB528
# Decoded and compressed sizes in a blosc header (bytes 4-7 and 12-15, little endian).
_BLOSC_SIZES = struct.Struct("<4xI4xI")
_blosc_decompress = numcodecs.blosc.decompress

# A decoder maps encoded bytes to decoded bytes; ``expected`` is the decoded size when it is known
# (only for the last decoder applied), so headers claiming another size are rejected before any
# allocation happens.
Decoder = Callable[[Any, "int | None"], Any]


class _Unsupported(Exception):
    """The array cannot be read directly; the message says why (kept as ``fallback_reason``)."""


# --- decoders ---------------------------------------------------------------------------------


def _decode_blosc(buf: Any, expected: int | None) -> Any:
    # c-blosc's decompressor trusts the compressed size in the header (it is never told the
    # buffer's length), so a damaged header could make it read past the buffer: check it first.
    if type(buf) is not bytes and type(buf) is not memoryview:
        # Outputs of other decoders (arrays); bytes and our slices of them are flat already.
        buf = memoryview(buf).cast("B")
    size = len(buf)
    if size < 16:
        raise ValueError(f"blosc buffer of {size} bytes is shorter than its 16-byte header")
    nbytes, cbytes = _BLOSC_SIZES.unpack_from(buf)
    if cbytes != size:
        raise ValueError(f"blosc header says {cbytes} compressed bytes, buffer has {size}")
    if expected is not None and nbytes != expected:
        raise ValueError(f"blosc header says {nbytes} decoded bytes, expected {expected}")
    return _blosc_decompress(buf)


def _zstd_content_size(mv: memoryview) -> int | None:
    """Decoded size declared in a zstd frame header, or None when the frame omits it."""
    if len(mv) < 5 or int.from_bytes(mv[0:4], "little") != _ZSTD_MAGIC:
        raise ValueError("not a zstd frame (bad magic number)")
    fhd = mv[4]
    fcs_flag, single_segment, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if size == 0:
        return None
    if len(mv) < pos + size:
        raise ValueError("truncated zstd frame header")
    value = int.from_bytes(mv[pos : pos + size], "little")
    return value + 256 if size == 2 else value


def _decode_zstd(buf: Any, expected: int | None) -> Any:
    mv = memoryview(buf).cast("B")
    if expected is not None:
        declared = _zstd_content_size(mv)
        if declared is not None and declared != expected:
            raise ValueError(f"zstd frame declares {declared} decoded bytes, expected {expected}")
    return numcodecs.zstd.decompress(mv)


def _decode_crc32c(buf: Any, expected: int | None) -> Any:
    mv = memoryview(buf).cast("B")
    if len(mv) < 4:
        raise ValueError("buffer too short to hold a crc32c checksum")
    return _crc32c.decode(mv) if _crc32c is not None else mv[:-4]


def _numcodecs_decoder(codec: Any) -> Decoder:
    def decode(buf: Any, expected: int | None) -> Any:
        return codec.decode(buf)

    return decode


def _v3_decoder(spec: dict[str, Any]) -> Decoder:
    name = spec["name"]
    cfg = spec.get("configuration") or {}
    if name == "blosc":
        return _decode_blosc
    if name == "zstd":
        return _decode_zstd
    if name == "gzip":
        return _numcodecs_decoder(numcodecs.GZip(level=int(cfg.get("level", 5))))
    if name == "crc32c":
        return _decode_crc32c
    raise _Unsupported(f"codec {name!r} is not decoded directly")


def _v2_decoder(codec: Any) -> Decoder:
    codec_id = getattr(codec, "codec_id", None)
    if codec_id not in _V2_COMPRESSORS:
        raise _Unsupported(f"v2 compressor {codec_id!r} is not decoded directly")
    if codec_id == "blosc":
        return _decode_blosc
    if codec_id == "zstd":
        return _decode_zstd
    return _numcodecs_decoder(codec)


def _bytes_codec_ok(spec: dict[str, Any], dtype: np.dtype) -> None:
    if spec.get("name") != "bytes":
        raise _Unsupported(f"codec {spec.get('name')!r} where the bytes codec was expected")
    endian = (spec.get("configuration") or {}).get("endian")
    if endian != "little" and not (endian is None and dtype.itemsize == 1):
        raise _Unsupported(f"bytes codec with endian={endian!r}")


# --- layout -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Everything needed to find and decode a chunk, fixed at construction."""

    directory: str  # the array's directory on disk; on a remote store its key prefix
    remote: bool  # chunks are objects of a remote store, fetched through reading.remote
    key_prefix: str  # chunk key of row-chunk i = key_prefix + str(i) + key_suffix
    key_suffix: str
    chunk_rows: int  # rows per (inner) chunk
    chunk_shape: tuple[int, ...]  # decoded (inner) chunk shape, padded edges included
    chunk_nbytes: int
    # Decoders in decoding order, each with the size of its output when known in advance (only
    # for the last one, the decoded chunk).
    decode_steps: tuple[tuple[Decoder, int | None], ...]

    shard_chunks: int  # inner chunks per shard file; 0 when the array is not sharded
    index_at_end: bool
    index_nbytes: int
    index_crc: bool


def _spec(obj: Any) -> dict[str, Any]:
    """JSON form of a zarr metadata object (codec, grid, key encoding), as the spec writes it."""
    return dict(obj.to_dict())


def _chunk_key_parts(array: zarr.Array, ndim: int, n_keys: int) -> tuple[str, str]:
    """Prefix and suffix around the row-chunk (or shard) number in a key, checked against zarr."""
    meta: Any = array.metadata  # v2 and v3 metadata classes share no typed interface
    if meta.zarr_format == 3:
        enc = _spec(meta.chunk_key_encoding)
        name = enc.get("name")
        sep = (enc.get("configuration") or {}).get("separator", "/" if name == "default" else ".")
        if name == "default":
            prefix = "c" + sep
        elif name == "v2":
            prefix = ""
        else:
            raise _Unsupported(f"chunk key encoding {name!r}")
    else:
        sep = getattr(meta, "dimension_separator", None) or "."
        prefix = ""
    suffix = (sep + "0") * (ndim - 1)
    # Compare with zarr's own encoder on the first and last chunk so an encoding we misread falls
    # back instead of reading the wrong files.
    for i in {0, max(0, n_keys - 1)}:
        ours = prefix + str(i) + suffix
        theirs = meta.encode_chunk_key((i,) + (0,) * (ndim - 1))
        if ours != theirs:
            raise _Unsupported(f"chunk key {theirs!r} does not match the expected {ours!r}")
    return prefix, suffix


def _trailing_in_one_chunk(shape: tuple[int, ...], chunks: tuple[int, ...], what: str) -> None:
    for s, c in zip(shape[1:], chunks[1:]):
        if s > c:
            raise _Unsupported(f"{what} split the trailing axes ({chunks} for shape {shape})")


def _layout(array: zarr.Array) -> _Layout:
    store = array.store
    remote = is_remote_store(store)
    if type(store) is not LocalStore and not remote:
        # Wrappers (logging, latency, caching...) may change the bytes or count the calls.
        raise _Unsupported(f"store {type(store).__name__} is not a local or remote object store")
    if sys.byteorder != "little":
        raise _Unsupported("big-endian host")
    shape = tuple(int(s) for s in array.shape)
    if len(shape) == 0 or any(s == 0 for s in shape[1:]):
        raise _Unsupported(f"shape {shape}")
    dtype = np.dtype(array.dtype)
    if dtype.kind not in _DTYPE_KINDS or dtype.byteorder == ">" or dtype.hasobject:
        raise _Unsupported(f"dtype {dtype}")
    parts = [p for p in array.path.split("/") if p]
    if remote:
        directory = "/".join(parts)
    else:
        # Absolute, so a later change of working directory cannot redirect reads.
        directory = os.path.abspath(os.path.join(str(store.root), *parts))
    meta: Any = array.metadata

    shard_chunks, index_at_end, index_nbytes, index_crc = 0, True, 0, False
    if meta.zarr_format == 3:
        if getattr(meta, "storage_transformers", ()):
            raise _Unsupported("storage transformers")
        grid = _spec(meta.chunk_grid)
        if grid.get("name") != "regular":
            raise _Unsupported(f"chunk grid {grid.get('name')!r}")
        outer = tuple(int(c) for c in grid["configuration"]["chunk_shape"])
        codecs = [_spec(c) for c in meta.codecs]
        if codecs and codecs[0].get("name") == "sharding_indexed":
            if len(codecs) != 1:
                raise _Unsupported("codecs after the sharding codec")
            cfg = codecs[0]["configuration"]
            inner = tuple(int(c) for c in cfg["chunk_shape"])
            if inner[1:] != outer[1:] or outer[0] % inner[0]:
                raise _Unsupported(f"inner chunks {inner} do not tile shards {outer} by rows")
            index_codecs = [dict(c) for c in cfg.get("index_codecs", ())]
            names = [c.get("name") for c in index_codecs]
            if names not in (["bytes"], ["bytes", "crc32c"]):
                raise _Unsupported(f"shard index codecs {names}")
            _bytes_codec_ok(index_codecs[0], np.dtype("u8"))
            shard_chunks = outer[0] // inner[0]
            index_crc = len(names) == 2
            index_nbytes = 16 * shard_chunks + (4 if index_crc else 0)
            index_at_end = cfg.get("index_location", "end") == "end"
            codecs = [dict(c) for c in cfg["codecs"]]
            chunk_shape = inner
        else:
            chunk_shape = outer
        if not codecs:
            raise _Unsupported("no codecs")
        _bytes_codec_ok(codecs[0], dtype)
        decoders = [_v3_decoder(c) for c in codecs[1:]][::-1]
    else:
        chunk_shape = tuple(int(c) for c in meta.chunks)
        if meta.filters:
            raise _Unsupported("v2 filters")
        if meta.order != "C" and len(shape) > 1:
            raise _Unsupported(f"v2 order {meta.order!r}")
        decoders = [] if meta.compressor is None else [_v2_decoder(meta.compressor)]
    _trailing_in_one_chunk(shape, chunk_shape, "chunks")
    n_row_chunks = max(1, math.ceil(shape[0] / chunk_shape[0]))
    n_files = math.ceil(n_row_chunks / shard_chunks) if shard_chunks else n_row_chunks
    prefix, suffix = _chunk_key_parts(array, len(shape), n_files)
    chunk_nbytes = math.prod(chunk_shape) * dtype.itemsize
    return _Layout(
        directory=directory,
        remote=remote,
        key_prefix=prefix,
        key_suffix=suffix,
        chunk_rows=chunk_shape[0],
        chunk_shape=chunk_shape,
        chunk_nbytes=chunk_nbytes,
        decode_steps=tuple(
            (d, chunk_nbytes if i == len(decoders) - 1 else None) for i, d in enumerate(decoders)
        ),
        shard_chunks=shard_chunks,
        index_at_end=index_at_end,
        index_nbytes=index_nbytes,
        index_crc=index_crc,
    )


# --- reader -----------------------------------------------------------------------------------


class ChunkReader:
    """Fast reads of row ranges of a Zarr array, decoding chunk files directly when possible.

    Parameters
    ----------
    array
        A 1-D Zarr array, or an N-D one chunked along the first axis only (every chunk spans all
        the trailing axes).
    index_cache_size
        Most shard indices kept in memory (16 bytes per inner chunk each); the oldest is dropped
        beyond that.

    Notes
    -----
    Direct reads need a :class:`zarr.storage.LocalStore` (``os.pread`` of the chunk files) or a
    remote ``FsspecStore`` / ``ObjectStore`` (concurrent ranged GETs through
    :mod:`atlasloader.reading.remote`, shard indices cached, near inner chunks of a shard
    coalesced into one request), Zarr format 3 with a little-endian
    ``bytes`` codec followed by any of ``blosc``, ``zstd``, ``gzip``, ``crc32c`` (optionally inside
    ``sharding_indexed`` with a ``bytes`` [+ ``crc32c``] index at either end), or Zarr format 2
    with no filters, C order and a Blosc, Zstd, GZip, Zlib or no compressor. Everything else is
    read through zarr-python, with identical results.

    Missing chunk files and chunks a shard index marks as absent read as the fill value, as the
    Zarr specification says. A chunk that cannot be decoded, a shard index whose checksum does not
    match and a truncated file raise :class:`~atlasloader.errors.CorruptChunkError`.

    Instances are thread safe: the only shared mutable state is the shard-index cache, guarded by
    a lock; files are opened per call. Decoding releases the GIL, so calls from several threads
    decode in parallel.
    """

    def __init__(self, array: zarr.Array, *, index_cache_size: int = 4096) -> None:
        self.array = array
        self.shape: tuple[int, ...] = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.index_cache_size = int(index_cache_size)
        self.fallback_reason: str | None = None
        self._layout: _Layout | None = None
        try:
            self._layout = _layout(array)
        except _Unsupported as exc:
            self.fallback_reason = str(exc)
        fill = array.metadata.fill_value
        # Zarr v2 allows a null fill value; zarr-python then reads missing chunks as zeros.
        self._fill = np.zeros((), self.dtype) if fill is None else np.asarray(fill, self.dtype)
        self._where = f"{array.store}/{array.path}" if array.path else str(array.store)
        self._remote: RemoteFetcher | None = None
        if self._layout is not None and self._layout.remote:
            self._remote = RemoteFetcher(array.store, self._where)
        self._init_cache()

    @property
    def remote(self) -> bool:
        """Whether chunks come from an object store (ranged GETs) rather than local files."""
        return self._remote is not None

    def _init_cache(self) -> None:
        # shard number -> ((inode, size, mtime_ns), index as uint64 (n_chunks, 2))
        self._index_cache: dict[int, tuple[tuple[int, int, int], np.ndarray]] = {}
        self._index_lock = threading.Lock()

    # Locks do not pickle; a reader sent to a worker process starts with an empty cache.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_index_cache"], state["_index_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_cache()

    def __repr__(self) -> str:
        path = "fast" if self.fast else f"zarr fallback: {self.fallback_reason}"
        return f"ChunkReader({self._where!r}, shape={self.shape}, dtype={self.dtype}, {path})"

    # --- properties ---------------------------------------------------------------------------
    @property
    def fast(self) -> bool:
        """Whether chunk files are read and decoded directly (False: through zarr-python)."""
        return self._layout is not None

    @property
    def chunk_rows(self) -> int:
        """Rows along the first axis per decoded chunk (inner chunk of a shard)."""
        if self._layout is not None:
            return self._layout.chunk_rows
        return int(self.array.chunks[0])

    # --- reading ------------------------------------------------------------------------------
    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` along the first axis.

        Parameters
        ----------
        lo, hi
            Bounds with ``0 <= lo <= hi <= shape[0]``.

        Returns
        -------
        numpy.ndarray
            Array of shape ``(hi - lo, *shape[1:])``.
        """
        return self.read_many(np.array([[lo, hi]], dtype=np.int64))

    def read_many(self, ranges: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Concatenation of several row ranges, in the order given.

        Each chunk touched is read and decoded once per call however many ranges share it, and
        consecutive inner chunks of a shard are read with one ``pread``.

        Parameters
        ----------
        ranges
            Integer array of shape ``(k, 2)``: rows ``[ranges[i, 0], ranges[i, 1])``, with
            ``0 <= lo <= hi <= shape[0]``. Ranges may overlap and come in any order.
        out
            Optional C-contiguous array of shape ``(sum(hi - lo), *shape[1:])`` and this reader's
            dtype to write into (e.g. a slice of a larger buffer filled by several threads).

        Returns
        -------
        numpy.ndarray
            ``out``, or a new array of that shape.

        Raises
        ------
        InvalidArgumentError
            Malformed or out-of-bounds ranges, or ``out`` of the wrong shape or dtype.
        CorruptChunkError
            A chunk or shard index that cannot be decoded, or a truncated chunk file.
        """
        r = np.asarray(ranges)
        if r.size == 0:
            r = r.reshape(0, 2)
        if r.ndim != 2 or r.shape[1] != 2 or r.dtype.kind not in "iu":
            msg = f"ranges must be an integer array of shape (k, 2), got {r.dtype} {r.shape}"
            raise InvalidArgumentError(msg)
        r = r.astype(np.int64, copy=False)
        lo, hi = r[:, 0], r[:, 1]
        if r.shape[0] and (lo.min() < 0 or (hi < lo).any() or hi.max() > self.shape[0]):
            msg = f"ranges must satisfy 0 <= lo <= hi <= {self.shape[0]} (the number of rows)"
            raise InvalidArgumentError(msg)
        lengths = hi - lo
        total = int(lengths.sum())
        out_shape = (total, *self.shape[1:])
        if out is None:
            out = np.empty(out_shape, dtype=self.dtype)
        elif out.shape != out_shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            msg = (
                f"out must be a C-contiguous {self.dtype} array of shape {out_shape}, "
                f"got {out.dtype} {out.shape}"
            )
            raise InvalidArgumentError(msg)
        if total == 0:
            return out
        starts = np.cumsum(lengths) - lengths
        if self._layout is None:
            for a, b, s in zip(lo.tolist(), hi.tolist(), starts.tolist()):
                if b > a:
                    out[s : s + b - a] = np.asarray(self.array[a:b])
            return out
        keep = lengths > 0
        self._read_fast(self._layout, lo[keep], hi[keep], starts[keep], out)
        return out

    # --- fast path ----------------------------------------------------------------------------
    def _read_fast(
        self, lay: _Layout, lo: np.ndarray, hi: np.ndarray, starts: np.ndarray, out: np.ndarray
    ) -> None:
        # Split ranges into pieces that each lie in one chunk, all in numpy so the Python loops
        # below run once per chunk and once per piece with nothing left to compute.
        c = lay.chunk_rows
        first = lo // c
        counts = (hi - 1) // c - first + 1
        rid = np.repeat(np.arange(lo.size), counts)
        step = np.arange(rid.size) - (np.cumsum(counts) - counts)[rid]
        chunk = first[rid] + step
        plo = np.maximum(lo[rid], chunk * c)
        phi = np.minimum(hi[rid], chunk * c + c)
        dst = starts[rid] + (plo - lo[rid])
        # Group the pieces by chunk (sorted, so shards come in file order).
        order = np.argsort(chunk, kind="stable")
        chunk, plo, phi, dst = chunk[order], plo[order], phi[order], dst[order]
        bounds = np.flatnonzero(np.diff(chunk)) + 1
        gstart = np.concatenate(([0], bounds))
        gend = np.concatenate((bounds, [chunk.size]))
        uniq = chunk[gstart]
        # Offsets of each piece inside its chunk, as Python ints for cheap slicing.
        a_list = (plo - chunk * c).tolist()
        b_list = (phi - chunk * c).tolist()
        d_list = dst.tolist()
        gs_list, ge_list = gstart.tolist(), gend.tolist()
        trailing = tuple(slice(0, s) for s in self.shape[1:])
        padded = lay.chunk_shape[1:] != self.shape[1:]

        fill = self._fill

        # Called once per chunk, in file order, right after it is decoded: only one decoded chunk
        # is alive at a time, whatever the number of ranges.
        def place(g: int, decoded: np.ndarray | None) -> None:
            # Copy the pieces of chunk group g out of its decoded chunk (None: the fill value).
            if decoded is None:
                for p in range(gs_list[g], ge_list[g]):
                    d = d_list[p]
                    out[d : d + b_list[p] - a_list[p]] = fill
                return
            if padded:
                decoded = decoded[(slice(None), *trailing)]
            for p in range(gs_list[g], ge_list[g]):
                d, a = d_list[p], a_list[p]
                out[d : d + b_list[p] - a] = decoded[a : b_list[p]]

        if lay.remote:
            self._read_remote(lay, uniq, place)
        elif lay.shard_chunks:
            self._read_shards(lay, uniq, place)
        else:
            self._read_chunk_files(lay, uniq, place)

    def _read_chunk_files(
        self, lay: _Layout, uniq: np.ndarray, place: Callable[[int, np.ndarray | None], None]
    ) -> None:
        for g, ci in enumerate(uniq.tolist()):
            path = os.path.join(lay.directory, f"{lay.key_prefix}{ci}{lay.key_suffix}")
            try:
                with open(path, "rb", buffering=0) as f:
                    raw = f.readall()
            except FileNotFoundError:
                place(g, None)  # never written: the fill value, as the spec says
                continue
            place(g, self._decode(lay, raw, path, ci))

    def _read_shards(
        self, lay: _Layout, uniq: np.ndarray, place: Callable[[int, np.ndarray | None], None]
    ) -> None:
        n = lay.shard_chunks
        shard = uniq // n
        inner = uniq - shard * n
        bounds = np.flatnonzero(np.diff(shard)) + 1
        for s0, s1 in zip(
            np.concatenate(([0], bounds)).tolist(), np.concatenate((bounds, [uniq.size])).tolist()
        ):
            si = int(shard[s0])
            path = os.path.join(lay.directory, f"{lay.key_prefix}{si}{lay.key_suffix}")
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                for g in range(s0, s1):
                    place(g, None)
                continue
            try:
                index = self._shard_index(lay, fd, path, si)
                self._read_spans(lay, fd, path, si, s0, inner[s0:s1], index, place)
            finally:
                os.close(fd)

    def _read_spans(
        self,
        lay: _Layout,
        fd: int,
        path: str,
        shard: int,
        g0: int,
        ids: np.ndarray,
        index: np.ndarray,
        place: Callable[[int, np.ndarray | None], None],
    ) -> None:
        off = index[ids, 0]
        nb = index[ids, 1]
        missing = (off == _MISSING) & (nb == _MISSING)
        off = np.where(missing, 0, off).astype(np.int64)
        nb = np.where(missing, 0, nb).astype(np.int64)
        # One pread per span of chunks adjacent both in number and in the file; a missing chunk
        # is a span of its own.
        m = ids.size
        if m > 1:
            joins = (
                (np.diff(ids) == 1) & (off[1:] == off[:-1] + nb[:-1]) & ~missing[1:] & ~missing[:-1]
            )
            breaks = np.flatnonzero(~joins) + 1
        else:
            breaks = np.empty(0, np.int64)
        span_starts = np.concatenate(([0], breaks)).tolist()
        span_ends = np.concatenate((breaks, [m])).tolist()
        off_l, nb_l, miss_l, ids_l = off.tolist(), nb.tolist(), missing.tolist(), ids.tolist()
        base_chunk = shard * lay.shard_chunks
        decode = self._decode
        for a, b in zip(span_starts, span_ends):
            if miss_l[a]:
                place(g0 + a, None)
                continue
            j = a
            while j < b:
                # Cut the span into preads of at most _MAX_SPAN_BYTES (at least one chunk each).
                k, size = j, 0
                while k < b and (k == j or size + nb_l[k] <= _MAX_SPAN_BYTES):
                    size += nb_l[k]
                    k += 1
                raw = os.pread(fd, size, off_l[j])
                if len(raw) != size:
                    ci = base_chunk + ids_l[j]
                    reason = f"file truncated: {len(raw)} of {size} bytes at offset {off_l[j]}"
                    raise self._corrupt(path, ci, reason)
                mv = memoryview(raw)
                pos = 0
                for q in range(j, k):
                    end = pos + nb_l[q]
                    place(g0 + q, decode(lay, mv[pos:end], path, base_chunk + ids_l[q]))
                    pos = end
                j = k

    def _shard_index(self, lay: _Layout, fd: int, path: str, shard: int) -> np.ndarray:
        st = os.fstat(fd)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._index_lock:
            hit = self._index_cache.get(shard)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        size = st.st_size
        if size < lay.index_nbytes:
            reason = f"shard file of {size} bytes is shorter than its index ({lay.index_nbytes})"
            raise self._corrupt_shard(lay, path, shard, reason)
        raw = os.pread(fd, lay.index_nbytes, size - lay.index_nbytes if lay.index_at_end else 0)
        try:
            if lay.index_crc:
                raw = _decode_crc32c(raw, None)
            index = np.frombuffer(raw, dtype="<u8").reshape(lay.shard_chunks, 2)
        except Exception as exc:
            reason = f"shard index unreadable ({exc})"
            raise self._corrupt_shard(lay, path, shard, reason) from exc
        present = ~((index[:, 0] == _MISSING) & (index[:, 1] == _MISSING))
        off, nb = index[present, 0], index[present, 1]
        if ((nb > size) | (off > size - np.minimum(nb, size))).any():
            reason = "shard index points past the end of the file (truncated file)"
            raise self._corrupt_shard(lay, path, shard, reason)
        with self._index_lock:
            cache = self._index_cache
            cache[shard] = (stamp, index)
            while len(cache) > self.index_cache_size:
                del cache[next(iter(cache))]
        return index

    def _decode(self, lay: _Layout, raw: Any, path: str, chunk_index: int) -> np.ndarray:
        try:
            buf = raw
            for dec, expected in lay.decode_steps:
                buf = dec(buf, expected)
            arr = np.frombuffer(buf, dtype=self.dtype)
            if arr.nbytes != lay.chunk_nbytes:
                raise ValueError(f"decoded {arr.nbytes} bytes, expected {lay.chunk_nbytes}")
        except Exception as exc:
            raise self._corrupt(path, chunk_index, str(exc)) from exc
        return arr.reshape(lay.chunk_shape) if len(lay.chunk_shape) > 1 else arr

    # --- remote stores ------------------------------------------------------------------------
    def _key(self, lay: _Layout, n: int) -> str:
        name = f"{lay.key_prefix}{n}{lay.key_suffix}"
        return f"{lay.directory}/{name}" if lay.directory else name

    def _read_remote(
        self, lay: _Layout, uniq: np.ndarray, place: Callable[[int, np.ndarray | None], None]
    ) -> None:
        """All the chunks of one read as concurrent ranged GETs, decoded as they arrive."""
        assert self._remote is not None
        requests: list[RangeRequest] = []
        # Per request: (chunk group, offset in the response, encoded size or -1: all, chunk).
        pieces: list[list[tuple[int, int, int, int]]] = []
        if not lay.shard_chunks:
            for g, ci in enumerate(uniq.tolist()):
                requests.append(RangeRequest(self._key(lay, ci)))
                pieces.append([(g, 0, -1, ci)])
        else:
            n = lay.shard_chunks
            shard = uniq // n
            inner = uniq - shard * n
            bounds = np.flatnonzero(np.diff(shard)) + 1
            groups = list(
                zip(
                    np.concatenate(([0], bounds)).tolist(),
                    np.concatenate((bounds, [uniq.size])).tolist(),
                )
            )
            indices = self._remote_indices(lay, [int(shard[s0]) for s0, _ in groups])
            for s0, s1 in groups:
                si = int(shard[s0])
                index = indices[si]
                if index is None:  # the shard object does not exist: every chunk is the fill
                    for g in range(s0, s1):
                        place(g, None)
                    continue
                self._plan_spans(lay, si, s0, inner[s0:s1], index, place, requests, pieces)
        for i, raw in self._remote.iter_fetch(requests):
            req = requests[i]
            if raw is None:
                if req.start is None:  # a chunk object never written: the fill value
                    place(pieces[i][0][0], None)
                    continue
                reason = "the shard object disappeared while it was being read"
                raise self._corrupt(
                    f"object {object_url(self.array.store, req.key)}", pieces[i][0][3], reason
                )
            if req.start is not None and len(raw) != int(req.end or 0) - req.start:
                ci = pieces[i][0][3]
                reason = (
                    f"object truncated: {len(raw)} of {int(req.end or 0) - req.start} bytes at "
                    f"offset {req.start} (the shard index points past the object's end)"
                )
                raise self._corrupt(f"object {object_url(self.array.store, req.key)}", ci, reason)
            mv = memoryview(raw)
            for g, a, nb, ci in pieces[i]:
                chunk = mv if nb < 0 else mv[a : a + nb]
                place(
                    g,
                    self._decode(lay, chunk, f"object {object_url(self.array.store, req.key)}", ci),
                )

    def _plan_spans(
        self,
        lay: _Layout,
        shard: int,
        g0: int,
        ids: np.ndarray,
        index: np.ndarray,
        place: Callable[[int, np.ndarray | None], None],
        requests: list[RangeRequest],
        pieces: list[list[tuple[int, int, int, int]]],
    ) -> None:
        """Ranged requests for the inner chunks ``ids`` of one shard, near ones coalesced."""
        off = index[ids, 0]
        nb = index[ids, 1]
        missing = (off == _MISSING) & (nb == _MISSING)
        for q in np.flatnonzero(missing).tolist():
            place(g0 + q, None)
        present = np.flatnonzero(~missing)
        if present.size == 0:
            return
        order = present[np.argsort(off[present], kind="stable")]
        off_l = off[order].astype(np.int64).tolist()
        nb_l = nb[order].astype(np.int64).tolist()
        q_l = order.tolist()
        key = self._key(lay, shard)
        base = shard * lay.shard_chunks
        ids_l = ids.tolist()
        start = end = -1
        span: list[tuple[int, int, int, int]] = []
        for q, o, b in zip(q_l, off_l, nb_l):
            if span and (o - end > _REMOTE_GAP_BYTES or o + b - start > _REMOTE_SPAN_BYTES):
                requests.append(RangeRequest(key, start, end))
                pieces.append(span)
                span = []
            if not span:
                start = end = o
            span.append((g0 + q, o - start, b, base + ids_l[q]))
            end = max(end, o + b)
        requests.append(RangeRequest(key, start, end))
        pieces.append(span)

    def _remote_indices(self, lay: _Layout, shards: list[int]) -> dict[int, np.ndarray | None]:
        """The shard indices of ``shards`` (None: no such object), fetched together when new.

        Cached for the reader's lifetime: remote objects have no cheap modification stamp, and
        the reader assumes the array is not rewritten while it is in use.
        """
        assert self._remote is not None
        found: dict[int, np.ndarray | None] = {}
        with self._index_lock:
            for si in shards:
                hit = self._index_cache.get(si)
                if hit is not None:
                    found[si] = hit[1]
        need = [si for si in shards if si not in found]
        if not need:
            return found
        nbytes = lay.index_nbytes
        where = (-nbytes, None) if lay.index_at_end else (0, nbytes)
        requests = [RangeRequest(self._key(lay, si), *where) for si in need]
        for si, raw in zip(need, self._remote.fetch(requests)):
            key = f"object {object_url(self.array.store, self._key(lay, si))}"
            if raw is None:
                found[si] = None
                continue
            if len(raw) < lay.index_nbytes:
                reason = f"object of {len(raw)} bytes is shorter than its index ({nbytes})"
                raise self._corrupt_shard(lay, key, si, reason)
            try:
                if lay.index_crc:
                    raw = bytes(_decode_crc32c(raw, None))
                index = np.frombuffer(raw, dtype="<u8").reshape(lay.shard_chunks, 2)
            except Exception as exc:
                reason = f"shard index unreadable ({exc})"
                raise self._corrupt_shard(lay, key, si, reason) from exc
            found[si] = index
        with self._index_lock:
            cache = self._index_cache
            for si in need:
                got = found[si]
                if got is not None:
                    cache[si] = ((0, 0, 0), got)
            while len(cache) > self.index_cache_size:
                del cache[next(iter(cache))]
        return found

    def _corrupt(self, path: str, chunk_index: int, reason: str) -> CorruptChunkError:
        # chunk_index counts chunks along the first axis (inner chunks for sharded arrays).
        msg = (
            f"chunk {chunk_index} of array {self.array.name!r} (in {self._where}) cannot be read "
            f"from {_named(path)}: {reason}. The store is damaged; re-create it or restore it "
            "from a backup."
        )
        return CorruptChunkError(msg)

    def _corrupt_shard(self, lay: _Layout, path: str, shard: int, reason: str) -> CorruptChunkError:
        first = shard * lay.shard_chunks
        msg = (
            f"shard {shard} (chunks {first}..{first + lay.shard_chunks - 1}) of array "
            f"{self.array.name!r} (in {self._where}) cannot be read from {_named(path)}: {reason}. "
            "The store is damaged; re-create it or restore it from a backup."
        )
        return CorruptChunkError(msg)


def _named(path: str) -> str:
    """``object <key>`` for remote objects, ``file <path>`` for local files."""
    return path if path.startswith("object ") else f"file {path}"
