"""Row blocks of ``X`` or a layer, planned on the client and read inside dask tasks.

A task never receives an open file: on a store it gets a :class:`StoreRows` (the Zarr arrays'
locations and codecs, a few kB pickled) and a row range, and reads that range itself with
:class:`~atlasloader.reading.chunks.ChunkReader` (direct chunk decoding, GIL released); in
memory it slices its rows from the matrix, held once in the graph. Either way the same graph
runs on the threaded scheduler or on ``dask.distributed`` worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp

from ..errors import InvalidDataError, InvalidTypeError, MissingKeyError
from ..reading.chunks import ChunkReader
from ..store.csr import check_csr
from ..store.lazy import LazyAnnData
from ..store.matrix import LazyMatrix
from . import graph

__all__ = ["Block", "MatrixSource", "StoreRows", "load_block", "matrix_source"]

# Stored values per task (8 MB of float32 data + int32 indices for CSR; a task's working set
# is ~5x that, ~40 MB, and a worker runs one per core): small enough that a 2-core process stays
# under 0.5 GB at any number of cells, large enough that the graph stays small (~100 tasks per
# 10^8 values) and per-task overhead is far below the task's work.
TASK_VALUES = 1 << 20

Block: TypeAlias = np.ndarray | sp.csr_matrix


@dataclass(frozen=True)
class StoreRows:
    """Reads rows ``[start, stop)`` of a stored dense or CSR matrix (picklable).

    Parameters
    ----------
    format
        ``"csr"`` or ``"dense"``.
    readers
        ``(indptr, data, indices)`` readers for CSR, ``(values,)`` for dense.
    n_vars
        Number of columns.
    """

    format: str
    readers: tuple[ChunkReader, ...]
    n_vars: int

    def read(self, start: int, stop: int) -> Block:
        if self.format == "dense":
            return self.readers[0].read(start, stop)
        indptr, data, indices = self.readers
        ptr = indptr.read(start, stop + 1).astype(np.int64)
        lo, hi = int(ptr[0]), int(ptr[-1])
        where = indptr.array.path.rpartition("/")[0] or "X"
        if lo > hi or hi > indices.shape[0]:
            msg = (
                f"{where}: indptr of rows {start}:{stop} points to values {lo}:{hi}, but "
                f"{where} has {indices.shape[0]}; the indptr chunk is missing or corrupt: "
                "restore it or re-create the store"
            )
            raise InvalidDataError(msg)
        cols = indices.read(lo, hi)
        check_csr(ptr, cols, self.n_vars, where, start)
        return sp.csr_matrix(
            (data.read(lo, hi), cols, ptr - lo),
            shape=(stop - start, self.n_vars),
            copy=False,
        )


def load_block(part: Any, start: int, stop: int) -> Block:
    """The rows a task works on: read from a store, or sliced from the in-memory matrix."""
    if isinstance(part, StoreRows):
        return part.read(start, stop)
    return part[start:stop]


@dataclass(frozen=True)
class MatrixSource:
    """``X`` or a layer, split into row blocks for dask tasks.

    Parameters
    ----------
    where
        ``"adata.X"`` or ``"adata.layers['counts']"`` (for messages).
    shape
        ``(n_obs, n_vars)``.
    blocks
        ``[(start, stop), ...]`` row ranges, in order, covering every row once.
    store
        The store reader (None in memory).
    memory
        The in-memory matrix (dense ndarray or CSR; None on stores).
    """

    where: str
    shape: tuple[int, int]
    blocks: list[tuple[int, int]]
    store: StoreRows | None = None
    memory: np.ndarray | sp.csr_matrix | None = None
    _shared: Any = field(default=None, repr=False, compare=False)

    @property
    def n_obs(self) -> int:
        return self.shape[0]

    @property
    def n_vars(self) -> int:
        return self.shape[1]

    def task_input(self) -> Any:
        """What every task receives, with its row range, to load its rows (:func:`load_block`).

        In memory, one graph key holds the whole matrix and tasks slice it themselves, so the
        graph holds no copies of it (and a cluster receives it once per worker).
        """
        if self.store is not None:
            return self.store
        if self._shared is None:
            object.__setattr__(self, "_shared", graph.shared(self.memory, "matrix"))
        return self._shared

    def sample(self, n_rows: int = 1024) -> Block:
        """A few rows spread over the matrix (for cheap checks such as "are these counts")."""
        n = self.n_obs
        picks = [(s, min(n, s + max(1, n_rows // 4))) for s in np.linspace(0, n, 5)[:-1]]
        source = self.store if self.store is not None else self.memory
        parts = [load_block(source, int(a), int(b)) for a, b in picks]
        return sp.vstack(parts, format="csr") if sp.issparse(parts[0]) else np.concatenate(parts)


def _where(layer: str | None) -> str:
    return "adata.X" if layer is None else f"adata.layers['{layer}']"


def _plan(n_obs: int, values_per_row: float, align: int) -> list[tuple[int, int]]:
    rows = max(1, int(TASK_VALUES / max(values_per_row, 1.0)))
    rows = max(align, rows // align * align)
    return [(s, min(n_obs, s + rows)) for s in range(0, n_obs, rows)]


def matrix_source(adata: Any, layer: str | None = None) -> MatrixSource:
    """Plan the row blocks of ``adata.X`` (``layer=None``) or ``adata.layers[layer]``.

    Raises
    ------
    MissingKeyError
        The layer (or ``X``) is absent.
    InvalidTypeError
        The matrix is neither dense nor sparse (or is stored as CSC).
    """
    where = _where(layer)
    if isinstance(adata, LazyAnnData):
        return _store_source(adata, layer, where)
    matrix = adata.X if layer is None else adata.layers.get(layer)
    if matrix is None:
        available = list(adata.layers.keys())
        msg = f"{where} not found; available layers: {available}"
        raise MissingKeyError(msg)
    if sp.issparse(matrix):
        matrix = sp.csr_matrix(matrix)  # no copy when it is CSR already
    elif isinstance(matrix, np.ndarray):
        pass
    else:
        msg = (
            f"{where} is a {type(matrix).__name__}; preprocessing reads numpy arrays and "
            "scipy sparse matrices in memory: convert it, or write the data to a Zarr store"
        )
        raise InvalidTypeError(msg)
    n_obs, n_vars = (int(s) for s in matrix.shape)
    per_row = matrix.nnz / max(n_obs, 1) if sp.issparse(matrix) else float(n_vars)
    return MatrixSource(where, (n_obs, n_vars), _plan(n_obs, per_row, 1), memory=matrix)


def _store_source(adata: LazyAnnData, layer: str | None, where: str) -> MatrixSource:
    if layer is None:
        lazy = adata.X
        if lazy is None:
            raise MissingKeyError(f"{where} not found in the store {adata.path!r}")
    else:
        if layer not in adata.layers:
            msg = f"{where} not found in the store {adata.path!r}; available: {adata.layers.keys()}"
            raise MissingKeyError(msg)
        lazy = adata.layers[layer]
    if not isinstance(lazy, LazyMatrix) or lazy.ndim != 2:
        raise InvalidTypeError(f"{where} is not a 2-D matrix")
    n_obs, n_vars = lazy.shape[0], lazy.shape[1]
    node: Any = lazy.node
    if lazy.is_sparse:
        rows = StoreRows(
            "csr",
            (ChunkReader(node["indptr"]), ChunkReader(node["data"]), ChunkReader(node["indices"])),
            n_vars,
        )
        per_row = lazy.nnz / max(n_obs, 1)
    else:
        rows = StoreRows("dense", (ChunkReader(node),), n_vars)
        per_row = float(n_vars)
    # Dense blocks are whole stored chunks (none decoded twice); CSR values are read by range,
    # whose chunks never align with rows anyway.
    align = 1 if lazy.is_sparse else lazy.row_chunk
    return MatrixSource(where, (n_obs, n_vars), _plan(n_obs, per_row, align), store=rows)
