"""Shuffle buffers and batching: what one buffer reads, in which order it emits the rows.

A :class:`Buffer` is a set of contiguous reads (runs, sorted for I/O) plus the permutation
that emits the rows read; a :class:`Batcher` cuts a worker's stream of buffers into batches
of exactly ``batch_size`` rows, carrying rows over so a batch may straddle two buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from ._checks import IntArray, _check_int, _readonly
from .runs import _expand_ranges, _runs_from_sorted

__all__ = ["Batcher", "Buffer"]

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Buffer:
    """One shuffle buffer: what to read, and in which order to emit the rows read.

    Attributes
    ----------
    runs
        ``(k, 2)`` int64 ``[start, stop)`` cell-id ranges, sorted by ``start`` for I/O. Each
        lies within one ``read_rows``-aligned chunk. Ranges only overlap when wrap-around
        padding (``world_size`` not dividing the cell count) repeats a cell in one buffer.
    order
        Permutation of ``range(n_rows)``: output row ``j`` is row ``order[j]`` of the
        concatenation of the runs, in ``runs`` order.
    index
        Buffer number within the rank's epoch (buffers are dealt round-robin to workers).
    stream_offset
        Rows the same worker emitted this epoch before this buffer; batches start at worker
        stream positions that are multiples of ``batch_size``.
    splits
        Positions in output order where a new batch starts (a batch may begin in the previous
        buffer and end in this one).

    Examples
    --------
    >>> b = Buffer.from_cells(np.array([9, 2, 3, 8]), read_rows=4)
    >>> b.runs.tolist(), b.order.tolist(), b.cell_ids.tolist()
    ([[2, 4], [8, 10]], [3, 0, 1, 2], [9, 2, 3, 8])
    """

    runs: IntArray
    order: IntArray
    index: int = 0
    stream_offset: int = 0
    splits: IntArray = field(default_factory=lambda: _readonly(np.empty(0, dtype=np.int64)))

    @property
    def n_rows(self) -> int:
        """Number of rows read (and emitted)."""
        return int(self.order.shape[0])

    @property
    def cell_ids(self) -> IntArray:
        """Cell ids in output order (what the rows read and permuted by ``order`` are)."""
        sorted_cells = _expand_ranges(self.runs[:, 0], self.runs[:, 1] - self.runs[:, 0])
        return sorted_cells[self.order]

    @classmethod
    def from_cells(
        cls,
        cells: npt.ArrayLike,
        read_rows: int,
        *,
        index: int = 0,
        stream_offset: int = 0,
        batch_size: int | None = None,
    ) -> Buffer:
        """Build the buffer that emits ``cells`` in the given order.

        ``batch_size`` (with ``stream_offset``) fills :attr:`splits`; without it ``splits``
        is empty.
        """
        c = np.asarray(cells, dtype=np.int64)
        # Stable sort: with repeated cells (padding) the order stays a well-defined bijection.
        s = np.argsort(c, kind="stable")
        order = np.empty_like(s)
        order[s] = np.arange(s.shape[0], dtype=np.int64)
        return cls._make(
            _runs_from_sorted(c[s], read_rows), order, index, stream_offset, batch_size
        )

    @classmethod
    def _make(
        cls,
        runs: IntArray,
        order: IntArray,
        index: int,
        stream_offset: int,
        batch_size: int | None,
    ) -> Buffer:
        if batch_size is None:
            splits = np.empty(0, dtype=np.int64)
        else:
            splits = np.arange((-stream_offset) % batch_size, order.shape[0], batch_size)
        return cls(_readonly(runs), _readonly(order), index, stream_offset, _readonly(splits))


class Batcher(Generic[T]):
    """Cut a stream of row blocks (buffers) into batches of exactly ``batch_size`` rows.

    Rows left over at the end of a block are carried over and completed by the next block, so
    batches may straddle buffers. :meth:`finish` emits the last, smaller batch unless
    ``drop_last``. Full batches inside one block are slices (views for numpy) of that block.

    Parameters
    ----------
    batch_size
        Rows per batch.
    drop_last
        Drop the final partial batch.
    concat
        Joins the pieces of a straddling batch; ``np.concatenate`` by default. Pass e.g.
        ``scipy.sparse.vstack`` or ``torch.cat`` for other row containers (which must support
        ``len`` and slicing).

    Examples
    --------
    >>> b = Batcher(4)
    >>> [x.tolist() for x in b.push(np.arange(6))]
    [[0, 1, 2, 3]]
    >>> [x.tolist() for x in b.push(np.arange(6, 9))]
    [[4, 5, 6, 7]]
    >>> [x.tolist() for x in b.finish()]
    [[8]]
    """

    def __init__(
        self,
        batch_size: int,
        drop_last: bool = False,
        concat: Callable[[Sequence[T]], T] | None = None,
    ) -> None:
        self.batch_size = _check_int("batch_size", batch_size, min_value=1)
        self.drop_last = bool(drop_last)
        self._concat: Callable[[Sequence[T]], T] = (
            concat if concat is not None else np.concatenate  # type: ignore[assignment]
        )
        # Pieces are joined once a batch is complete: joining at every push would be
        # quadratic when blocks are much smaller than a batch.
        self._pieces: list[T] = []
        self._pending = 0

    @property
    def pending(self) -> int:
        """Rows carried over, waiting for the next block."""
        return self._pending

    def push(self, rows: T) -> list[T]:
        """Add a block of rows; return the batches it completes (eagerly, so state is exact)."""
        n = len(rows)  # type: ignore[arg-type]
        bs = self.batch_size
        out: list[T] = []
        pos = 0
        if self._pending:
            need = bs - self._pending
            if n < need:
                if n:
                    self._pieces.append(rows)
                    self._pending += n
                return out
            self._pieces.append(rows[:need])  # type: ignore[index]
            out.append(self._concat(self._pieces))
            self._pieces, self._pending, pos = [], 0, need
        while n - pos >= bs:
            out.append(rows[pos : pos + bs])  # type: ignore[index]
            pos += bs
        if pos < n:
            self._pieces, self._pending = [rows[pos:]], n - pos  # type: ignore[index]
        return out

    def finish(self) -> list[T]:
        """End of stream: the partial batch (unless ``drop_last``); resets the carry-over."""
        out = [] if self.drop_last or not self._pending else [self._concat(self._pieces)]
        self._pieces, self._pending = [], 0
        return out

    def rebatch(self, blocks: Iterable[T]) -> Iterator[T]:
        """Batches of all ``blocks``, then :meth:`finish`."""
        for block in blocks:
            yield from self.push(block)
        yield from self.finish()
