"""Low-level writers for the synthetic atlas: codecs, array creation and aligned appends.

The atlas generator produces rows tile by tile; these helpers turn that stream into writes of
whole chunks (or whole shards) so that no stored chunk is ever read back and rewritten.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import pandas as pd

from ._model import AtlasModel

ARRAY_ATTRS = {"encoding-type": "array", "encoding-version": "0.2.0"}
ROOT_ATTRS = {"encoding-type": "anndata", "encoding-version": "0.1.0"}
# Elements anndata expects in every store, written empty.
EMPTY_ELEMS = ("layers", "obsm", "obsp", "varm", "varp", "uns")
CODECS = ("lz4", "zstd", None)
# h5py ships no lz4/zstd filter: use the nearest built-in one (fast 'lzf', strong 'gzip').
H5_CODECS = {"lz4": "lzf", "zstd": "gzip", None: None}
# Row pointers per indptr chunk: small, so that a loader reading the pointers of a buffer's
# random runs decodes 8 KB per run, not the whole array (see store/matrix.py). 1024 rather than
# 4096 pointers: 5.9 instead of 8.7 us per run at 10^7 cells; smaller chunks cost more again.
INDPTR_CHUNK = 1 << 10
_WORKERS = max(1, min(4, os.cpu_count() or 1))  # tile-generating threads


class AlignedAppender:
    """Append along axis 0 of an array, writing only whole multiples of ``unit`` rows.

    Rows are buffered until at least ``min_flush`` are pending; then the largest whole number
    of units is written and the rest kept for the next call. :meth:`close` writes the tail.

    Parameters
    ----------
    array
        A Zarr array or h5py dataset.
    unit
        Write granularity in rows (the chunk length, or the shard length when sharded).
    min_flush
        Rows to gather before writing; bounds memory and amortises per-write overhead.
    grow
        Resize ``array`` before each write (its final length is not known in advance).
    executor
        Where writes run (compression and I/O overlap with generation); at most one write
        per appender is in flight, so memory stays bounded. ``None`` writes inline.
    """

    def __init__(
        self,
        array: Any,
        unit: int,
        min_flush: int,
        *,
        grow: bool = False,
        executor: Executor | None = None,
    ) -> None:
        self.array = array
        self.unit = max(1, int(unit))
        self.min_flush = max(self.unit, int(min_flush))
        self.grow = grow
        self.executor = executor
        self.written = 0
        self._pending: list[np.ndarray] = []
        self._n_pending = 0
        self._in_flight: Future[None] | None = None

    def append(self, values: np.ndarray) -> None:
        if len(values):
            self._pending.append(values)
            self._n_pending += len(values)
        if self._n_pending >= self.min_flush:
            self._flush(final=False)

    def close(self) -> None:
        """Write what is pending and wait for every write (raising its error, if any)."""
        if self._n_pending:
            self._flush(final=True)
        self._wait()

    def _wait(self) -> None:
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result()

    def _flush(self, *, final: bool) -> None:
        buf = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        n = len(buf) if final else (len(buf) // self.unit) * self.unit
        start, end = self.written, self.written + n
        # Copy the remainder so the large concatenated buffer is freed once written.
        rest = buf[n:].copy()
        self._pending = [rest] if len(rest) else []
        self._n_pending = len(rest)
        self.written = end
        self._wait()
        if self.executor is None:
            self._write(start, end, buf[:n])
        else:
            self._in_flight = self.executor.submit(self._write, start, end, buf[:n])

    def _write(self, start: int, end: int, values: np.ndarray) -> None:
        if self.grow and self.array.shape[0] < end:
            self.array.resize((end, *self.array.shape[1:]))
        self.array[start:end] = values


def zarr_compressors(codec: str | None, zarr_format: int, *, bitshuffle: bool = False) -> Any:
    """Compressor argument for ``zarr.Group.create_array``.

    ``bitshuffle`` suits sorted small integers (CSR indices); byte shuffle suits floats.
    """
    if codec is None:
        return None
    if zarr_format == 3:
        from zarr.codecs import BloscCodec, ZstdCodec

        if codec == "lz4":
            shuffle: Literal["shuffle", "bitshuffle"] = "bitshuffle" if bitshuffle else "shuffle"
            return (BloscCodec(cname="lz4", clevel=3, shuffle=shuffle),)
        return (ZstdCodec(level=3),)
    import numcodecs

    if codec == "lz4":
        mode = numcodecs.Blosc.BITSHUFFLE if bitshuffle else numcodecs.Blosc.SHUFFLE
        return numcodecs.Blosc(cname="lz4", clevel=3, shuffle=mode)
    return numcodecs.Zstd(level=3)


def create_zarr_array(
    group: Any,
    name: str,
    *,
    shape: tuple[int, ...],
    dtype: Any,
    chunks: tuple[int, ...],
    shards: tuple[int, ...] | None,
    codec: str | None,
    zarr_format: int,
    bitshuffle: bool = False,
) -> Any:
    kwargs: dict[str, Any] = {
        "shape": shape,
        "dtype": dtype,
        "chunks": chunks,
        "compressors": zarr_compressors(codec, zarr_format, bitshuffle=bitshuffle),
        "fill_value": 0,
    }
    if shards is not None:
        kwargs["shards"] = shards
    return group.create_array(name, **kwargs)


def create_h5_dataset(
    group: Any,
    name: str,
    *,
    shape: tuple[int, ...],
    dtype: Any,
    chunks: tuple[int, ...],
    codec: str | None,
    grow: bool,
) -> Any:
    compression = H5_CODECS[codec]
    # A fixed-size HDF5 dataset cannot have chunks longer than itself.
    chunks = tuple(max(1, c if grow else min(c, s)) for c, s in zip(chunks, shape))
    return group.create_dataset(
        name,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        maxshape=(None, *shape[1:]) if grow else shape,
        compression=compression,
        shuffle=compression is not None,
    )


def stream_x(
    model: AtlasModel, x: dict[str, AlignedAppender], dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """Generate every tile into the appenders; return ``(label codes, n_counts)``.

    Tiles are generated by a few threads (numpy releases the GIL) and consumed in order; the
    look-ahead window is small so memory stays bounded. Writes go to one writer thread.
    """
    labels = np.empty(model.n_cells, dtype=np.int32)
    n_counts = np.empty(model.n_cells, dtype=np.float64)
    nnz = np.zeros(1, dtype=np.int64)  # stored values so far (the indptr offset)
    dense = "indptr" not in x
    if not dense:
        x["indptr"].append(nnz.copy())

    def consume(k: int, result: tuple[np.ndarray, ...]) -> None:
        lab, lib, *block = result
        rows = slice(k * model.tile_rows, k * model.tile_rows + len(lab))
        labels[rows], n_counts[rows] = lab, lib
        if dense:
            x["X"].append(block[0])
            return
        row_nnz, indices, data = block
        x["indptr"].append(nnz + np.cumsum(row_nnz))
        x["indices"].append(indices)
        x["data"].append(data)
        nnz[0] += len(data)

    with ThreadPoolExecutor(_WORKERS) as pool, ThreadPoolExecutor(1) as writer:
        for appender in x.values():
            appender.executor = writer
        window: deque[tuple[int, Future[tuple[np.ndarray, ...]]]] = deque()
        for k in range(model.n_tiles):
            window.append((k, pool.submit(model.tile, k, dtype, dense)))
            if len(window) > _WORKERS:
                j, future = window.popleft()
                consume(j, future.result())
        while window:
            j, future = window.popleft()
            consume(j, future.result())
        for appender in x.values():
            appender.close()
    return labels, n_counts


def obs_var(
    model: AtlasModel, labels: np.ndarray, n_counts: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_batches, n_labels = len(model.bounds) - 1, model.markers.shape[0]
    batch = np.repeat(np.arange(n_batches), np.diff(model.bounds))
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical.from_codes(batch, [f"batch_{i}" for i in range(n_batches)]),
            "labels": pd.Categorical.from_codes(labels, [f"label_{i}" for i in range(n_labels)]),
            "n_counts": n_counts,
        },
        index=pd.Index([f"cell_{i}" for i in range(model.n_cells)]),
    )
    var = pd.DataFrame(index=pd.Index([f"gene_{i}" for i in range(model.n_genes)]))
    return obs, var


def write_metadata(
    root: Any, model: AtlasModel, labels: np.ndarray, n_counts: np.ndarray, *, zarr_v3: bool
) -> None:
    """Write obs, var, the empty elements and (last) the root AnnData attributes."""
    from anndata.io import write_elem

    # Explicitly unsharded: the columns are small, and it silences anndata's notice that
    # automatic sharding is about to become its default.
    kwargs = {"shards": None} if zarr_v3 else {}
    obs, var = obs_var(model, labels, n_counts)
    write_elem(root, "obs", obs, dataset_kwargs=kwargs)
    write_elem(root, "var", var, dataset_kwargs=kwargs)
    for name in EMPTY_ELEMS:
        write_elem(root, name, {})
    # Written last: an interrupted run does not leave something that claims to be AnnData.
    root.attrs.update(ROOT_ATTRS)
