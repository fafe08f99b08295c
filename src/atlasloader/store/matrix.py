"""A lazily read matrix (``X``, a layer or an obsm array): dense Zarr array or anndata CSR group.

Reads go straight to Zarr (never through dask): contiguous row ranges are one read of each
underlying array, which is what both registration checks and the loader need.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp
import zarr

from ..errors import CorruptChunkError, InvalidDataError, InvalidTypeError
from .csr import check_csr
from .elements import encoding_type

# Per-cell arrays (CSR row pointers, registered obs codes and covariates) of stores up to this
# many cells are read whole once (8 MB of row pointers at most); longer ones are read per buffer,
# only the rows of its runs, so the loader's memory does not grow with the store.
WHOLE_READ_MAX_ROWS = 1_000_000
# Per-buffer reads need small stored chunks (each run decodes at least one): stores whose
# per-cell arrays have bigger chunks (other writers) are read whole, as before.
RUN_READ_MAX_CHUNK = 1 << 16
# Read through the module at call time, so that tests can lower the limits.
_this = sys.modules[__name__]

_SIDE: list[ThreadPoolExecutor] = []


def _side_pool() -> ThreadPoolExecutor:
    """Threads that issue a second array's remote reads while the caller reads the first."""
    if not _SIDE:
        _SIDE.append(ThreadPoolExecutor(8, thread_name_prefix="atlasloader-remote"))
    return _SIDE[0]


# A forked child has none of its parent's threads: it starts a pool of its own.
os.register_at_fork(after_in_child=_SIDE.clear)


class LazyMatrix:
    """Row access to a stored matrix without loading it.

    Parameters
    ----------
    node
        A Zarr array (dense) or an anndata ``csr_matrix`` group.
    where
        Human-readable location used in error messages, e.g. ``"adata.X"``.
    """

    def __init__(self, node: zarr.Array | zarr.Group, where: str = "adata.X") -> None:
        self.where = where
        self.node = node
        enc = encoding_type(node)
        if isinstance(node, zarr.Array):
            self.format = "dense"
            self._shape = tuple(int(s) for s in node.shape)
            self._dtype = np.dtype(node.dtype)
        elif enc == "csr_matrix":
            self.format = "csr"
            self._shape = tuple(int(s) for s in node.attrs["shape"])
            self._dtype = np.dtype(node["data"].dtype)
            self._check_csr_lengths()
        elif enc == "csc_matrix":
            msg = (
                f"{where} is stored as CSC, which cannot be read by rows efficiently; "
                "convert it with atlasloader.convert (writes CSR)"
            )
            raise InvalidTypeError(msg)
        else:
            msg = f"{where} has encoding {enc!r}; expected a dense array or csr_matrix"
            raise InvalidTypeError(msg)

    def _check_csr_lengths(self) -> None:
        """The CSR arrays' lengths agree with the shape (metadata only)."""
        n_ptr, n_data = int(self.node["indptr"].shape[0]), int(self.node["data"].shape[0])
        n_idx = int(self.node["indices"].shape[0])
        problem = None
        if n_ptr != self._shape[0] + 1:
            problem = (
                f"its indptr has {n_ptr} entries for {self._shape[0]} rows (expected rows + 1)"
            )
        elif n_data != n_idx:
            problem = f"its data has {n_data} values but its indices {n_idx}"
        if problem is not None:
            msg = (
                f"{self.where} ({self.node.path}) is not a valid CSR matrix: {problem}; "
                "re-create the store (or write X again with anndata)"
            )
            raise InvalidDataError(msg)

    # --- metadata -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def is_sparse(self) -> bool:
        return self.format == "csr"

    @property
    def row_chunk(self) -> int:
        """Rows per stored chunk (for CSR, the rows whose values fill one ``data`` chunk)."""
        if self.format == "dense":
            assert isinstance(self.node, zarr.Array)
            return int(self.node.chunks[0])
        data_chunk = int(self.node["data"].chunks[0])
        nnz_per_row = max(1.0, self.nnz / max(1, self._shape[0]))
        return max(1, int(data_chunk / nnz_per_row))

    @cached_property
    def indptr(self) -> np.ndarray:
        """The whole row-pointer array (8 bytes per cell), read once and cached."""
        if self.format != "csr":
            raise InvalidTypeError(f"{self.where} is dense and has no indptr")
        reader = self._ptr_reader
        ptr = np.asarray(reader.read(0, reader.shape[0]), dtype=np.int64)
        steps = np.diff(ptr)
        bad = None
        if ptr.size and ptr[0] != 0:
            bad = f"starts at {int(ptr[0])}, not 0"
        elif steps.size and steps.min() < 0:
            row = int(np.argmax(steps < 0))
            bad = f"decreases at row {row} ({int(ptr[row])} then {int(ptr[row + 1])})"
        elif ptr.size and ptr[-1] != self.nnz:
            bad = f"ends at {int(ptr[-1])}, but data holds {self.nnz} values"
        if bad is not None:
            msg = (
                f"{self.where} ({self.node.path}/indptr) is not a valid CSR row pointer: it "
                f"{bad}. An indptr chunk is missing or corrupt; restore it or re-create the store"
            )
            raise InvalidDataError(msg)
        return ptr

    @cached_property
    def _ptr_reader(self) -> Any:
        from ..reading.chunks import ChunkReader

        return ChunkReader(self.node["indptr"])

    @property
    def pointers_per_run(self) -> bool:
        """Whether row pointers are read per call (only the runs' own) instead of cached whole.

        True for CSR matrices of more than :data:`WHOLE_READ_MAX_ROWS` rows whose ``indptr`` has
        chunks of at most :data:`RUN_READ_MAX_CHUNK` pointers (``convert``'s layout), unless the
        whole array was already read.
        """
        return (
            self.format == "csr"
            and self._shape[0] > _this.WHOLE_READ_MAX_ROWS
            and "indptr" not in self.__dict__
            and self._ptr_reader.chunk_rows <= _this.RUN_READ_MAX_CHUNK
        )

    def _indptr_slice(self, start: int, stop: int) -> np.ndarray:
        # Small matrices use the cached array; huge ones read only the slice, so neither a
        # registration check nor the loader holds 8 bytes per cell.
        if "indptr" in self.__dict__ or self._shape[0] <= _this.WHOLE_READ_MAX_ROWS:
            return self.indptr[start : stop + 1]
        return np.asarray(self._read(self.node["indptr"], slice(start, stop + 1)), dtype=np.int64)

    def _run_pointers(self, runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(elems, row_nnz)``: each run's ``[first, last)`` value positions and its rows'
        value counts, in run order, from the cached pointers or from the runs' own."""
        lengths = runs[:, 1] - runs[:, 0]
        if not self.pointers_per_run:
            ptr = self.indptr
            elems = np.stack([ptr[runs[:, 0]], ptr[runs[:, 1]]], axis=1)
            rows = np.repeat(runs[:, 0] - (np.cumsum(lengths) - lengths), lengths)
            rows += np.arange(int(lengths.sum()))
            return elems, ptr[rows + 1] - ptr[rows]
        # Pointers [start, stop] of every run, concatenated: run i's segment has lengths[i] + 1.
        seg = self._ptr_reader.read_many(np.stack([runs[:, 0], runs[:, 1] + 1], axis=1))
        seg = seg.astype(np.int64, copy=False)
        first = np.cumsum(lengths + 1) - (lengths + 1)
        elems = np.stack([seg[first], seg[first + lengths]], axis=1)
        steps = np.diff(seg)
        keep = np.ones(steps.size, dtype=bool)
        keep[(first + lengths)[:-1]] = False  # the steps from one run's segment to the next
        return elems, steps[keep]

    @property
    def nnz(self) -> int:
        if self.format != "csr":
            return int(np.prod(self._shape))
        return int(self.node["data"].shape[0])

    def __repr__(self) -> str:
        kind = "CSR" if self.is_sparse else "dense"
        return f"<LazyMatrix {self.where}: {kind} {self._shape} {self._dtype}>"

    # --- reads --------------------------------------------------------------------------------
    def _read(self, arr: zarr.Array, sel: slice) -> np.ndarray:
        try:
            return np.asarray(arr[sel])
        except Exception as e:  # decoding errors come in many types; name the chunk
            chunk = arr.chunks[0] if arr.chunks else 1
            start = sel.start or 0
            msg = (
                f"cannot read {self.where} ({arr.path}) rows/entries from {start} "
                f"(chunk {start // max(chunk, 1)}): {type(e).__name__}: {e}. "
                "The chunk is missing or corrupt; re-create the store or restore that file"
            )
            raise CorruptChunkError(msg) from e

    def read_rows(self, start: int, stop: int) -> np.ndarray | sp.csr_matrix:
        """Rows ``start:stop`` as a dense array or a CSR matrix."""
        if self.format == "dense":
            assert isinstance(self.node, zarr.Array)
            return self._read(self.node, slice(start, stop))
        ptr = self._indptr_slice(start, stop)
        lo, hi = int(ptr[0]), int(ptr[-1])
        data = self._read(self.node["data"], slice(lo, hi))
        indices = self._read(self.node["indices"], slice(lo, hi))
        check_csr(ptr, indices, self._shape[1], f"{self.where} ({self.node.path})", start)
        return sp.csr_matrix(
            (data, indices, ptr - lo), shape=(stop - start, self._shape[1]), copy=False
        )

    @cached_property
    def _readers(self) -> tuple[Any, ...]:
        from ..reading.chunks import ChunkReader

        if self.format == "csr":
            return ChunkReader(self.node["data"]), ChunkReader(self.node["indices"])
        return (ChunkReader(self.node),)

    def read_runs(self, runs: np.ndarray) -> np.ndarray | sp.csr_matrix:
        """Rows of several ``[start, stop)`` runs, concatenated in the order given.

        One coalesced read per underlying array: runs sharing a chunk decode it once, and the
        decoding releases the GIL so prefetch threads overlap.
        """
        runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
        if self.format == "dense":
            (reader,) = self._readers
            return reader.read_many(runs)
        elems, row_nnz = self._run_pointers(runs)
        rd, ri = self._readers
        if rd.remote:
            # Both arrays' requests in flight together: one round trip of latency, not two.
            pending = _side_pool().submit(ri.read_many, elems)
            data = rd.read_many(elems)
            indices = pending.result()
        else:
            data = rd.read_many(elems)
            indices = ri.read_many(elems)
        new_ptr = np.zeros(row_nnz.size + 1, dtype=np.int64)
        np.cumsum(row_nnz, out=new_ptr[1:])
        return sp.csr_matrix(
            (data, indices, new_ptr), shape=(row_nnz.size, self._shape[1]), copy=False
        )

    def read_row_list(self, rows: Sequence[int] | np.ndarray) -> np.ndarray | sp.csr_matrix:
        """Rows in the given order, read as runs of consecutive rows."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            empty = np.zeros((0, *self._shape[1:]), dtype=self._dtype)
            return sp.csr_matrix(empty) if self.is_sparse else empty
        if rows.min() < 0 or rows.max() >= self._shape[0]:
            msg = f"row indices out of range for {self.where} with {self._shape[0]} rows"
            raise InvalidDataError(msg)
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        breaks = np.flatnonzero(np.diff(srt) != 1) + 1
        starts = np.concatenate([[0], breaks])
        stops = np.concatenate([breaks, [srt.size]])
        parts = [self.read_rows(int(srt[a]), int(srt[b - 1]) + 1) for a, b in zip(starts, stops)]
        block = sp.vstack(parts, format="csr") if self.is_sparse else np.concatenate(parts)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        return block[inverse]

    def sample_rows(self, n_rows: int = 256, n_blocks: int = 4) -> np.ndarray | sp.csr_matrix:
        """A few evenly spread row blocks, for cheap checks (count data) on huge matrices."""
        n = self._shape[0]
        if n <= n_rows * n_blocks:
            return self.read_rows(0, n)
        starts = np.linspace(0, n - n_rows, n_blocks).astype(np.int64)
        parts = [self.read_rows(int(s), int(s) + n_rows) for s in starts]
        return sp.vstack(parts, format="csr") if self.is_sparse else np.concatenate(parts)

    def row_blocks(self, block_rows: int) -> list[tuple[int, int]]:
        n = self._shape[0]
        return [(s, min(n, s + block_rows)) for s in range(0, n, block_rows)]

    def to_memory(self) -> np.ndarray | sp.csr_matrix:
        return self.read_rows(0, self._shape[0])

    def __getitem__(self, key: object) -> np.ndarray | sp.csr_matrix:
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self._shape[0])
            return self.read_rows(start, stop)
        if isinstance(key, int | np.integer):
            return self.read_rows(int(key), int(key) + 1)
        return self.read_row_list(np.arange(self._shape[0])[key])  # type: ignore[call-overload]
