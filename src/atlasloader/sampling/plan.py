"""The epoch plan: run order, a rank's shard of the stream, a worker's buffers.

Reading single random rows from a Zarr store is slow; reading a contiguous run of rows that
lies inside one stored row chunk is fast. An epoch is therefore planned as:

1. split the selected cells into *runs*: the selected cells of one ``read_rows``-aligned chunk
   of cell ids (``cell_id // read_rows``), so a run never straddles two store chunks
   (:class:`~.runs.RunTable`, epoch independent);
2. shuffle the order of the runs with ``np.random.default_rng((seed, epoch))`` and lay them end
   to end into one *stream* of cells;
3. deal the stream to DDP ranks in equal contiguous shards (torch ``DistributedSampler``
   semantics: pad by wrapping around, or drop the tail with ``drop_last``; sizes in
   :mod:`.shards`);
4. cut each rank's shard into *buffers* of ``read_rows * reads_per_buffer`` rows, deal the
   buffers round-robin to DataLoader workers, permute the rows inside each buffer and cut the
   worker's stream of permuted rows into batches (:class:`~.buffers.Buffer`,
   :class:`~.buffers.Batcher`).

This module owns steps 2 to 4 for one worker of one rank (:class:`EpochPlan`, built by
:func:`plan_epoch`): it holds per-run arrays only and materialises buffers on demand.

Everything here is deterministic in ``(seed, epoch, rank, world_size, worker, num_workers)``,
uses no global random state and does no I/O. Per-cell and per-run work is vectorised; buffers
are materialised lazily, one at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..errors import InvalidArgumentError
from ._checks import IntArray, _check_int, _check_member, _readonly
from .buffers import Batcher, Buffer
from .runs import RunTable, _expand_ranges, _runs_from_sorted
from .shards import _shard_size, _worker_cells, num_batches

__all__ = ["EpochPlan", "plan_epoch"]


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
