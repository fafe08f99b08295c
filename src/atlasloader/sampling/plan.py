"""Pure index maths of one epoch of chunk-aware shuffled minibatches.

Reading single random rows from a Zarr store is slow; reading a contiguous run of rows that
lies inside one stored row chunk is fast. An epoch is therefore planned as:

1. split the selected cells into *runs*: the selected cells of one ``read_rows``-aligned chunk
   of cell ids (``cell_id // read_rows``), so a run never straddles two store chunks
   (:class:`RunTable`, epoch independent);
2. shuffle the order of the runs with ``np.random.default_rng((seed, epoch))`` and lay them end
   to end into one *stream* of cells;
3. deal the stream to DDP ranks in equal contiguous shards (torch ``DistributedSampler``
   semantics: pad by wrapping around, or drop the tail with ``drop_last``);
4. cut each rank's shard into *buffers* of ``read_rows * reads_per_buffer`` rows, deal the
   buffers round-robin to DataLoader workers, permute the rows inside each buffer and cut the
   worker's stream of permuted rows into batches (:class:`Batcher`).

Everything here is deterministic in ``(seed, epoch, rank, world_size, worker, num_workers)``,
uses no global random state and does no I/O. Per-cell and per-run work is vectorised; buffers
are materialised lazily, one at a time.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from ..errors import InvalidArgumentError

__all__ = [
    "Batcher",
    "Buffer",
    "EpochPlan",
    "RunTable",
    "normalize_indices",
    "num_batches",
    "plan_epoch",
]

IntArray = npt.NDArray[np.int64]
T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, *, min_value: int) -> int:
    """Return ``value`` as an ``int`` or raise :class:`InvalidArgumentError`."""
    # bool is an int subclass; ``batch_size=True`` is a bug, not a batch of one.
    if isinstance(value, bool | np.bool_):
        msg = f"{name} must be an integer >= {min_value}; got the boolean {value!r}"
        raise InvalidArgumentError(msg)
    try:
        ivalue = operator.index(value)
    except TypeError:
        msg = f"{name} must be an integer >= {min_value}; got {value!r} ({type(value).__name__})"
        raise InvalidArgumentError(msg) from None
    if ivalue < min_value:
        msg = f"{name} must be an integer >= {min_value}; got {ivalue}"
        raise InvalidArgumentError(msg)
    return ivalue


def _check_member(name: str, value: Any, count_name: str, count: int) -> int:
    """Validate an index ``0 <= value < count`` (``rank < world_size``, ``worker < ...``)."""
    ivalue = _check_int(name, value, min_value=0)
    if ivalue >= count:
        msg = f"{name} must be in [0, {count_name}) = [0, {count}); got {name}={ivalue}"
        raise InvalidArgumentError(msg)
    return ivalue


def _readonly(a: np.ndarray) -> np.ndarray:
    # A read-only *view* keeps frozen dataclasses honest without copying (or freezing) an
    # array the caller still owns.
    v = a.view()
    v.flags.writeable = False
    return v


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


def num_batches(n_cells: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches cut from a shard of ``n_cells`` cells.

    Examples
    --------
    >>> num_batches(10, 4, drop_last=False), num_batches(10, 4, drop_last=True)
    (3, 2)
    """
    n_cells = _check_int("n_cells", n_cells, min_value=0)
    batch_size = _check_int("batch_size", batch_size, min_value=1)
    return n_cells // batch_size if drop_last else -(-n_cells // batch_size)


def _shard_size(n_cells: int, world_size: int, drop_last: bool) -> int:
    """Cells per rank: torch ``DistributedSampler`` pads up (or, with ``drop_last``, cuts down)."""
    return n_cells // world_size if drop_last else -(-n_cells // world_size)


def _worker_cells(shard_size: int, buffer_rows: int, worker: int, num_workers: int) -> int:
    """Cells a worker is dealt when a shard's buffers go round-robin to the workers."""
    nb = -(-shard_size // buffer_rows)
    n = len(range(worker, nb, num_workers)) * buffer_rows
    if nb and (nb - 1) % num_workers == worker:
        # Only the rank's last buffer can be short, and it is this worker's last.
        n -= nb * buffer_rows - shard_size
    return n


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


# --------------------------------------------------------------------------------------------
# Buffer and Batcher
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Runs and epoch plans
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True, eq=False)
class EpochPlan:
    """The batches one DataLoader worker of one rank emits in one epoch.

    Build it with :func:`plan_epoch`. It holds only per-run arrays (shuffled run order and
    their offsets in the epoch's stream); buffers and batches are produced lazily.

    Attributes
    ----------
    table
        The runs of the selection.
    run_order
        ``(n_runs,)`` run ids in stream order (shuffled, or ascending).
    run_offsets
        ``(n_runs + 1,)`` stream position where each run of ``run_order`` starts.
    shard_start, shard_size
        This rank's shard: stream positions ``[shard_start, shard_start + shard_size)``, where
        positions ``>= n_cells`` wrap around (padding).
    batch_size, reads_per_buffer, shuffle, drop_last, seed, epoch
        As passed to :func:`plan_epoch`.
    rank, world_size, worker, num_workers
        As passed to :func:`plan_epoch`.
    """

    table: RunTable
    run_order: IntArray
    run_offsets: IntArray
    shard_start: int
    shard_size: int
    batch_size: int
    reads_per_buffer: int
    shuffle: bool
    drop_last: bool
    seed: int
    epoch: int
    rank: int
    world_size: int
    worker: int
    num_workers: int

    # -- sizes (pure arithmetic) -------------------------------------------------------------

    @property
    def buffer_rows(self) -> int:
        """Rows per buffer: ``read_rows * reads_per_buffer`` (the last one may be smaller)."""
        return self.table.read_rows * self.reads_per_buffer

    @property
    def num_rank_buffers(self) -> int:
        """Buffers in this rank's shard, over all workers."""
        return -(-self.shard_size // self.buffer_rows)

    @property
    def buffer_ids(self) -> range:
        """This worker's buffers (rank buffer numbers ``worker, worker + num_workers, ...``)."""
        return range(self.worker, self.num_rank_buffers, self.num_workers)

    def worker_cells(self, worker: int | None = None) -> int:
        """Rows (cells, padding included) that ``worker`` (default: this one) is dealt."""
        w = (
            self.worker
            if worker is None
            else _check_member("worker", worker, "num_workers", self.num_workers)
        )
        return _worker_cells(self.shard_size, self.buffer_rows, w, self.num_workers)

    def worker_batch_counts(self) -> list[int]:
        """Batches of every worker of this rank (what a DataLoader interleaves)."""
        return [
            num_batches(self.worker_cells(w), self.batch_size, self.drop_last)
            for w in range(self.num_workers)
        ]

    @property
    def n_cells(self) -> int:
        """Cells this worker is dealt (before ``drop_last`` drops a partial batch)."""
        return self.worker_cells()

    @property
    def num_batches(self) -> int:
        """Batches this worker emits."""
        return num_batches(self.n_cells, self.batch_size, self.drop_last)

    def __len__(self) -> int:
        return self.num_batches

    # -- materialisation ---------------------------------------------------------------------

    def _stream_cells(self, a: int, b: int) -> IntArray:
        """Cell ids at (wrapping) stream positions ``[a, b)``, in stream order."""
        n = self.table.n_cells
        offsets, bounds = self.run_offsets, self.table.bounds
        starts: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        while a < b:  # at most two rounds: a shard is never longer than the stream
            base = a - a % n
            lo, hi = a - base, min(b - base, n)
            k0 = int(np.searchsorted(offsets, lo, side="right")) - 1
            k1 = int(np.searchsorted(offsets, hi, side="left"))
            u_lo, u_hi = offsets[k0:k1], offsets[k0 + 1 : k1 + 1]
            s, e = np.maximum(u_lo, lo), np.minimum(u_hi, hi)
            starts.append(bounds[self.run_order[k0:k1]] + (s - u_lo))
            lengths.append(e - s)
            a = base + hi
        if not starts:
            return np.empty(0, dtype=np.int64)
        return self.table.cells(_expand_ranges(np.concatenate(starts), np.concatenate(lengths)))

    def _buffer_rng(self, index: int) -> np.random.Generator:
        # Keyed per buffer, so a resumed epoch regenerates a buffer without replaying the
        # earlier ones; trailing +1s keep the key distinct from the run-order key.
        return np.random.default_rng((self.seed, self.epoch, self.rank + 1, index + 1))

    def buffers(self, skip_batches: int = 0) -> Iterator[Buffer]:
        """This worker's buffers, lazily, after skipping ``skip_batches`` batches.

        Rows of skipped batches and rows ``drop_last`` would drop are not in the buffers, so
        they are never read.
        """
        # Checked here, not at the first ``next()`` of a generator.
        return self._buffers(_check_int("skip_batches", skip_batches, min_value=0))

    def _buffers(self, skip_batches: int) -> Iterator[Buffer]:
        bs, brows = self.batch_size, self.buffer_rows
        n_used = self.num_batches * bs if self.drop_last else self.n_cells
        first = skip_batches * bs
        if first >= n_used:
            return
        rr = self.table.read_rows
        for j in range(first // brows, -(-n_used // brows)):
            i = self.worker + j * self.num_workers
            a = self.shard_start + i * brows
            cells = self._stream_cells(a, self.shard_start + min((i + 1) * brows, self.shard_size))
            lo, hi = max(first - j * brows, 0), min(n_used - j * brows, cells.shape[0])
            offset = j * brows + lo
            if self.shuffle:
                sorted_cells = np.sort(cells)
                perm = self._buffer_rng(i).permutation(cells.shape[0])
                if lo == 0 and hi == cells.shape[0]:
                    runs = _runs_from_sorted(sorted_cells, rr)
                    yield Buffer._make(runs, perm, i, offset, bs)
                    continue
                out = sorted_cells[perm[lo:hi]]
            else:
                out = cells[lo:hi]
            yield Buffer.from_cells(out, rr, index=i, stream_offset=offset, batch_size=bs)

    def batches(self, skip_batches: int = 0) -> Iterator[IntArray]:
        """Cell ids of each batch this worker emits, after skipping ``skip_batches``."""
        batcher: Batcher[IntArray] = Batcher(self.batch_size, self.drop_last)
        return batcher.rebatch(b.cell_ids for b in self.buffers(skip_batches))


def plan_epoch(
    indices: npt.ArrayLike | RunTable,
    *,
    batch_size: int,
    read_rows: int,
    reads_per_buffer: int,
    shuffle: bool,
    drop_last: bool,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    worker: int = 0,
    num_workers: int = 1,
) -> EpochPlan:
    """Plan the batches of one worker of one rank for one epoch.

    Parameters
    ----------
    indices
        Sorted unique int64 cell ids (see :func:`normalize_indices`), or a prebuilt
        :class:`RunTable` (its ``read_rows`` must equal ``read_rows``) to skip the O(n) split.
    batch_size
        Cells per batch.
    read_rows
        Rows per read; runs are aligned to ``cell_id // read_rows`` so none straddles a chunk.
    reads_per_buffer
        A buffer holds ``read_rows * reads_per_buffer`` rows; rows are shuffled within it.
    shuffle
        Shuffle run order (``np.random.default_rng((seed, epoch))``) and rows within buffers.
        Without it, each rank's cells come in ascending order (one worker emits its buffers'
        cells in order; several workers interleave whole buffers).
    drop_last
        torch ``DistributedSampler`` semantics across ranks: ``False`` pads each rank to
        ``ceil(n / world_size)`` cells by wrapping around to the stream start (a few cells are
        then seen twice per epoch), ``True`` drops the stream tail to ``n // world_size`` cells
        per rank. Then, per worker, ``True`` also drops the final partial batch.
    seed, epoch
        All randomness derives from them (and rank and buffer number); no global state.
    rank, world_size
        DDP shard: each rank gets a contiguous slice of the shuffled run stream, so shards are
        disjoint (up to padding), equal in size, and re-dealt every epoch.
    worker, num_workers
        DataLoader worker: takes the rank's buffers ``worker, worker + num_workers, ...``, so
        each buffer is read by one worker and the workers together emit the rank's cells.

    Returns
    -------
    EpochPlan

    Notes
    -----
    Buffers hold a fixed number of rows, not of runs, so that equal shards give every rank
    the same number of batches (unequal counts hang DDP). A buffer boundary can therefore split
    a run into two reads of the same chunk: at most one extra read per buffer.

    Examples
    --------
    >>> plan = plan_epoch(np.arange(10), batch_size=4, read_rows=2, reads_per_buffer=2,
    ...                   shuffle=False, drop_last=False, seed=0, epoch=0)
    >>> [b.tolist() for b in plan.batches()]
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    >>> plan = plan_epoch(np.arange(10), batch_size=4, read_rows=2, reads_per_buffer=2,
    ...                   shuffle=True, drop_last=False, seed=0, epoch=0)
    >>> sorted(np.concatenate(list(plan.batches())).tolist()) == list(range(10))
    True
    """
    batch_size = _check_int("batch_size", batch_size, min_value=1)
    read_rows = _check_int("read_rows", read_rows, min_value=1)
    reads_per_buffer = _check_int("reads_per_buffer", reads_per_buffer, min_value=1)
    seed = _check_int("seed", seed, min_value=0)
    epoch = _check_int("epoch", epoch, min_value=0)
    world_size = _check_int("world_size", world_size, min_value=1)
    rank = _check_member("rank", rank, "world_size", world_size)
    num_workers = _check_int("num_workers", num_workers, min_value=1)
    worker = _check_member("worker", worker, "num_workers", num_workers)
    if isinstance(indices, RunTable):
        if indices.read_rows != read_rows:
            msg = (
                f"read_rows must match the RunTable's read_rows={indices.read_rows}; "
                f"got read_rows={read_rows}"
            )
            raise InvalidArgumentError(msg)
        table = indices
    else:
        table = RunTable.build(indices, read_rows)

    n, n_runs = table.n_cells, table.n_runs
    if shuffle:
        run_order = np.random.default_rng((seed, epoch)).permutation(n_runs).astype(np.int64)
    else:
        run_order = np.arange(n_runs, dtype=np.int64)
    run_offsets = np.zeros(n_runs + 1, dtype=np.int64)
    np.cumsum(np.diff(table.bounds)[run_order], out=run_offsets[1:])

    shard_size = _shard_size(n, world_size, drop_last)
    return EpochPlan(
        table=table,
        run_order=_readonly(run_order),
        run_offsets=_readonly(run_offsets),
        shard_start=rank * shard_size,
        shard_size=shard_size,
        batch_size=batch_size,
        reads_per_buffer=reads_per_buffer,
        shuffle=bool(shuffle),
        drop_last=bool(drop_last),
        seed=seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        worker=worker,
        num_workers=num_workers,
    )
