"""Write a matrix in a random row order with bounded memory: scatter to buckets, then gather.

A random permutation of rows cannot be written shard by shard straight from the input
without reading the input once per shard. Instead the conversion makes two passes:

1. *scatter*: each task reads a block of consecutive input rows (one sequential read) and
   appends each row to the *bucket* of the output range it lands in: a temporary file per
   (task, bucket) under ``<partial store>/__shuffle__``, so no two tasks write one file;
2. *gather*: each task loads one bucket (a few shards' worth of rows, from every scatter
   task), puts its rows in output order and writes its shards.

Buckets are ranges of output rows (dense) or of output values (CSR, whose shards are ranges
of values): a CSR row whose values straddle two buckets is sent to both. Memory is a block
per scatter task and a bucket per gather task; the temporary files take about the size of the
matrix on disk until their bucket is written.
"""

from __future__ import annotations

import itertools
import os
import shutil
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CorruptChunkError
from .sink import BLOCK_BYTES, index_dtype, open_output, release_memory, write_shards
from .state import Spilled
from .tasks import Graph, read_csr, read_dense

if TYPE_CHECKING:
    from .plan import MatrixJob
    from .sink import Plan

TMP_DIR = "__shuffle__"


def _save(path: str, arrays: list[np.ndarray]) -> None:
    # Several .npy records back to back: no archive, no checksum, one sequential write.
    with open(path, "wb") as f:
        for a in arrays:
            np.save(f, a, allow_pickle=False)


def _load(path: str, n: int) -> list[np.ndarray]:
    with open(path, "rb") as f:
        return [np.load(f, allow_pickle=False) for _ in range(n)]


def take_ranges(ptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Positions of the values of ``rows`` (in that order) in arrays indexed by ``ptr``."""
    starts = ptr[rows]
    lengths = ptr[rows + 1] - starts
    total = int(lengths.sum())
    before = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return np.repeat(starts - before, lengths) + np.arange(total, dtype=np.int64)


def scatter(
    tmp: str, job: MatrixJob, k: int, start: int, stop: int, inverse: Spilled,
    indptr: Spilled | None, bucket: int,
) -> int:  # fmt: skip
    """Send rows ``start:stop`` of part ``k`` to the files of the buckets they land in.

    ``inverse`` gives each input row's output row; for CSR, ``indptr`` (output row pointers)
    where each row's values start in the output.
    """
    part = job.parts[k]
    g = int(job.offsets[k]) + start
    pos = inverse.read(g, g + stop - start)
    lo = None if indptr is None else indptr.take(pos)
    name = f"{k:05d}-{start:012d}.npy"
    if job.format == "dense":
        block = read_dense(part, start, stop, job.dtype)
        ids = pos // bucket
        order = np.argsort(ids, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(ids[order])) + 1):
            _save(_bucket_file(tmp, int(ids[group[0]]), name), [pos[group], block[group]])
        release_memory()
        return len(pos)
    assert lo is not None
    ptr, data, indices = read_csr(part, start, stop, job.dtype, job.shape[1])
    counts = np.diff(ptr)
    rows = np.flatnonzero(counts)  # rows without values belong to no bucket
    first = lo[rows] // bucket
    last = (lo[rows] + counts[rows] - 1) // bucket
    # (row, bucket) pairs: nearly every row is in one bucket, a few straddle two or more.
    pair_rows = [rows]
    pair_buckets = [first]
    for extra in range(1, int((last - first).max(initial=0)) + 1):
        more = last - first >= extra
        pair_rows.append(rows[more])
        pair_buckets.append(first[more] + extra)
    sel, buckets = np.concatenate(pair_rows), np.concatenate(pair_buckets)
    order = np.argsort(buckets, kind="stable")
    sel, buckets = sel[order], buckets[order]
    take = take_ranges(ptr, sel)
    data, indices = data[take], indices[take]
    del take
    n_sel = counts[sel]
    val_cuts = np.concatenate([[0], np.cumsum(n_sel)])
    cuts = np.concatenate([[0], np.flatnonzero(np.diff(buckets)) + 1, [len(sel)]])
    for a, b in itertools.pairwise(cuts):
        va, vb = val_cuts[a], val_cuts[b]
        rows_b = sel[a:b]
        _save(
            _bucket_file(tmp, int(buckets[a]), name),
            [pos[rows_b], lo[rows_b], n_sel[a:b], data[va:vb], indices[va:vb]],
        )
    release_memory()
    return len(pos)


def _bucket_file(tmp: str, bucket: int, name: str) -> str:
    folder = os.path.join(tmp, f"{bucket:06d}")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)


def gather(
    store: str, tmp: str, job: MatrixJob, bucket: int, unit: int, start: int, stop: int,
    scattered: list[int],
) -> int:  # fmt: skip
    """Write output rows (dense) or values (CSR) ``start:stop`` from bucket ``bucket``.

    ``scattered`` (the scatter tasks' results) only orders this task after all of them.
    """
    folder = os.path.join(tmp, f"{bucket:06d}")
    files = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    where = f"{job.where}: shuffle bucket {bucket} ({folder!r})"
    if job.format == "dense":
        loaded = [_load(os.path.join(folder, f), 2) for f in files]
        pos = np.concatenate([x[0] for x in loaded]) if loaded else np.zeros(0, np.int64)
        order = np.argsort(pos)
        if not np.array_equal(pos[order], np.arange(start, stop)):
            raise CorruptChunkError(f"{where} does not hold rows {start}:{stop}; convert again")
        values = np.concatenate([x[1] for x in loaded])[order]
        del loaded
        write_shards(open_output(store, job.key), start // unit, unit, values)
    else:
        loaded = [_load(os.path.join(folder, f), 5) for f in files]
        pos, lo, counts, data, indices = (
            np.concatenate([x[i] for x in loaded]) if loaded else np.zeros(0, np.int64)
            for i in range(5)
        )
        del loaded
        order = np.argsort(pos)
        ptr = np.concatenate([[0], np.cumsum(counts)])
        take = take_ranges(ptr, order)
        data, indices = data[take], indices[take]
        del take
        lo, counts = lo[order], counts[order]
        first = int(lo[0]) if len(lo) else start
        contiguous = np.array_equal(lo[1:], lo[:-1] + counts[:-1])
        if not contiguous or first > start or first + len(data) < stop:
            raise CorruptChunkError(f"{where} does not hold values {start}:{stop}; convert again")
        a, b = start - first, stop - first
        data = data[a:b].astype(job.dtype, copy=False)
        indices = indices[a:b].astype(index_dtype(job.shape[1]), copy=False)
        write_shards(open_output(store, f"{job.key}/data"), start // unit, unit, data)
        write_shards(open_output(store, f"{job.key}/indices"), start // unit, unit, indices)
    shutil.rmtree(folder, ignore_errors=True)  # its rows are written: free the disk early
    release_memory()
    return stop - start


def shuffle_graph(
    store: str, tmp: str, job: MatrixJob, plan: Plan, inverse: Spilled,
    indptr: Spilled | None,
) -> Graph:  # fmt: skip
    """Scatter tasks (one per block of input rows), then one gather task per bucket.

    ``inverse[g]`` is the output row of the global input row ``g``; ``indptr`` the output row
    pointers (CSR).
    """
    graph = Graph()
    job_ref = graph.literal(job, "job")
    if job.format == "dense":
        unit, total = plan.shard_rows, job.shape[0]
        bucket = unit * max(1, plan.read_rows // unit)
    else:
        assert indptr is not None
        unit, total = plan.shard_elems, indptr.last()
        # A bucket holds about the values of one read block.
        per_value = job.dtype.itemsize + index_dtype(job.shape[1]).itemsize
        block = plan.read_rows * total / max(1, job.shape[0])
        bucket = unit * max(1, int(min(BLOCK_BYTES // per_value, block)) // unit)
    scattered = []
    for k, part in enumerate(job.parts):
        for a in range(0, part.n_rows, plan.read_rows):
            b = min(part.n_rows, a + plan.read_rows)
            args = (tmp, job_ref, k, a, b, inverse, indptr, bucket)
            scattered.append(graph.add(f"{job.where}: shuffling rows", scatter, *args))
    for i in range(-(-total // bucket)):
        start, stop = i * bucket, min(total, (i + 1) * bucket)
        graph.add(
            f"{job.where}: writing shards", gather, store, tmp, job_ref, i, unit, start, stop,
            scattered,
        )  # fmt: skip
    return graph
