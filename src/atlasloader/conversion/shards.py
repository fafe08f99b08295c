"""Encode whole shards of a Zarr v3 array directly, for arrays with many small inner chunks.

zarr-python's sharding pipeline spends ~100-200 µs of Python/asyncio work per inner chunk,
which dominates a conversion into 16-row chunks (tens of thousands of chunks per GB). A shard
is a simple format (the ``sharding_indexed`` codec of the Zarr v3 spec): the encoded inner
chunks back to back, then an index of ``(offset, nbytes)`` pairs (uint64, little-endian)
followed by its CRC32C. :class:`ShardWriter` builds that byte string with numcodecs (Blosc
releases the GIL) and stores it with the array's own store, so the result is exactly what zarr
writes and reads. Arrays whose codecs it does not recognise are written through zarr.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from typing import Any

import numpy as np

MAX_UINT_64 = np.uint64(2**64 - 1)  # index entry of an empty inner chunk


class ShardWriter:
    """``writer[start:stop] = values`` for whole shards along axis 0 of a Zarr v3 array.

    Parameters
    ----------
    array
        A Zarr array. The fast path needs sharding along axis 0 only (inner chunks and shards
        span the other axes whole), a ``bytes`` serializer optionally followed by Blosc or
        Zstd, and a ``bytes`` + ``crc32c`` index. Anything else is assigned through zarr.

    Notes
    -----
    ``start`` must be a multiple of the shard length and ``stop`` one too, or the array end:
    shards are never read back and merged (the caller, an ``AlignedAppender``, guarantees it).
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape: tuple[int, ...] = tuple(int(s) for s in array.shape)
        self._dtype = np.dtype(array.dtype).newbyteorder("<")
        self._compressor: Any = None
        self._fast = self._configure()

    @property
    def fast(self) -> bool:
        """Whether shards are encoded here (True) or by zarr (False)."""
        return self._fast

    def _configure(self) -> bool:
        from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec

        meta = self.array.metadata
        if getattr(meta, "zarr_format", 2) != 3 or len(meta.codecs) != 1:
            return False
        sharding = meta.codecs[0]
        if not isinstance(sharding, ShardingCodec):
            return False
        shard = tuple(int(s) for s in meta.chunk_grid.chunk_shape)
        inner = tuple(int(s) for s in sharding.chunk_shape)
        # Only row sharding: then an inner chunk is a contiguous run of rows of a C array.
        if shard[1:] != self.shape[1:] or inner[1:] != self.shape[1:] or shard[0] % inner[0]:
            return False
        codecs = list(sharding.codecs)
        index = list(sharding.index_codecs)
        if not codecs or not isinstance(codecs[0], BytesCodec):
            return False
        if len(index) != 2 or not isinstance(index[0], BytesCodec):
            return False
        if not isinstance(index[1], Crc32cCodec):
            return False
        for serializer in (codecs[0], index[0]):
            endian = getattr(serializer, "endian", None)
            if endian is not None and getattr(endian, "value", endian) != "little":
                return False
        if len(codecs) > 2:
            return False
        if len(codecs) == 2:
            import numcodecs

            codec = codecs[1]
            if isinstance(codec, BloscCodec):
                shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[codec.shuffle.value]
                self._compressor = numcodecs.Blosc(
                    cname=codec.cname.value, clevel=codec.clevel, shuffle=shuffle,
                    blocksize=codec.blocksize, typesize=codec.typesize or self._dtype.itemsize,
                )  # fmt: skip
            elif isinstance(codec, ZstdCodec):
                self._compressor = numcodecs.Zstd(level=codec.level, checksum=codec.checksum)
            else:
                return False
        self._fill = np.asarray(self.array.fill_value if self.array.fill_value is not None else 0)
        self._shard_rows = shard[0]
        self._chunk_rows = inner[0]
        self._index_at_start = sharding.index_location.value == "start"
        return True

    def resize(self, shape: tuple[int, ...]) -> None:
        self.array.resize(shape)
        self.shape = tuple(int(s) for s in shape)

    def __setitem__(self, key: slice, values: np.ndarray) -> None:
        if not self._fast:
            self.array[key] = values
            return
        start, stop = int(key.start or 0), int(key.stop if key.stop is not None else self.shape[0])
        if start % self._shard_rows or (stop % self._shard_rows and stop != self.shape[0]):
            self.array[key] = values  # not whole shards: let zarr merge with stored data
            return
        values = np.ascontiguousarray(values, dtype=self._dtype)
        for lo in range(start, stop, self._shard_rows):
            hi = min(stop, lo + self._shard_rows)
            self._store(lo // self._shard_rows, self._encode(values[lo - start : hi - start]))

    def _encode(self, rows: np.ndarray) -> bytes:
        chunk = self._chunk_rows
        n_inner = self._shard_rows // chunk
        index = np.full((n_inner, 2), MAX_UINT_64, dtype="<u8")
        index_bytes = 16 * n_inner + 4
        offset = index_bytes if self._index_at_start else 0
        parts: list[Any] = []
        for j, lo in enumerate(range(0, len(rows), chunk)):
            piece = rows[lo : lo + chunk]
            if len(piece) < chunk:
                # Edge chunks are stored full size, padded with the fill value.
                padded = np.full((chunk, *rows.shape[1:]), self._fill, dtype=self._dtype)
                padded[: len(piece)] = piece
                piece = padded
            data = piece.data if self._compressor is None else self._compressor.encode(piece)
            size = memoryview(data).nbytes
            parts.append(data)
            index[j] = (offset, size)
            offset += size
        import google_crc32c

        raw_index = index.tobytes()
        crc = np.uint32(google_crc32c.value(raw_index)).astype("<u4").tobytes()
        if self._index_at_start:
            return b"".join([raw_index, crc, *parts])
        return b"".join([*parts, raw_index, crc])

    def _store(self, shard: int, payload: bytes) -> None:
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        key = self.array.metadata.encode_chunk_key((shard,) + (0,) * (len(self.shape) - 1))
        path = f"{self.array.path}/{key}" if self.array.path else key
        buffer = default_buffer_prototype().buffer.from_bytes(payload)
        sync(self.array.store.set(path, buffer))


class ShardAppender:
    """Append rows along axis 0 and write them as whole shards, copying at most one shard.

    Like :class:`atlasloader.data._writers.AlignedAppender`, but without concatenating the
    pending rows with each new block: whole shards are written straight from views of the
    appended block, and only the shard that straddles two blocks is assembled. Memory is then
    about two blocks (the one being written and the one being read) instead of three.

    Parameters
    ----------
    writer
        Where rows go: ``writer[start:stop] = values`` (a :class:`ShardWriter`).
    unit
        Rows per shard (for CSR ``data``/``indices``: values per shard).
    executor
        Runs the writes; at most one is in flight per appender. ``None`` writes inline.
    """

    def __init__(self, writer: Any, unit: int, executor: Executor | None = None) -> None:
        self.writer = writer
        self.unit = max(1, int(unit))
        self.executor = executor
        self.written = 0  # rows handed to writes so far
        self._head: list[np.ndarray] = []  # fewer than `unit` rows not yet written
        self._n_head = 0
        self._in_flight: Future[None] | None = None

    def append(self, values: np.ndarray) -> None:
        if not len(values):
            return
        pieces: list[np.ndarray] = []
        if self._n_head:
            need = self.unit - self._n_head
            if len(values) < need:
                self._head.append(values.copy())  # the caller may reuse its buffer
                self._n_head += len(values)
                return
            pieces.append(np.concatenate([*self._head, values[:need]]))
            self._head, self._n_head = [], 0
            values = values[need:]
        whole = (len(values) // self.unit) * self.unit
        if whole:
            pieces.append(values[:whole])
        if whole < len(values):
            self._head, self._n_head = [values[whole:].copy()], len(values) - whole
        self._submit(pieces)

    def close(self) -> None:
        """Write the last (partial) shard and wait for every write, raising its error."""
        if self._n_head:
            tail = self._head[0] if len(self._head) == 1 else np.concatenate(self._head)
            self._head, self._n_head = [], 0
            self._submit([tail])
        self._wait()

    def _wait(self) -> None:
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result()

    def _submit(self, pieces: list[np.ndarray]) -> None:
        if not pieces:
            return
        start = self.written
        self.written += sum(len(p) for p in pieces)
        self._wait()
        if self.executor is None:
            self._write(start, pieces)
        else:
            self._in_flight = self.executor.submit(self._write, start, pieces)

    def _write(self, start: int, pieces: list[np.ndarray]) -> None:
        for piece in pieces:
            self.writer[start : start + len(piece)] = piece
            start += len(piece)
