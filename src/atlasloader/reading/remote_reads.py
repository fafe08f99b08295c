"""The remote half of :class:`~.chunks.ChunkReader`: a read planned as ranged GETs of objects.

On a remote store (``s3://``, ``gs://``, ``http(s)://`` through fsspec, or obstore) a read takes
the same plan as on local files: the chunks it needs become concurrent ranged requests fetched by
:class:`~.remote.RemoteFetcher`, each decoded as it arrives. Inner chunks of one shard closer than
``_REMOTE_GAP_BYTES`` in the object are coalesced into one request (the bytes in between are
discarded), up to ``_REMOTE_SPAN_BYTES`` per request; the shard indices a read needs are fetched
together and cached for the reader's lifetime (objects have no cheap modification stamp, and the
reader assumes the array is not rewritten while it is in use). A missing chunk object, or a chunk a
shard index marks as absent, reads as the fill value; a shard object that vanishes mid-read or is
shorter than its index says raises :class:`~atlasloader.errors.CorruptChunkError`.

:class:`RemoteReads` is a mixin of :class:`~.chunks.ChunkReader`, which supplies the fetcher,
the shard-index cache, the decoding and the error messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .codecs import _decode_crc32c
from .layout import _MISSING, _Layout, _shard_groups
from .parts import ReaderParts
from .remote import RangeRequest, RemoteFetcher, object_url

if TYPE_CHECKING:
    pass

__all__ = ["RemoteReads"]

# Inner chunks of one shard closer than this in the object are fetched with one ranged GET (the
# bytes in between are discarded; a request costs far more than 256 KiB on a link with tens of
# milliseconds of latency), up to _REMOTE_SPAN_BYTES per request.
_REMOTE_GAP_BYTES = 256 << 10
_REMOTE_SPAN_BYTES = 16 << 20


class RemoteReads(ReaderParts):
    """Reads of a :class:`~.chunks.ChunkReader` whose chunks are objects of a remote store."""

    _remote: RemoteFetcher | None  # supplied by ChunkReader

    def _read_remote(
        self,
        lay: _Layout,
        uniq: np.ndarray,
        place: Callable[..., None],
        windows: tuple[list[int], list[int]] | None = None,
    ) -> None:
        """All the chunks of one read as concurrent ranged GETs, decoded as they arrive.

        ``place(g, decoded[, first])`` receives chunk group ``g``. With ``windows`` (uncompressed
        chunks), only rows ``windows[0][g]:windows[1][g]`` of chunk group ``g`` are fetched and
        placed, with ``first`` their first row.
        """
        assert self._remote is not None
        requests: list[RangeRequest] = []
        # Per request: (chunk group, offset in the response, encoded size or -1: all, chunk).
        pieces: list[list[tuple[int, int, int, int]]] = []
        row = lay.chunk_nbytes // lay.chunk_rows
        if not lay.shard_chunks:
            for g, ci in enumerate(uniq.tolist()):
                if windows is None:
                    requests.append(RangeRequest(lay.key(ci)))
                    pieces.append([(g, 0, -1, ci)])
                else:
                    a, b = windows[0][g] * row, windows[1][g] * row
                    requests.append(RangeRequest(lay.key(ci), a, b))
                    pieces.append([(g, 0, b - a, ci)])
        else:
            inner, groups = _shard_groups(uniq, lay.shard_chunks)
            indices = self._remote_indices(lay, [si for si, _, _ in groups])
            for si, s0, s1 in groups:
                index = indices[si]
                if index is None:  # the shard object does not exist: every chunk is the fill
                    for g in range(s0, s1):
                        place(g, None)
                    continue
                self._plan_spans(lay, si, s0, inner[s0:s1], index, place, requests, pieces, windows)
        for i, raw in self._remote.iter_fetch(requests):
            req = requests[i]
            if raw is None:
                if req.start is None or not lay.shard_chunks:  # a chunk object never written
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
                if windows is not None:  # the rows asked for, uncompressed
                    rows = np.frombuffer(chunk, dtype=self.dtype).reshape(-1, *lay.chunk_shape[1:])
                    place(g, rows, windows[0][g])
                    continue
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
        windows: tuple[list[int], list[int]] | None = None,
    ) -> None:
        """Ranged requests for the inner chunks ``ids`` of one shard, near ones coalesced
        (with ``windows``, for the rows of each chunk that are asked for)."""
        off = index[ids, 0]
        nb = index[ids, 1]
        missing = (off == _MISSING) & (nb == _MISSING)
        for q in np.flatnonzero(missing).tolist():
            place(g0 + q, None)
        present = np.flatnonzero(~missing)
        if present.size == 0:
            return
        if windows is not None:
            wrong = present[nb[present] != lay.chunk_nbytes]
            if wrong.size:
                q = int(wrong[0])
                reason = f"uncompressed chunk of {int(nb[q])} bytes, expected {lay.chunk_nbytes}"
                where = f"object {object_url(self.array.store, lay.key(shard))}"
                raise self._corrupt(where, shard * lay.shard_chunks + int(ids[q]), reason)
            row = lay.chunk_nbytes // lay.chunk_rows
            first = np.array([windows[0][g0 + q] for q in present.tolist()], dtype=np.int64)
            last = np.array([windows[1][g0 + q] for q in present.tolist()], dtype=np.int64)
            off = off.astype(np.int64)
            nb = nb.astype(np.int64)
            off[present] += first * row
            nb[present] = (last - first) * row
        order = present[np.argsort(off[present], kind="stable")]
        off_l = off[order].astype(np.int64).tolist()
        nb_l = nb[order].astype(np.int64).tolist()
        q_l = order.tolist()
        key = lay.key(shard)
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
        requests = [RangeRequest(lay.key(si), *where) for si in need]
        for si, raw in zip(need, self._remote.fetch(requests)):
            key = f"object {object_url(self.array.store, lay.key(si))}"
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
