"""The read layout of converted matrices: chunk and shard sizes, array creation, shard writes.

The layout is the one the loader reads fastest: Zarr format 3, small row chunks (a random read
of ``chunk_rows`` rows touches one or two chunks) grouped into shards of a few MB so the store
has few files. The driver creates the arrays (metadata only); copying tasks then each write
whole shards with :func:`write_shards`, so no shard is written by two tasks and no chunk is
ever read back and rewritten.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from ..data._writers import ARRAY_ATTRS, INDPTR_CHUNK, create_zarr_array
from ..errors import StoreError
from .shards import ShardWriter
from .state import WINDOW, Spilled

CSR_ATTRS = {"encoding-type": "csr_matrix", "encoding-version": "0.1.0"}
DEFAULT_CHUNK_ROWS = 16  # rows the loader reads per random access
SHARD_BYTES = 16 << 20  # target uncompressed bytes of values per shard
MAX_SHARD_ROWS = 65_536  # keeps the shard index (16 bytes per chunk) small
BLOCK_BYTES = 64 << 20  # cap on bytes read per block, whatever block_rows says
MIN_CHUNK_ELEMS = 64  # very sparse rows: avoid chunks of a handful of values
INDPTR_SHARD_CHUNKS = 1024  # indptr shards of 2**20 pointers (8 MB) in chunks of 2**10


@dataclass(frozen=True)
class Options:
    """User settings of one conversion (validated by :func:`atlasloader.convert`)."""

    chunk_rows: int
    shard_rows: int | None
    codec: str | None
    block_rows: int
    # The store is uploaded to an object store afterwards: per-cell arrays are compressed too
    # (a loader's random runs then fetch few bytes; on local disk they are read in place).
    remote: bool = False


@dataclass(frozen=True)
class Plan:
    """How one matrix is chunked and read.

    ``chunk_elems``/``shard_elems`` are lengths along axis 0 of the stored arrays: rows for a
    dense matrix, values for CSR ``data``/``indices``.
    """

    chunk_rows: int
    shard_rows: int
    read_rows: int
    chunk_elems: int
    shard_elems: int


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def plan_matrix(
    format: str, shape: tuple[int, ...], dtype: np.dtype, nnz: int, opts: Options
) -> Plan:
    """Chunk, shard and block sizes of an output matrix (see :func:`atlasloader.convert`).

    ``nnz`` is the number of stored values (for dense: the size).
    """
    n = max(1, shape[0])
    itemsize = dtype.itemsize
    if format == "csr":
        mean_nnz = nnz / n
        value_bytes = mean_nnz * itemsize  # per row, in the data array
        read_bytes = mean_nnz * (itemsize + 8) + 8  # data, indices (maybe int64), indptr
    else:
        row_elems = int(np.prod(shape[1:], dtype=np.int64))
        value_bytes = read_bytes = max(1, row_elems) * itemsize
    chunk_rows = opts.chunk_rows
    read_rows = max(1, min(opts.block_rows, int(BLOCK_BYTES // max(1.0, read_bytes))))
    if opts.shard_rows is None:
        # The shard that straddles two read blocks is copied whole: keep it at most half a
        # block so memory stays about two to three blocks.
        rows = int(SHARD_BYTES // max(1.0, value_bytes))
        rows = min(rows, MAX_SHARD_ROWS, max(read_rows // 2, chunk_rows))
        shard_rows = max(chunk_rows, (rows // chunk_rows) * chunk_rows)
    else:
        shard_rows = _round_up(opts.shard_rows, chunk_rows)
    shard_rows = min(shard_rows, _round_up(n, chunk_rows))  # no shard larger than the array
    if format == "dense":
        return Plan(chunk_rows, shard_rows, read_rows, chunk_rows, shard_rows)
    chunk_elems = max(MIN_CHUNK_ELEMS, round(chunk_rows * nnz / n))
    shard_elems = chunk_elems * (shard_rows // chunk_rows)
    shard_elems = max(chunk_elems, min(shard_elems, _round_up(max(1, nnz), chunk_elems)))
    return Plan(chunk_rows, shard_rows, read_rows, chunk_elems, shard_elems)


def _indptr_layout(n_ptr: int) -> tuple[int, int | None]:
    """Small indptr chunks (the loader reads the pointers of its runs), in shards when long."""
    if n_ptr <= INDPTR_CHUNK:
        return INDPTR_CHUNK, None
    chunks = min(INDPTR_SHARD_CHUNKS, -(-n_ptr // INDPTR_CHUNK))
    return INDPTR_CHUNK, INDPTR_CHUNK * chunks


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


def release_memory() -> None:
    """Give freed block buffers back to the OS (glibc only; elsewhere a no-op).

    glibc keeps freed buffers of a few MB in its per-thread heaps instead of unmapping them;
    trimming after each matrix keeps them from adding to the peak of what comes next.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def index_dtype(n_cols: int) -> np.dtype:
    """CSR column indices: int32 unless there are 2**31 columns or more."""
    return np.dtype(np.int32 if n_cols < 2**31 else np.int64)


def create_matrix(
    root: Any, key: str, fmt: str, shape: tuple[int, ...], dtype: np.dtype, nnz: int,
    plan: Plan, opts: Options,
) -> None:  # fmt: skip
    """Create the arrays of ``root[key]`` (metadata only; the shards are written by tasks)."""
    parent_path, _, name = key.rpartition("/")
    parent = root[parent_path] if parent_path else root
    if fmt == "dense":
        rest = shape[1:]
        arr = create_zarr_array(
            parent, name, shape=shape, dtype=dtype, chunks=(plan.chunk_rows, *rest),
            shards=(plan.shard_rows, *rest), codec=opts.codec, zarr_format=3,
        )  # fmt: skip
        arr.attrs.update(ARRAY_ATTRS)
        return
    n, n_cols = shape
    group = parent.create_group(name)
    group.attrs.update({**CSR_ATTRS, "shape": [n, n_cols]})
    # data and indices share one layout, so a chunk of each covers the same rows.
    layout: dict[str, Any] = {
        "shape": (nnz,), "chunks": (plan.chunk_elems,), "shards": (plan.shard_elems,),
        "codec": opts.codec, "zarr_format": 3,
    }  # fmt: skip
    create_zarr_array(group, "data", dtype=dtype, **layout)
    # Sorted column indices compress far better bit-shuffled.
    create_zarr_array(group, "indices", dtype=index_dtype(n_cols), bitshuffle=True, **layout)
    ptr_chunk, ptr_shard = _indptr_layout(n + 1)
    create_zarr_array(
        group, "indptr", shape=(n + 1,), dtype=np.int64, chunks=(ptr_chunk,),
        shards=None if ptr_shard is None else (ptr_shard,), codec=_per_cell_codec(opts),
        zarr_format=3,
    )  # fmt: skip


def _per_cell_codec(opts: Options) -> str | None:
    """Codec of the row pointers: none on local disk, where the loader ``pread``-s the pointers
    of its runs in place (2.3 instead of 6.5 us per run); ``opts.codec`` for an object store,
    where bytes cost more than decoding."""
    return opts.codec if opts.remote else None


def write_indptr(root: Any, key: str, indptr: Spilled) -> None:
    """Write the row-pointer array of the CSR matrix ``root[key]`` (by the driver), in windows
    of whole shards read from the spilled pointers."""
    array = root[f"{key}/indptr"]
    writer = ShardWriter(array)
    unit = int((array.shards or array.chunks)[0])
    step = unit * max(1, WINDOW // unit)
    for a in range(0, indptr.length, step):
        b = min(indptr.length, a + step)
        writer[a:b] = indptr.read(a, b)


def open_output(store: str, path: str) -> ShardWriter:
    """A shard writer on the array ``path`` of the partial store ``store`` (in a task).

    Raises :class:`StoreError` if the partial store is gone: the conversion was abandoned
    (its driver failed and removed it), and writing would only re-create stray directories.
    """
    import zarr

    if not os.path.exists(os.path.join(store, "zarr.json")):
        msg = f"the partial store {store!r} was removed: its conversion was abandoned"
        raise StoreError(msg)
    return ShardWriter(zarr.open_array(store=store, path=path, mode="r+"))


def write_shards(writer: ShardWriter, first: int, unit: int, values: np.ndarray) -> None:
    """Write ``values`` as whole shards ``first, first + 1, ...`` of ``unit`` elements each."""
    start = first * unit
    writer[start : start + len(values)] = values
