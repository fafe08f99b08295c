"""The copying tasks of :func:`atlasloader.convert`, and the dask graphs made of them.

Every task is a module-level function taking plain values (paths, keys, row ranges, small
numpy arrays, the frozen :class:`~.plan.MatrixJob`): it opens the input itself, reads
only the rows it needs, and writes whole shards of the output that no other task writes. So
tasks run the same on threads and on ``dask.distributed`` worker processes, and memory is
bounded by a task's rows, never by the input.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptChunkError, StoreError
from ..store.csr import select_columns
from .sink import index_dtype, open_output, release_memory, write_shards
from .source import Source
from .state import WINDOW, Spilled

if TYPE_CHECKING:
    from dask.delayed import Delayed

    from .plan import MatrixJob, Part
    from .sink import Plan

# A CSR row block: row pointers from 0 (int64), data, indices.
Csr = tuple[np.ndarray, np.ndarray, np.ndarray]
# Rows ``a:b`` of the input part ``k`` of a job.
Piece = tuple[int, int, int]


# --- reading ------------------------------------------------------------------------------------
def _open(source: Source, part: Part) -> Any:
    matrix = source.matrix(part.key, part.where)
    if matrix is None or matrix.format != part.format or matrix.n_rows != part.n_rows:
        msg = f"{part.where} changed while it was being converted; convert again"
        raise StoreError(msg)
    return matrix


def read_dense(part: Part, start: int, stop: int, dtype: np.dtype) -> np.ndarray:
    """Rows ``start:stop`` of a dense part, output columns only, as ``dtype``."""
    with Source(part.path) as source:
        block = _open(source, part).read_dense(start, stop)
    if part.columns is not None:
        block = block[:, part.columns]
    return block.astype(dtype, copy=False)


def _dense_block(matrix: Any, part: Part, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a dense part, restricted to the output's genes."""
    block = matrix.read_dense(start, stop)
    return block if part.columns is None else block[:, part.columns]


def read_csr(part: Part, start: int, stop: int, dtype: np.dtype, n_cols: int) -> Csr:
    """Rows ``start:stop`` of a part as CSR with output column indices, values as ``dtype``.

    Dense parts are made sparse (zeros dropped); CSR parts keep their stored values (explicit
    zeros included), minus the values of dropped genes.
    """
    idx_dtype = index_dtype(n_cols)
    with Source(part.path) as source:
        matrix = _open(source, part)
        if part.format == "dense":
            block = _dense_block(matrix, part, start, stop)
            rows, cols = np.nonzero(block)  # row-major: column indices sorted within rows
            ptr = np.zeros(len(block) + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows, minlength=len(block)), out=ptr[1:])
            return ptr, block[rows, cols].astype(dtype), cols.astype(idx_dtype)
        ptr, data, indices = matrix.read_csr(start, stop)
    if len(data) != ptr[-1] or len(indices) != ptr[-1]:
        msg = (
            f"{part.where} is inconsistent: rows {start}:{stop} point to {int(ptr[-1])} values "
            f"but {len(data)} data / {len(indices)} indices were read; the input is corrupt"
        )
        raise CorruptChunkError(msg)
    if part.remap is not None:
        ptr, data, indices = _remap(part, ptr, data, indices)
    return ptr, data.astype(dtype, copy=False), indices.astype(idx_dtype, copy=False)


def _remap(part: Part, ptr: np.ndarray, data: np.ndarray, indices: np.ndarray) -> Csr:
    assert part.remap is not None
    if len(indices) and (indices.min() < 0 or indices.max() >= len(part.remap)):
        msg = f"{part.where} has column indices outside its {len(part.remap)} genes"
        raise CorruptChunkError(msg)
    ptr, data, new = select_columns(ptr, data, indices, part.remap)
    if part.sort:
        import scipy.sparse as sp

        n_cols = int(part.remap.max()) + 1 if len(part.remap) else 0
        m = sp.csr_matrix((data, new, ptr), shape=(len(ptr) - 1, n_cols), copy=False)
        m.has_sorted_indices = False
        m.sort_indices()
        ptr, data, new = m.indptr.astype(np.int64), m.data, m.indices
    return ptr, data, new


def count_values(part: Part, start: int, stop: int) -> np.ndarray:
    """Values each row ``start:stop`` of a part contributes to a CSR output (int64)."""
    with Source(part.path) as source:
        matrix = _open(source, part)
        if part.format == "dense":
            block = _dense_block(matrix, part, start, stop)
            return np.count_nonzero(block.reshape(len(block), -1), axis=1).astype(np.int64)
        if part.remap is None:
            return np.diff(matrix.read_indptr(start, stop))
        ptr, _, indices = matrix.read_csr(start, stop)
    keep = np.concatenate([[0], np.cumsum(part.remap[indices] >= 0, dtype=np.int64)])
    return np.diff(keep[ptr])


def read_rows(job: MatrixJob, pieces: list[Piece]) -> np.ndarray | Csr:
    """The rows of several pieces, concatenated (dense array or CSR block)."""
    if job.format == "dense":
        blocks = [read_dense(job.parts[k], a, b, job.dtype) for k, a, b in pieces]
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    csr = [read_csr(job.parts[k], a, b, job.dtype, job.shape[1]) for k, a, b in pieces]
    if len(csr) == 1:
        return csr[0]
    counts = np.concatenate([np.diff(c[0]) for c in csr])
    ptr = np.concatenate([[0], np.cumsum(counts)])
    return ptr, np.concatenate([c[1] for c in csr]), np.concatenate([c[2] for c in csr])


# --- writing (input order) ----------------------------------------------------------------------
def copy_dense_shard(store: str, job: MatrixJob, unit: int, shard: int, pieces: list[Piece]) -> int:
    """Write output rows ``shard * unit`` onwards (one shard) of a dense matrix."""
    values = read_rows(job, pieces)
    assert isinstance(values, np.ndarray)
    write_shards(open_output(store, job.key), shard, unit, values)
    release_memory()
    return len(values)


def copy_csr_shard(
    store: str, job: MatrixJob, unit: int, shard: int, stop: int, indptr: Spilled, r0: int,
    r1: int, pieces: list[Piece],
) -> int:  # fmt: skip
    """Write values ``shard * unit:stop`` of ``data`` and ``indices`` of a CSR matrix.

    Output rows ``r0:r1`` (``pieces`` of the inputs) hold them, ``indptr`` their pointers;
    the rows straddling the shard's ends are read whole and cut.
    """
    ptr = indptr.read(r0, r1 + 1)
    got = read_rows(job, pieces)
    assert isinstance(got, tuple)
    rows_ptr, data, indices = got
    if not np.array_equal(np.diff(rows_ptr), np.diff(ptr)):
        msg = (
            f"{job.where}: the values per row read from {[job.parts[k].path for k, _, _ in pieces]}"
            " differ from those counted before; an input changed or is corrupt"
        )
        raise CorruptChunkError(msg)
    lo, hi = shard * unit - int(ptr[0]), stop - int(ptr[0])
    write_shards(open_output(store, f"{job.key}/data"), shard, unit, data[lo:hi])
    write_shards(open_output(store, f"{job.key}/indices"), shard, unit, indices[lo:hi])
    release_memory()
    return hi - lo


def pieces_of(offsets: np.ndarray, start: int, stop: int) -> list[Piece]:
    """Global rows ``start:stop`` (input order) as rows of the inputs holding them."""
    out = []
    k = int(np.searchsorted(offsets, start, side="right")) - 1
    while start < stop:
        end = min(stop, int(offsets[k + 1]))
        if end > start:
            out.append((k, start - int(offsets[k]), end - int(offsets[k])))
        start, k = end, k + 1
    return out


# --- graphs -------------------------------------------------------------------------------------
class Graph:
    """Delayed tasks of one conversion step, with keys that name what they do.

    ``labels`` maps each task key to the progress bar it advances.
    """

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex[:12]
        self.tasks: list[Delayed] = []
        self.labels: dict[Any, str] = {}
        self._n = 0

    def literal(self, value: Any, name: str) -> Any:
        """``value`` as one graph key, shipped once however many tasks use it."""
        import dask

        self._n += 1
        key = f"atlasloader-{name}-{self.token}-{self._n}"
        return dask.delayed(value, name=key, traverse=False)

    def add(self, label: str, func: Any, *args: Any) -> Delayed:
        """A task ``func(*args)``, computed by :func:`~.graph.run` (key: its name)."""
        import dask

        self._n += 1
        key = f"atlasloader-{func.__name__}-{self.token}-{self._n}"
        task = dask.delayed(func, pure=False, traverse=False)(*args, dask_key_name=key)
        self.tasks.append(task)
        self.labels[task.key] = label
        return task


def count_into(counts: Spilled, at: int, part: Part, start: int, stop: int) -> int:
    """Write the values per row ``start:stop`` of a part into ``counts`` from entry ``at``."""
    counts.write(at, count_values(part, start, stop))
    return stop - start


def count_graph(job: MatrixJob, read_rows: int, counts: Spilled) -> Graph:
    """Tasks writing the values per row of every part of a CSR job into ``counts``.

    Rows are counted in blocks of ``read_rows`` (or, when a part's row pointers give the
    counts, in blocks of :data:`~.state.WINDOW` pointers), so neither the tasks nor
    the driver ever hold a per-cell array of the whole job.
    """
    graph = Graph()
    label = f"{job.where}: counting values per row"
    for k, part in enumerate(job.parts):
        step = WINDOW if part.format == "csr" and part.remap is None else read_rows
        for a in range(0, part.n_rows, max(1, step)):
            b = min(part.n_rows, a + step)
            graph.add(label, count_into, counts, int(job.offsets[k]) + a, part, a, b)
    return graph


def copy_graph(store: str, job: MatrixJob, plan: Plan, indptr: Spilled | None) -> Graph:
    """One task per output shard (of ``data`` and ``indices`` together, for CSR)."""
    graph = Graph()
    label = f"{job.where}: writing shards"
    job_ref = graph.literal(job, "job")
    n = job.shape[0]
    if job.format == "dense":
        unit = plan.shard_rows
        for s in range(-(-n // unit)):
            a, b = s * unit, min(n, (s + 1) * unit)
            pieces = pieces_of(job.offsets, a, b)
            graph.add(label, copy_dense_shard, store, job_ref, unit, s, pieces)
        return graph
    assert indptr is not None
    nnz, unit = indptr.last(), plan.shard_elems
    pointers = indptr.mapped()  # binary searches: a few pages each
    for s in range(-(-nnz // unit)):
        v0, v1 = s * unit, min(nnz, (s + 1) * unit)
        r0 = int(np.searchsorted(pointers, v0, side="right")) - 1
        r1 = int(np.searchsorted(pointers, v1, side="left"))
        graph.add(
            label, copy_csr_shard, store, job_ref, unit, s, v1, indptr, r0, r1,
            pieces_of(job.offsets, r0, r1),
        )  # fmt: skip
    del pointers
    return graph
