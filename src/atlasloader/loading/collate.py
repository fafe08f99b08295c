"""Turn fetched rows into torch tensors: dense, sparse CSR, pinned, on a device."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp


def densify(block: sp.csr_matrix, dtype: np.dtype) -> np.ndarray:
    """CSR to dense with one flat fancy assignment.

    numpy's flat assignment releases the GIL in its inner loop where scipy's ``toarray`` does
    not, so densifying overlaps with reading in the prefetch threads.
    """
    n_rows, n_cols = block.shape
    out = np.zeros((n_rows, n_cols), dtype=dtype)
    if block.nnz:
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(block.indptr))
        out.reshape(-1)[rows * n_cols + block.indices] = block.data
    return out


def to_tensor(block: Any, dtype: np.dtype, sparse: bool, pin_memory: bool) -> Any:
    """A CPU tensor of ``dtype``; CSR stays sparse when ``sparse`` is set."""
    import torch

    if sp.issparse(block):
        block = sp.csr_matrix(block)
        if sparse:
            t = torch.sparse_csr_tensor(
                torch.from_numpy(block.indptr.astype(np.int64)),
                torch.from_numpy(block.indices.astype(np.int64)),
                torch.from_numpy(block.data.astype(dtype, copy=False)),
                size=block.shape,
                check_invariants=False,  # built from a valid scipy CSR; also silences a warning
            )
            return t
        arr = densify(block, dtype)
    else:
        arr = np.ascontiguousarray(np.asarray(block), dtype=dtype)
    t = torch.from_numpy(arr)
    if pin_memory and torch.cuda.is_available():
        t = t.pin_memory()
    return t


def to_device(t: Any, device: Any) -> Any:
    """Move to ``device``; sparse CSR is densified there (cheap on a GPU)."""
    if device is None:
        return t
    non_blocking = t.is_pinned() if hasattr(t, "is_pinned") and not t.is_sparse_csr else False
    t = t.to(device, non_blocking=non_blocking)
    return t.to_dense() if t.is_sparse_csr else t
