"""Turn selected rows of decoded blocks into torch tensors: dense, sparse CSR, pinned, on a device.

A batch arrives as *parts* ``(block, sel)`` (see :mod:`.rows`): rows ``sel`` of a numpy array
or a scipy CSR matrix. Rows are gathered straight into the output, so a shuffled buffer is never
permuted as a whole. CSR rows are densified with one flat fancy assignment per part: numpy
releases the GIL in its inner loops (scipy's ``toarray`` does not), so collating overlaps with
reading in the prefetch threads. Dense outputs come from an :class:`~.pool.ArrayPool` when one is
given: re-zeroing the entries written last time costs a fraction of faulting in fresh pages.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from .pool import ArrayPool, Lease

# torch warns on every sparse CSR tensor built; the batches are valid CSR by construction.
warnings.filterwarnings(
    "ignore", message="Sparse CSR tensor support is in beta", category=UserWarning
)

Part = tuple[Any, "np.ndarray | None"]


def _positions(indptr: np.ndarray, sel: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``data``/``indices`` of rows ``sel`` (in order) and each row's length."""
    if sel is None:
        lengths = np.diff(indptr).astype(np.int64, copy=False)
        return np.arange(int(indptr[0]), int(indptr[-1]), dtype=np.int64), lengths
    starts = indptr[sel].astype(np.int64, copy=False)
    lengths = indptr[sel + 1] - starts
    total = int(lengths.sum())
    offsets = np.cumsum(lengths)
    offsets -= lengths
    q = np.repeat(starts - offsets, lengths)
    q += np.arange(total, dtype=np.int64)
    return q, lengths


def _n_rows(block: Any, sel: np.ndarray | None) -> int:
    return int(block.shape[0] if sel is None else sel.shape[0])


def _as_csr(block: Any) -> Any:
    return block if isinstance(block, sp.csr_matrix | sp.csr_array) else sp.csr_matrix(block)


def _take(
    pool: ArrayPool | None, shape: tuple[int, ...], dtype: np.dtype, *, zeroed: bool
) -> tuple[np.ndarray, Lease | None]:
    if pool is not None:
        return pool.take(shape, dtype, zeroed=zeroed)
    return (np.zeros(shape, dtype) if zeroed else np.empty(shape, dtype)), None


def densify_parts(
    parts: Sequence[Part], n_cols: int, dtype: np.dtype, pool: ArrayPool | None = None
) -> np.ndarray:
    """Rows of CSR parts as one dense ``(n, n_cols)`` array of ``dtype``.

    Later duplicates of a ``(row, column)`` entry overwrite earlier ones (stores have none).
    """
    n = sum(_n_rows(b, s) for b, s in parts)
    shape = (n, n_cols)
    out, lease = _take(pool, shape, dtype, zeroed=True)
    flat_out = out.reshape(-1)
    touched = []
    row0 = 0
    for block, sel in parts:
        m = _as_csr(block)
        q, lengths = _positions(m.indptr, sel)
        k = lengths.shape[0]
        if q.size:
            flat = np.repeat(np.arange(row0, row0 + k, dtype=np.int64) * n_cols, lengths)
            flat += m.indices[q]
            flat_out[flat] = m.data[q]
            touched.append(flat)
        row0 += k
    if lease is not None:
        lease.touched = touched
    return out


def gather_csr(
    parts: Sequence[Part], dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rows of CSR parts as one CSR: ``(indptr int64, indices int64, data dtype, n_rows)``."""
    lens, cols, vals = [], [], []
    for block, sel in parts:
        m = _as_csr(block)
        q, lengths = _positions(m.indptr, sel)
        lens.append(lengths)
        cols.append(m.indices[q])
        vals.append(m.data[q])
    lengths = np.concatenate(lens) if lens else np.zeros(0, np.int64)
    indptr = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.concatenate(cols).astype(np.int64, copy=False) if cols else np.zeros(0, np.int64)
    data = np.concatenate(vals).astype(dtype, copy=False) if vals else np.zeros(0, dtype)
    return indptr, indices, data, int(lengths.shape[0])


def gather_dense(parts: Sequence[Part], dtype: np.dtype, pool: ArrayPool | None = None) -> Any:
    """Rows of dense parts as one C-contiguous array of ``dtype``."""
    first = np.asarray(parts[0][0])
    shape = (sum(_n_rows(b, s) for b, s in parts), *first.shape[1:])
    out, _ = _take(pool, shape, dtype, zeroed=False)
    row0 = 0
    for block, sel in parts:
        arr = np.asarray(block)
        k = _n_rows(arr, sel)
        out[row0 : row0 + k] = arr if sel is None else arr[sel]
        row0 += k
    return out


def collate(
    parts: Sequence[Part],
    dtype: np.dtype,
    sparse: bool,
    pin_memory: bool,
    pool: ArrayPool | None = None,
) -> Any:
    """The rows of ``parts`` as one CPU tensor of ``dtype`` (sparse CSR where asked and stored).

    Parameters
    ----------
    parts
        ``(block, sel)`` pairs, all of one kind (dense arrays or sparse matrices) and width;
        ``sel`` ``None`` takes every row of the block in order.
    dtype
        numpy dtype of the output values.
    sparse
        Keep sparse blocks sparse (a ``torch.sparse_csr`` tensor with int64 indices).
    pin_memory
        Pin the result when CUDA is available.
    pool
        Reuse output arrays nobody holds any more (dense outputs only).
    """
    import torch

    block0 = parts[0][0]
    if sp.issparse(block0):
        n_cols = int(block0.shape[1])
        if sparse:
            indptr, indices, data, n = gather_csr(parts, dtype)
            pin = pin_memory and torch.cuda.is_available()

            def host(a: np.ndarray) -> Any:
                # Pinned components: the copy to the device can then run asynchronously.
                t = torch.from_numpy(a)
                return t.pin_memory() if pin else t

            return torch.sparse_csr_tensor(
                host(indptr),
                host(indices),
                host(data),
                size=(n, n_cols),
                check_invariants=False,  # built from valid CSR rows; also silences a warning
            )
        arr = densify_parts(parts, n_cols, dtype, pool)
    else:
        arr = gather_dense(parts, dtype, pool)
    t = torch.from_numpy(arr)
    if pin_memory and torch.cuda.is_available():
        t = t.pin_memory()
    return t


def densify(block: Any, dtype: np.dtype) -> np.ndarray:
    """A sparse matrix as a dense array of ``dtype`` (see :func:`densify_parts`)."""
    return densify_parts([(block, None)], int(block.shape[1]), dtype)


def to_tensor(block: Any, dtype: np.dtype, sparse: bool, pin_memory: bool) -> Any:
    """One whole block as a CPU tensor of ``dtype``; CSR stays sparse when ``sparse`` is set."""
    return collate([(block, None)], dtype, sparse, pin_memory)
