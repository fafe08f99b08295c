"""The selection and its runs: which cells an epoch visits and which rows one read covers.

A *run* is the selected cells of one ``read_rows``-aligned chunk of cell ids, so a run never
straddles two store chunks. :func:`normalize_indices` turns a selection into sorted unique ids,
:class:`RunTable` splits them into runs once (epoch independent), and two vectorised helpers
convert between cells and ``[start, stop)`` ranges of cell ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from ..errors import InvalidArgumentError
from ._checks import IntArray, _check_int, _readonly

__all__ = ["RunTable", "normalize_indices"]


def normalize_indices(indices: npt.ArrayLike | None, n_obs: int | None = None) -> IntArray:
    """Turn a cell selection into sorted unique ``int64`` cell ids.

    Parameters
    ----------
    indices
        ``None`` (all ``n_obs`` cells), a boolean mask of length ``n_obs``, or integer cell
        ids. Integer ids may be unsorted and may repeat: they are sorted and de-duplicated,
        because a cell is visited once per epoch whatever the selection says.
    n_obs
        Number of cells in the store. Required when ``indices`` is ``None``; for integer ids,
        ids ``>= n_obs`` are rejected when it is given; a mask must have this length.

    Returns
    -------
    numpy.ndarray
        Strictly increasing ``int64`` cell ids.

    Raises
    ------
    InvalidArgumentError
        Not 1-D, not integer/boolean, negative ids, ids ``>= n_obs``, or a mask whose length is
        not ``n_obs``.

    Examples
    --------
    >>> normalize_indices([5, 1, 5, 3], n_obs=6)
    array([1, 3, 5])
    >>> normalize_indices(np.array([True, False, True]))
    array([0, 2])
    """
    if n_obs is not None:
        n_obs = _check_int("n_obs", n_obs, min_value=0)
    if indices is None:
        if n_obs is None:
            msg = "indices=None selects all cells and needs n_obs; got n_obs=None"
            raise InvalidArgumentError(msg)
        return np.arange(n_obs, dtype=np.int64)
    arr = np.asarray(indices)
    if arr.ndim != 1:
        msg = (
            "indices must be a 1-D integer array or boolean mask; "
            f"got an array of shape {arr.shape}"
        )
        raise InvalidArgumentError(msg)
    if arr.size == 0:
        # ``np.asarray([])`` is float64; an empty selection is still a valid selection.
        return np.empty(0, dtype=np.int64)
    if arr.dtype == np.bool_:
        if n_obs is not None and arr.shape[0] != n_obs:
            msg = f"a boolean indices mask must have length n_obs={n_obs}; got length {len(arr)}"
            raise InvalidArgumentError(msg)
        return np.flatnonzero(arr).astype(np.int64, copy=False)
    if not np.issubdtype(arr.dtype, np.integer):
        msg = f"indices must be a 1-D integer array or boolean mask; got dtype {arr.dtype}"
        raise InvalidArgumentError(msg)
    out = arr.astype(np.int64, copy=False)
    # Already sorted unique is the common case (and O(n) to check, vs O(n log n) to sort).
    if out.size > 1 and not bool(np.all(out[1:] > out[:-1])):
        out = np.unique(out)
    if out[0] < 0:
        msg = f"indices must be cell ids in [0, n_obs); got the negative id {int(out[0])}"
        raise InvalidArgumentError(msg)
    if n_obs is not None and out[-1] >= n_obs:
        msg = f"indices must be cell ids in [0, n_obs) = [0, {n_obs}); got the id {int(out[-1])}"
        raise InvalidArgumentError(msg)
    return out


def _expand_ranges(starts: np.ndarray, lengths: np.ndarray) -> IntArray:
    """Concatenate ``arange(s, s + n)`` for each ``(s, n)`` without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(total, dtype=np.int64)


def _runs_from_sorted(cells: np.ndarray, read_rows: int) -> IntArray:
    """``[start, stop)`` ranges covering sorted ``cells``, split at ``read_rows`` chunk edges."""
    if cells.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    # A run ends at a gap, at a repeated cell (wrap-around padding) or where a new chunk starts.
    brk = np.flatnonzero((np.diff(cells) != 1) | (cells[1:] % read_rows == 0)) + 1
    first = np.concatenate(([0], brk))
    last = np.concatenate((brk - 1, [cells.size - 1]))
    return np.stack((cells[first], cells[last] + 1), axis=1).astype(np.int64, copy=False)


@dataclass(frozen=True, eq=False)
class RunTable:
    """Epoch-independent split of the selected cells into runs (the unit of shuffling).

    Run ``u`` is ``indices[bounds[u]:bounds[u + 1]]``: the selected cells of one
    ``read_rows``-aligned chunk of cell ids. For a full range of cells every run is one
    contiguous read of ``read_rows`` rows (except at the ends).

    All cells (or any range of ids) are held as the range itself: no per-cell array exists
    unless :attr:`indices` is asked for, so a 10^8-cell store costs its runs' bounds only
    (8 bytes per ``read_rows`` cells).

    Attributes
    ----------
    ids
        Sorted unique int64 cell ids (read-only), or None for the range
        ``[start, start + n_cells)``.
    start
        First cell id of a range selection (0 otherwise).
    read_rows
        Rows per read; chunk ``k`` holds cell ids ``[k * read_rows, (k + 1) * read_rows)``.
    bounds
        ``(n_runs + 1,)`` positions into ``indices`` where the runs start, then ``n_cells``.
    contiguous
        Whether ``indices`` is a range ``[a, b)``, so positions map to ids by addition.

    Examples
    --------
    >>> RunTable.build(np.arange(3, 10), read_rows=4).bounds.tolist()
    [0, 1, 5, 7]
    """

    ids: IntArray | None
    start: int
    size: int
    read_rows: int
    bounds: IntArray
    contiguous: bool

    @classmethod
    def build_range(cls, start: int, stop: int, read_rows: int) -> RunTable:
        """The runs of cell ids ``[start, stop)``, without a per-cell array."""
        read_rows = _check_int("read_rows", read_rows, min_value=1)
        start = _check_int("start", start, min_value=0)
        n = _check_int("stop", stop, min_value=start) - start
        if n == 0:
            return cls(None, start, 0, read_rows, _readonly(np.zeros(1, dtype=np.int64)), True)
        # Chunk edges are arithmetic: no O(n) pass (10^8 cells is common).
        first_edge = (-start) % read_rows or read_rows
        edges = np.arange(first_edge, n, read_rows, dtype=np.int64)
        bounds = np.concatenate(([0], edges, [n])).astype(np.int64)
        return cls(None, start, n, read_rows, _readonly(bounds), True)

    @cached_property
    def indices(self) -> IntArray:
        """Sorted unique int64 cell ids (read-only; built on first use for a range)."""
        if self.ids is not None:
            return self.ids
        return _readonly(np.arange(self.start, self.start + self.size, dtype=np.int64))

    @classmethod
    def build(cls, indices: npt.ArrayLike | range, read_rows: int) -> RunTable:
        """Split sorted unique cell ids into runs.

        Raises
        ------
        InvalidArgumentError
            ``read_rows < 1``, or ``indices`` not a 1-D array of sorted unique non-negative
            integers (use :func:`normalize_indices` first).
        """
        if isinstance(indices, range) and indices.step == 1:
            return cls.build_range(indices.start, max(indices.start, indices.stop), read_rows)
        read_rows = _check_int("read_rows", read_rows, min_value=1)
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            msg = (
                "indices must be a 1-D array of sorted unique non-negative integer cell ids; "
                f"got dtype {idx.dtype} and shape {idx.shape}"
            )
            raise InvalidArgumentError(msg)
        idx = idx.astype(np.int64, copy=False)
        n = idx.shape[0]
        if n > 1 and not bool(np.all(idx[1:] > idx[:-1])):
            msg = "indices must be sorted unique cell ids; use normalize_indices() to sort them"
            raise InvalidArgumentError(msg)
        if n and idx[0] < 0:
            msg = f"indices must be non-negative cell ids; got {int(idx[0])}"
            raise InvalidArgumentError(msg)
        if n == 0 or idx[-1] - idx[0] + 1 == n:
            return cls.build_range(int(idx[0]) if n else 0, int(idx[-1]) + 1 if n else 0, read_rows)
        chunk = idx // read_rows
        edges = np.flatnonzero(chunk[1:] != chunk[:-1]) + 1
        bounds = np.concatenate(([0], edges, [n])).astype(np.int64)
        return cls(_readonly(idx), 0, n, read_rows, _readonly(bounds), False)

    @property
    def n_cells(self) -> int:
        """Number of selected cells."""
        return self.size

    @property
    def n_runs(self) -> int:
        """Number of runs."""
        return int(self.bounds.shape[0] - 1)

    def cells(self, positions: np.ndarray) -> IntArray:
        """Cell ids at ``positions`` in ``indices``."""
        if self.ids is None:
            return positions + self.start
        return self.ids[positions]
