"""Write matrices streamed from a :class:`~._convert_source.SourceMatrix` into the read layout.

The layout is the one the loader reads fastest: Zarr format 3, small row chunks (a random read
of ``chunk_rows`` rows touches one or two chunks) grouped into shards of a few MB so the store
has few files. Rows are read ``read_rows`` at a time and written only as whole shards (with
:class:`~atlasloader.data._writers.AlignedAppender`), so no chunk is read back and rewritten
and memory stays bounded by a few blocks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from ..data._writers import ARRAY_ATTRS, INDPTR_CHUNK, create_zarr_array
from ..errors import CorruptChunkError
from ._convert_shards import ShardAppender, ShardWriter
from ._convert_source import SourceMatrix

CSR_ATTRS = {"encoding-type": "csr_matrix", "encoding-version": "0.1.0"}
DEFAULT_CHUNK_ROWS = 16  # rows the loader reads per random access
SHARD_BYTES = 16 << 20  # target uncompressed bytes of values per shard
MAX_SHARD_ROWS = 65_536  # keeps the shard index (16 bytes per chunk) small
BLOCK_BYTES = 64 << 20  # cap on bytes read per block, whatever block_rows says
MIN_CHUNK_ELEMS = 64  # very sparse rows: avoid chunks of a handful of values
INDPTR_SHARD_CHUNKS = 16  # indptr shards of 2**20 pointers (8 MB)
_WRITERS = 3  # one write in flight per stored array (data, indices, indptr)


@dataclass(frozen=True)
class Options:
    """User settings of one conversion (validated by :func:`atlasloader.convert`)."""

    chunk_rows: int
    shard_rows: int | None
    codec: str | None
    block_rows: int


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


def plan_matrix(src: SourceMatrix, opts: Options) -> Plan:
    """Chunk, shard and block sizes for ``src`` (see :func:`atlasloader.convert`)."""
    n = max(1, src.n_rows)
    itemsize = src.dtype.itemsize
    if src.format == "csr":
        mean_nnz = src.nnz / n
        value_bytes = mean_nnz * itemsize  # per row, in the data array
        read_bytes = mean_nnz * (itemsize + 8) + 8  # data, indices (maybe int64), indptr
    else:
        row_elems = int(np.prod(src.shape[1:], dtype=np.int64))
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
    if src.format == "dense":
        return Plan(chunk_rows, shard_rows, read_rows, chunk_rows, shard_rows)
    chunk_elems = max(MIN_CHUNK_ELEMS, round(chunk_rows * src.nnz / n))
    shard_elems = chunk_elems * (shard_rows // chunk_rows)
    shard_elems = max(chunk_elems, min(shard_elems, _round_up(max(1, src.nnz), chunk_elems)))
    return Plan(chunk_rows, shard_rows, read_rows, chunk_elems, shard_elems)


def _indptr_layout(n_ptr: int) -> tuple[int, int | None]:
    """indptr is read whole by the loader: large chunks, a few shards when it is long."""
    if n_ptr <= INDPTR_CHUNK:
        return INDPTR_CHUNK, None
    chunks = min(INDPTR_SHARD_CHUNKS, -(-n_ptr // INDPTR_CHUNK))
    return INDPTR_CHUNK, INDPTR_CHUNK * chunks


def write_matrix(
    parent: Any,
    name: str,
    src: SourceMatrix,
    opts: Options,
    advance: Callable[[int], None] | None = None,
) -> Plan:
    """Stream ``src`` into ``parent[name]`` (a CSR group or a dense array); return its plan.

    Parameters
    ----------
    parent
        Destination Zarr v3 group.
    name
        Name of the new element in ``parent``.
    src
        The matrix to copy.
    opts
        Conversion settings.
    advance
        Called with the number of rows after each block (progress display).
    """
    plan = plan_matrix(src, opts)
    # The pool's exit waits for writes still in flight, so after an error nothing writes into
    # a directory the caller is about to delete.
    with ThreadPoolExecutor(_WRITERS, thread_name_prefix="atlasloader-convert") as pool:
        if src.format == "csr":
            _write_csr(parent, name, src, opts, plan, pool, advance)
        else:
            _write_dense(parent, name, src, opts, plan, pool, advance)
    release_memory()
    return plan


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


def _blocks(n: int, rows: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + rows)) for s in range(0, n, rows)]


def _write_dense(
    parent: Any,
    name: str,
    src: SourceMatrix,
    opts: Options,
    plan: Plan,
    pool: ThreadPoolExecutor,
    advance: Callable[[int], None] | None,
) -> None:
    rest = src.shape[1:]
    arr = create_zarr_array(
        parent, name, shape=src.shape, dtype=src.dtype, chunks=(plan.chunk_rows, *rest),
        shards=(plan.shard_rows, *rest), codec=opts.codec, zarr_format=3,
    )  # fmt: skip
    arr.attrs.update(ARRAY_ATTRS)
    out = ShardAppender(ShardWriter(arr), plan.shard_rows, pool)
    for start, stop in _blocks(src.n_rows, plan.read_rows):
        out.append(src.read_dense(start, stop).astype(src.dtype, copy=False))
        if advance is not None:
            advance(stop - start)
    out.close()


def _write_csr(
    parent: Any,
    name: str,
    src: SourceMatrix,
    opts: Options,
    plan: Plan,
    pool: ThreadPoolExecutor,
    advance: Callable[[int], None] | None,
) -> None:
    n, n_cols = src.shape
    group = parent.create_group(name)
    group.attrs.update({**CSR_ATTRS, "shape": [n, n_cols]})
    index_dtype = np.dtype(np.int32 if n_cols < 2**31 else np.int64)
    # data and indices share one layout, so a chunk of each covers the same rows.
    layout: dict[str, Any] = {
        "shape": (src.nnz,), "chunks": (plan.chunk_elems,), "shards": (plan.shard_elems,),
        "codec": opts.codec, "zarr_format": 3,
    }  # fmt: skip
    data = create_zarr_array(group, "data", dtype=src.dtype, **layout)
    # Sorted column indices compress far better bit-shuffled.
    indices = create_zarr_array(group, "indices", dtype=index_dtype, bitshuffle=True, **layout)
    ptr_chunk, ptr_shard = _indptr_layout(n + 1)
    indptr = create_zarr_array(
        group, "indptr", shape=(n + 1,), dtype=np.int64, chunks=(ptr_chunk,),
        shards=None if ptr_shard is None else (ptr_shard,), codec=opts.codec, zarr_format=3,
    )  # fmt: skip
    out_data = ShardAppender(ShardWriter(data), plan.shard_elems, pool)
    out_indices = ShardAppender(ShardWriter(indices), plan.shard_elems, pool)
    out_indptr = ShardAppender(ShardWriter(indptr), ptr_shard or ptr_chunk, pool)
    out_indptr.append(np.zeros(1, dtype=np.int64))
    offset = 0
    for start, stop in _blocks(n, plan.read_rows):
        ptr, block_data, block_indices = src.read_csr(start, stop)
        count = int(ptr[-1])
        if len(block_data) != count or len(block_indices) != count or offset + count > src.nnz:
            msg = (
                f"{src.where} is inconsistent: rows {start}:{stop} point to {count} values "
                f"but {len(block_data)} data / {len(block_indices)} indices were read "
                f"(total stored {src.nnz}); the input is corrupt"
            )
            raise CorruptChunkError(msg)
        out_data.append(block_data.astype(src.dtype, copy=False))
        out_indices.append(block_indices.astype(index_dtype, copy=False))
        out_indptr.append(ptr[1:] + offset)
        offset += count
        if advance is not None:
            advance(stop - start)
    for appender in (out_data, out_indices, out_indptr):
        appender.close()
    if offset != src.nnz:
        msg = f"{src.where} is inconsistent: indptr ends at {offset}, expected {src.nnz} values"
        raise CorruptChunkError(msg)
