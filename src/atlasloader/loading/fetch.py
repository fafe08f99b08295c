"""Row fetchers: read the rows of one registry key for a buffer of row runs.

``X``/layers of a store are read run by run straight from Zarr (never dask). Per-cell columns
(encoded categoricals, covariates, size factors) are a few bytes per cell: read once into memory
for stores of up to ``WHOLE_READ_MAX_ROWS`` cells, per buffer (only its runs' rows, through the
chunk reader) beyond, so the loader's memory does not grow with the number of cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr

from ..errors import CorruptChunkError, InvalidTypeError
from ..reading.chunks import ChunkReader
from ..store import matrix as _matrix
from ..store.csr import select_columns
from ..store.lazy import LazyAnnData
from ..store.matrix import LazyMatrix


class RowFetcher:
    """Reads rows ``runs`` (``(k, 2)`` array of ``[start, stop)``) of one registered key."""

    def __init__(self, source: Any, where: str) -> None:
        self.where = where
        if isinstance(source, LazyMatrix):
            self.lazy: LazyMatrix | None = source
            self.memory: Any = None
            self.is_sparse = source.is_sparse
            self.n_cols = int(source.shape[1]) if source.ndim > 1 else 1
            self.n_rows = int(source.shape[0])
            self.dtype = source.dtype
        else:
            self.lazy = None
            mem = _as_memory(source, where)
            if sp.issparse(mem):
                mem = sp.csr_matrix(mem)
                # One dtype for indptr/indices: scipy re-copies them on every row
                # selection otherwise (an 80x slowdown on anndata's int64/int32 mix).
                mem.indptr = mem.indptr.astype(np.int64, copy=False)
                mem.indices = mem.indices.astype(np.int64, copy=False)
            elif mem.ndim == 1:
                mem = mem.reshape(-1, 1)
            self.memory = mem
            self.is_sparse = sp.issparse(mem)
            self.n_cols = int(mem.shape[1])
            self.n_rows = int(mem.shape[0])
            self.dtype = mem.dtype

    @property
    def on_disk(self) -> bool:
        return self.lazy is not None

    def read_runs(self, runs: np.ndarray) -> Any:
        """Rows of the runs concatenated in the order given."""
        if self.lazy is not None:
            return self.lazy.read_runs(runs)
        rows = np.concatenate([np.arange(a, b) for a, b in runs]) if len(runs) else np.zeros(0, int)
        return self.memory[rows]

    def read_rows(self, rows: np.ndarray) -> Any:
        if self.lazy is not None:
            return self.lazy.read_row_list(rows)
        return self.memory[rows]


class ColumnFetcher:
    """A per-cell 1-D array of a store read per buffer: ``(rows, 1)`` blocks of its runs."""

    lazy = None
    memory = None
    is_sparse = False
    n_cols = 1

    def __init__(self, array: zarr.Array, where: str) -> None:
        self.where = where
        self.reader = ChunkReader(array)
        self.n_rows = int(array.shape[0])
        self.dtype = np.dtype(array.dtype)

    @property
    def on_disk(self) -> bool:
        return True

    def read_runs(self, runs: np.ndarray) -> np.ndarray:
        runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
        return self.reader.read_many(runs).reshape(-1, 1)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        block = self.reader.read_many(np.stack([rows[order], rows[order] + 1], axis=1))
        out = np.empty_like(block)
        out[order] = block
        return out.reshape(-1, 1)


def _per_buffer_column(group: zarr.Group, key: str) -> zarr.Array | None:
    """The stored array of obs column ``key`` when it should be read per buffer, else None."""
    node = group.get(key)
    if isinstance(node, zarr.Group) and node.attrs.get("encoding-type") == "categorical":
        node = node.get("codes")
    if not isinstance(node, zarr.Array) or node.ndim != 1:
        return None  # nullable columns (values + mask), strings...: read whole
    if node.shape[0] <= _matrix.WHOLE_READ_MAX_ROWS or node.chunks[0] > _matrix.RUN_READ_MAX_CHUNK:
        return None
    if np.dtype(node.dtype).kind not in "biuf":
        return None
    return node


def _as_memory(source: Any, where: str) -> Any:
    if isinstance(source, pd.DataFrame):
        return source.to_numpy()
    if isinstance(source, pd.Series):
        return source.to_numpy()
    if hasattr(source, "compute"):  # dask: a per-cell column of a store, read once
        return np.asarray(source.compute())
    if sp.issparse(source) or isinstance(source, np.ndarray):
        return source
    try:
        return np.asarray(source)
    except Exception as e:  # pragma: no cover - defensive
        raise InvalidTypeError(f"cannot load {where} of type {type(source).__name__}") from e


def fetcher_for(adata: Any, attr_name: str, attr_key: str | None) -> RowFetcher | ColumnFetcher:
    """The fetcher for ``adata.<attr_name>[attr_key]`` on either backing."""
    where = f"adata.{attr_name}" + ("" if attr_key is None else f"['{attr_key}']")
    if isinstance(adata, LazyAnnData):
        if attr_name == "X":
            return RowFetcher(adata.X, where)
        if attr_name == "obs":
            column = adata.obs.column(attr_key or "")  # checks the key, names what exists
            node = _per_buffer_column(adata.obs._group, attr_key or "")
            if node is not None:
                return ColumnFetcher(node, where)
            return RowFetcher(column.values, where)
        value = getattr(adata, attr_name)[attr_key]
        if (
            isinstance(value, LazyMatrix)
            and attr_name == "obsm"
            and value.shape[1] < 4096
            and (
                value.shape[0] <= _matrix.WHOLE_READ_MAX_ROWS
                or value.row_chunk > _matrix.RUN_READ_MAX_CHUNK
            )
        ):
            # Per-cell covariates of a small store (or chunked too coarsely for per-buffer
            # reads): read once rather than per buffer.
            return RowFetcher(value.to_memory(), where)
        return RowFetcher(value, where)
    if attr_name == "X":
        return RowFetcher(adata.X, where)
    value = getattr(adata, attr_name)[attr_key]
    return RowFetcher(value, where)


class ColumnSubset:
    """A store fetcher restricted to some columns (a registered ``var_subset``).

    The full rows are read (the store is not rewritten) and the columns selected after
    decoding: for CSR with a column map, keeping only the values of the chosen genes.
    """

    def __init__(self, fetcher: RowFetcher, cols: np.ndarray) -> None:
        self.fetcher = fetcher
        self.cols = np.asarray(cols, dtype=np.int64)
        self.where = fetcher.where
        self.lazy = fetcher.lazy
        self.memory = None
        self.is_sparse = fetcher.is_sparse
        self.n_cols = int(self.cols.size)
        self.n_rows = fetcher.n_rows
        self.dtype = fetcher.dtype
        self._remap = np.full(fetcher.n_cols, -1, dtype=np.int64)
        self._remap[self.cols] = np.arange(self.cols.size)

    @property
    def on_disk(self) -> bool:
        return self.fetcher.on_disk

    def read_runs(self, runs: np.ndarray) -> Any:
        return self._select(self.fetcher.read_runs(runs))

    def read_rows(self, rows: np.ndarray) -> Any:
        return self._select(self.fetcher.read_rows(rows))

    def _select(self, block: Any) -> Any:
        if not sp.issparse(block):
            return np.asarray(block)[:, self.cols]
        m = sp.csr_matrix(block)
        indptr, data, cols = select_columns(m.indptr, m.data, m.indices, self._remap)
        return sp.csr_matrix(
            (data, cols.astype(np.int32), indptr), shape=(m.shape[0], self.n_cols), copy=False
        )


def subset_columns(fetcher: RowFetcher | ColumnFetcher, cols: np.ndarray | None) -> Any:
    """``fetcher`` restricted to ``cols`` (``None``: unchanged); in-memory data is cut once."""
    if cols is None:
        return fetcher
    if isinstance(fetcher, ColumnFetcher):
        msg = f"{fetcher.where} is a single column: a column subset does not apply to it"
        raise InvalidTypeError(msg)
    if not fetcher.on_disk:
        return RowFetcher(fetcher.memory[:, np.asarray(cols, dtype=np.int64)], fetcher.where)
    return ColumnSubset(fetcher, cols)


class CheckedCodes:
    """A store fetcher of a categorical field's codes, each read checked to lie in ``[0, n)``.

    A damaged chunk of an uncompressed column decodes to whatever its bytes are; unchecked,
    such codes would reach the model as out-of-range embedding indices. A min/max per buffer
    (microseconds) names the column, the cell and what to do instead.
    """

    def __init__(self, fetcher: Any, n_categories: int, key: str) -> None:
        self.fetcher = fetcher
        self.n_categories = int(n_categories)
        self.key = key

    def __getattr__(self, name: str) -> Any:
        if name == "fetcher":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.fetcher, name)

    def read_runs(self, runs: np.ndarray) -> Any:
        block = self.fetcher.read_runs(runs)
        return self._check(block, lambda: np.concatenate([np.arange(a, b) for a, b in runs]))

    def read_rows(self, rows: np.ndarray) -> Any:
        return self._check(self.fetcher.read_rows(rows), lambda: np.asarray(rows))

    def _check(self, block: Any, cells: Any) -> Any:
        values = np.asarray(block).reshape(-1)
        if values.size and (values.min() < 0 or values.max() >= self.n_categories):
            at = int(np.flatnonzero((values < 0) | (values >= self.n_categories))[0])
            msg = (
                f"{self.fetcher.where} (registry key {self.key!r}) holds code {values[at]} for "
                f"cell {int(cells()[at])}, outside the {self.n_categories} categories of its "
                "mapping: the stored column is damaged or was overwritten. Run `atlasloader "
                "validate STORE`; delete that column and register again to recompute it"
            )
            raise CorruptChunkError(msg)
        return block


def checked_codes(fetcher: Any, manager: Any, key: str) -> Any:
    """``fetcher`` of registry key ``key``, range-checked when it reads a categorical field's
    codes: per read (:class:`CheckedCodes`) from a store, once here when held in memory."""
    if key not in manager.registry["field_registries"]:
        return fetcher
    mapping = manager.get_state_registry(key).get("categorical_mapping")
    if mapping is None:
        return fetcher
    checked = CheckedCodes(fetcher, len(mapping), key)
    if fetcher.on_disk:
        return checked
    checked._check(fetcher.memory, lambda: np.arange(fetcher.n_rows))
    return fetcher
