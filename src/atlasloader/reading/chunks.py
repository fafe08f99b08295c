"""Direct chunk reads of Zarr arrays (local or remote): many small row ranges, little Python each.

zarr-python spends tens of microseconds of Python per chunk (selection planning, codec pipeline,
event-loop round trip) and serialises that work on the GIL, so reading small random runs of rows
tops out far below what the decompressors can do and gains nothing from threads. The loader only
needs contiguous ranges ``[lo, hi)`` along the first axis of a 1-D array (the ``data`` /
``indices`` of a CSR group) or of a row-chunked dense 2-D array. When :mod:`.layout` understands
the array, :class:`ChunkReader` finds the chunk files itself, ``os.pread``-s exactly the bytes of
the needed chunks (:mod:`.local_reads`) and decodes them with numcodecs (:mod:`.codecs`), which
releases the GIL, so threads decode in parallel; remote stores take the same plan as ranged GETs
(:mod:`.remote_reads`). Anything else
falls back to zarr-python: :attr:`ChunkReader.fast` says which path, ``fallback_reason`` why.

The reader assumes the array is not resized while in use (shape and chunking are read once).
Local chunk and shard files may be rewritten: shard indices are cached keyed by the file's inode,
size and modification time, and files are opened anew on every call.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import zarr

from ..errors import CorruptChunkError, InvalidArgumentError
from .codecs import _Unsupported
from .layout import _Layout, _layout
from .local_reads import LocalReads
from .remote import RemoteFetcher
from .remote_reads import RemoteReads

__all__ = ["ChunkReader"]


class ChunkReader(LocalReads, RemoteReads):
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
    remote ``FsspecStore`` / ``ObjectStore`` (concurrent ranged GETs, :mod:`.remote_reads`), Zarr
    format 3 with a little-endian ``bytes`` codec followed by any of ``blosc``, ``zstd``, ``gzip``,
    ``crc32c`` (optionally inside ``sharding_indexed`` with a ``bytes`` [+ ``crc32c``] index at
    either end), or Zarr format 2 with no filters, C order and a Blosc, Zstd, GZip, Zlib or no
    compressor (:mod:`.layout`). Everything else is read through zarr-python, identically.

    Missing chunk files and chunks a shard index marks as absent read as the fill value, as the
    Zarr specification says. A chunk that cannot be decoded, a shard index whose checksum does not
    match and a truncated file raise :class:`~atlasloader.errors.CorruptChunkError`.

    Uncompressed chunks (a ``bytes`` codec alone) are not decoded: only the bytes of the rows
    asked for are ``pread`` into the output, one call per piece (sizes checked against the index).

    Instances are thread safe: the only shared mutable state is the shard-index cache, updated
    under a lock (a lookup is one atomic dict read); files are opened per call. Decoding releases
    the GIL, so calls from several threads decode in parallel.
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
        def place(g: int, decoded: np.ndarray | None, first: int = 0) -> None:
            # Copy the pieces of chunk group g out of its decoded chunk (None: the fill value),
            # or out of its rows first.. when only those were fetched (uncompressed, remote).
            if decoded is None:
                for p in range(gs_list[g], ge_list[g]):
                    d = d_list[p]
                    out[d : d + b_list[p] - a_list[p]] = fill
                return
            if padded:
                decoded = decoded[(slice(None), *trailing)]
            for p in range(gs_list[g], ge_list[g]):
                d, a, b = d_list[p], a_list[p] - first, b_list[p] - first
                out[d : d + b - a] = decoded[a:b]

        if lay.raw and not padded and not lay.remote:
            self._read_raw(lay, uniq, gs_list, ge_list, a_list, b_list, d_list, out)
        elif lay.remote:
            windows = None
            if lay.raw and not padded:
                # Uncompressed: fetch only rows [min a, max b) of each chunk, not all of it.
                a_arr, b_arr = plo - chunk * c, phi - chunk * c
                windows = (
                    np.minimum.reduceat(a_arr, gstart).tolist(),
                    np.maximum.reduceat(b_arr, gstart).tolist(),
                )
            self._read_remote(lay, uniq, place, windows)
        elif lay.shard_chunks:
            self._read_shards(lay, uniq, place)
        else:
            self._read_chunk_files(lay, uniq, place)

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
