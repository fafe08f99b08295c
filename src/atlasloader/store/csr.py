"""CSR arrays: keeping and renumbering columns (gene subsets) without densifying."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidDataError


def check_csr(
    ptr: np.ndarray, indices: np.ndarray, n_vars: int, where: str, start: int = 0
) -> None:
    """Raise :class:`InvalidDataError` unless rows ``start...`` of a CSR matrix are well formed.

    ``ptr`` are the rows' pointers (not rebased), ``indices`` the column indices they point to
    (from ``ptr[0]``). Compiled kernels index arrays with these numbers unchecked: a negative
    or too large column index, or decreasing pointers, must stop here, not corrupt memory.
    """
    steps = np.diff(ptr)
    if steps.size and steps.min() < 0:
        row = start + int(np.argmax(steps < 0))
        msg = (
            f"{where}: indptr decreases at row {row} ({int(ptr[row - start])} then "
            f"{int(ptr[row - start + 1])}); indptr must be non-decreasing. The indptr chunk is "
            "missing or corrupt: restore it or re-create the store"
        )
        raise InvalidDataError(msg)
    if indices.size:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= n_vars:
            bad = lo if lo < 0 else hi
            msg = (
                f"{where}: column index {bad} in the indices of rows {start}:"
                f"{start + steps.size} is out of range for {n_vars} genes (allowed "
                f"0..{n_vars - 1}); the indices chunk is corrupt: restore it or re-create "
                "the store"
            )
            raise InvalidDataError(msg)


def select_columns(
    indptr: np.ndarray, data: np.ndarray, indices: np.ndarray, remap: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the values whose column ``c`` has ``remap[c] >= 0``, renumbered to ``remap[c]``.

    Parameters
    ----------
    indptr
        Row pointers into ``data``/``indices`` (may start above 0, e.g. a row slice).
    data, indices
        The values and column indices ``indptr`` points into.
    remap
        New column of each old column, ``-1`` to drop it.

    Returns
    -------
    ``(indptr, data, indices)`` of the kept values: int64 row pointers from 0, and int64
    column indices in ``remap``'s numbering (their order within a row is kept).

    Examples
    --------
    >>> ptr, data, cols = np.array([0, 2, 3]), np.array([1.0, 2.0, 3.0]), np.array([0, 2, 1])
    >>> ptr, data, cols = select_columns(ptr, data, cols, remap=np.array([-1, 0, 1]))
    >>> ptr.tolist(), data.tolist(), cols.tolist()
    ([0, 1, 2], [2.0, 3.0], [1, 0])
    """
    lo, hi = int(indptr[0]), int(indptr[-1])
    new = remap[indices[lo:hi]]
    keep = new >= 0
    kept = np.zeros(keep.size + 1, dtype=np.int64)
    np.cumsum(keep, out=kept[1:])
    return kept[np.asarray(indptr, dtype=np.int64) - lo], data[lo:hi][keep], new[keep]
