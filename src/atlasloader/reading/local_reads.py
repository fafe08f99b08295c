"""The local half of :class:`~.chunks.ChunkReader`: a read planned as ``pread`` calls on files.

Chunk files (unsharded arrays) are read whole; in a shard file, the inner chunks a read needs
are found in the shard's index (cached keyed by the file's inode, size and modification time,
since files may be rewritten) and read with one ``pread`` per span of chunks adjacent in the
file, at most ``_MAX_SPAN_BYTES`` each. The preads of a shard holding a few of the needed
chunks are planned in plain Python (:func:`_spans_scalar`), of one holding many with numpy
(:func:`_spans_vector`): a shuffled epoch of a big store touches one to three chunks per shard.
Uncompressed chunks are not decoded at all: :meth:`LocalReads._read_raw` ``pread``-s only the
rows asked for, straight into the output.

:class:`LocalReads` is a mixin of :class:`~.chunks.ChunkReader`, which supplies the shard-index
cache, the decoding and the error messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .codecs import _decode_crc32c
from .layout import _MISSING, _Layout, _shard_groups
from .parts import ReaderParts

if TYPE_CHECKING:
    pass

__all__ = ["LocalReads"]

# Largest single pread when coalescing consecutive inner chunks of a shard: big enough that the
# syscall cost vanishes, small enough that one call never holds a huge raw buffer.
_MAX_SPAN_BYTES = 4 << 20
# Shard groups of at most this many chunks plan their preads in plain Python (no numpy calls).
_SCALAR_GROUP = 8
_MISSING_INT = int(_MISSING)
# A span plan: span starts and ends, and per chunk its offset, size, missing flag and number.
_Spans = tuple[list[int], list[int], list[int], list[int], list[bool], list[int]]


class LocalReads(ReaderParts):
    """Reads of a :class:`~.chunks.ChunkReader` whose chunks are local files."""

    def _read_raw(
        self,
        lay: _Layout,
        uniq: np.ndarray,
        gs_list: list[int],
        ge_list: list[int],
        a_list: list[int],
        b_list: list[int],
        d_list: list[int],
        out: np.ndarray,
    ) -> None:
        """Uncompressed chunks: each piece ``pread`` straight into ``out``, no decoding.

        Chunk group ``g`` (chunk ``uniq[g]``) has pieces ``gs_list[g]:ge_list[g]``: its rows
        ``[a, b)`` go to rows ``d`` of ``out``. Only the bytes of the rows asked for are read.
        """
        row = lay.chunk_nbytes // lay.chunk_rows
        dest = out.reshape(-1).view(np.uint8).data
        fill = self._fill
        expected = lay.chunk_nbytes

        def fill_group(g: int) -> None:
            for p in range(gs_list[g], ge_list[g]):
                d = d_list[p]
                out[d : d + b_list[p] - a_list[p]] = fill

        def copy(fd: int, path: str, ci: int, base: int, g: int) -> None:
            for p in range(gs_list[g], ge_list[g]):
                at, n, d = base + a_list[p] * row, (b_list[p] - a_list[p]) * row, d_list[p] * row
                got = os.preadv(fd, [dest[d : d + n]], at)
                if got != n:
                    reason = f"file truncated: {got} of {n} bytes at offset {at}"
                    raise self._corrupt(path, ci, reason)

        def shard(si: int, s0: int, s1: int, inner: list[int], fd: int, path: str) -> None:
            item = self._shard_index(lay, fd, path, si).item
            for g in range(s0, s1):
                i = inner[g - s0]
                off, nb = item(i, 0), item(i, 1)
                if off == _MISSING_INT and nb == _MISSING_INT:
                    fill_group(g)
                    continue
                ci = si * lay.shard_chunks + i
                if nb != expected:
                    reason = f"uncompressed chunk of {nb} bytes, expected {expected}"
                    raise self._corrupt(path, ci, reason)
                copy(fd, path, ci, off, g)

        if lay.shard_chunks:
            self._each_shard(lay, uniq, fill_group, shard)
            return
        for g, ci in enumerate(uniq.tolist()):
            path = lay.path(ci)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                fill_group(g)  # never written: the fill value, as the spec says
                continue
            try:
                size = os.fstat(fd).st_size
                if size != expected:
                    reason = f"uncompressed chunk file of {size} bytes, expected {expected}"
                    raise self._corrupt(path, ci, reason)
                copy(fd, path, ci, 0, g)
            finally:
                os.close(fd)

    def _read_chunk_files(
        self, lay: _Layout, uniq: np.ndarray, place: Callable[[int, np.ndarray | None], None]
    ) -> None:
        for g, ci in enumerate(uniq.tolist()):
            path = lay.path(ci)
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
        def shard(si: int, s0: int, s1: int, inner: list[int], fd: int, path: str) -> None:
            index = self._shard_index(lay, fd, path, si)
            self._read_spans(lay, fd, path, si, s0, inner, index, place)

        self._each_shard(lay, uniq, lambda g: place(g, None), shard)

    def _each_shard(
        self,
        lay: _Layout,
        uniq: np.ndarray,
        missing: Callable[[int], None],
        body: Callable[[int, int, int, list[int], int, str], None],
    ) -> None:
        """``body(shard, g0, g1, inner, fd, path)`` for each shard file holding the sorted chunks
        ``uniq`` (chunk groups ``g0:g1``, their inner numbers ``inner``), the file open meanwhile;
        ``missing(g)`` for every group of a shard that has no file (the fill value)."""
        inner, groups = _shard_groups(uniq, lay.shard_chunks)
        inner_l = inner.tolist()
        for si, s0, s1 in groups:
            path = lay.path(si)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                for g in range(s0, s1):
                    missing(g)
                continue
            try:
                body(si, s0, s1, inner_l[s0:s1], fd, path)
            finally:
                os.close(fd)

    def _read_spans(
        self,
        lay: _Layout,
        fd: int,
        path: str,
        shard: int,
        g0: int,
        ids: list[int],
        index: np.ndarray,
        place: Callable[[int, np.ndarray | None], None],
    ) -> None:
        if len(ids) <= _SCALAR_GROUP:
            spans = _spans_scalar(ids, index)
        else:
            spans = _spans_vector(np.asarray(ids, dtype=np.int64), index)
        span_starts, span_ends, off_l, nb_l, miss_l, ids_l = spans
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
        hit = self._index_cache.get(shard)  # one dict lookup: atomic, no lock needed to read
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


def _spans_vector(ids: np.ndarray, index: np.ndarray) -> _Spans:
    """Spans of chunks ``ids`` of a shard (sorted inner numbers), from its ``index``: one pread
    per span of chunks adjacent both in number and in the file; a missing chunk is a span of its
    own. Returns span starts and ends (positions in ``ids``) and, per chunk, its offset, size,
    missing flag and number, as Python lists."""
    off = index[ids, 0]
    nb = index[ids, 1]
    missing = (off == _MISSING) & (nb == _MISSING)
    off = np.where(missing, 0, off).astype(np.int64)
    nb = np.where(missing, 0, nb).astype(np.int64)
    joins = (np.diff(ids) == 1) & (off[1:] == off[:-1] + nb[:-1]) & ~missing[1:] & ~missing[:-1]
    breaks = np.flatnonzero(~joins) + 1
    return (
        np.concatenate(([0], breaks)).tolist(),
        np.concatenate((breaks, [ids.size])).tolist(),
        off.tolist(),
        nb.tolist(),
        missing.tolist(),
        ids.tolist(),
    )


def _spans_scalar(ids: list[int], index: np.ndarray) -> _Spans:
    """:func:`_spans_vector` for a few chunks, in plain Python: a shuffled epoch of a big store
    touches one to three chunks per shard, where a dozen numpy calls would cost more than the
    read itself."""
    item = index.item
    off_l, nb_l, miss_l = [], [], []
    starts, ends = [0], []
    prev_id, prev_end, prev_missing = -2, -1, True
    for k, i in enumerate(ids):
        off, nb = item(i, 0), item(i, 1)
        missing = off == _MISSING_INT and nb == _MISSING_INT
        if missing:
            off = nb = 0
        if k and (missing or prev_missing or i != prev_id + 1 or off != prev_end):
            ends.append(k)
            starts.append(k)
        off_l.append(off)
        nb_l.append(nb)
        miss_l.append(missing)
        prev_id, prev_end, prev_missing = i, off + nb, missing
    ends.append(len(ids))
    return starts, ends, off_l, nb_l, miss_l, ids
