"""Resumable samplers that hand a loader the buffers to read, epoch by epoch.

A sampler is the stateful shell around the pure :func:`~atlasloader.sampling.plan.plan_epoch`:
it keeps the selection (as a :class:`~atlasloader.sampling.runs.RunTable`), the epoch and how
many batches of that epoch were already consumed, and regenerates the deterministic plan to
resume mid-epoch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any

import numpy.typing as npt

from ..errors import InvalidArgumentError
from ._checks import IntArray, _check_int, _check_member
from .buffers import Batcher, Buffer
from .plan import EpochPlan, plan_epoch
from .runs import RunTable, normalize_indices
from .shards import _resume_point, _shard_size, _worker_cells, num_batches

__all__ = ["Buffer", "BufferSampler", "ChunkShuffleSampler", "SequentialSampler"]

_STATE_KEYS = ("epoch", "seed", "batches_yielded")


class BufferSampler(ABC):
    """Base class of samplers yielding :class:`~atlasloader.sampling.buffers.Buffer` objects.

    Subclasses implement :meth:`_sample` (the buffers of one worker, after skipping batches)
    and :meth:`_worker_batch_counts`; this class validates arguments, keeps the resumable
    state and maps "batches consumed" to the batches each DataLoader worker must skip.

    State is ``(epoch, seed, batches_yielded)``: batches of this rank consumed in ``epoch``,
    counted in the order the training loop receives them (round-robin over workers, as torch's
    DataLoader does). :meth:`batches` counts by itself; a loader whose batches come from
    worker processes calls :meth:`advance` in the main process instead.
    """

    def __init__(
        self, *, batch_size: int, drop_last: bool, seed: int, rank: int, world_size: int
    ) -> None:
        self.batch_size = _check_int("batch_size", batch_size, min_value=1)
        self.drop_last = bool(drop_last)
        self.seed = _check_int("seed", seed, min_value=0)
        self.world_size = _check_int("world_size", world_size, min_value=1)
        self.rank = _check_member("rank", rank, "world_size", self.world_size)
        self.epoch = 0
        self._yielded = 0

    # -- abstract ----------------------------------------------------------------------------

    @abstractmethod
    def _sample(
        self, epoch: int, worker: int, num_workers: int, skip_batches: int
    ) -> Iterator[Buffer]:
        """Buffers of ``worker`` in ``epoch``, without its first ``skip_batches`` batches."""

    @abstractmethod
    def _worker_batch_counts(self, num_workers: int) -> list[int]:
        """Batches per epoch of each of ``num_workers`` workers of this rank."""

    # -- public ------------------------------------------------------------------------------

    @property
    def batches_yielded(self) -> int:
        """Batches of :attr:`epoch` already consumed."""
        return self._yielded

    def num_batches(self, num_workers: int = 1) -> int:
        """Batches this rank emits per epoch (each worker may end with a partial batch)."""
        nw = _check_int("num_workers", num_workers, min_value=1)
        return sum(self._worker_batch_counts(nw))

    def __len__(self) -> int:
        return self.num_batches(1)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; the consumed count restarts unless ``epoch`` is the current one.

        Keeping the count for the current epoch is what makes resuming work when a training
        loop (e.g. Lightning) calls ``set_epoch`` right after a checkpoint was loaded.
        """
        epoch = _check_int("epoch", epoch, min_value=0)
        if epoch != self.epoch:
            self.epoch, self._yielded = epoch, 0

    def advance(self, n: int = 1) -> None:
        """Record that ``n`` more batches of the current epoch were consumed."""
        self._yielded += _check_int("n", n, min_value=0)

    def state_dict(self) -> dict[str, int]:
        """Picklable state: ``{"epoch", "seed", "batches_yielded"}`` (plain ints)."""
        return {"epoch": self.epoch, "seed": self.seed, "batches_yielded": self._yielded}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next pass over that epoch yields the rest of it."""
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            msg = f"state must have the keys {list(_STATE_KEYS)}; missing {missing}"
            raise InvalidArgumentError(msg)
        epoch = _check_int("epoch", state["epoch"], min_value=0)
        seed = _check_int("seed", state["seed"], min_value=0)
        yielded = _check_int("batches_yielded", state["batches_yielded"], min_value=0)
        self.epoch, self.seed, self._yielded = epoch, seed, yielded

    def sample(
        self, epoch: int | None = None, *, worker: int = 0, num_workers: int = 1
    ) -> Iterator[Buffer]:
        """Buffers for ``worker`` of ``num_workers`` DataLoader workers, in read order.

        For the current :attr:`epoch` (the default) the batches already consumed are skipped
        (their rows are not even read); a finished epoch is served again from its start.
        When resuming with several workers, worker ``i`` serves the buffers of worker
        ``(i + start) % num_workers`` of the uninterrupted epoch (``start``: the worker whose
        turn was next), so a DataLoader that interleaves workers round-robin from worker 0
        emits the remaining batches in the original order. Arguments are checked now, not at
        the first ``next()``.

        Examples
        --------
        >>> import numpy as np
        >>> s = ChunkShuffleSampler(np.arange(100), 32, 8, 2, seed=1)
        >>> [b.n_rows for b in s.sample()]
        [16, 16, 16, 16, 16, 16, 4]
        """
        ep = self.epoch if epoch is None else _check_int("epoch", epoch, min_value=0)
        nw = _check_int("num_workers", num_workers, min_value=1)
        w = _check_member("worker", worker, "num_workers", nw)
        role, skip = w, 0
        if ep == self.epoch and self._yielded:
            counts = self._worker_batch_counts(nw)
            if self._yielded < sum(counts):
                skips, start = _resume_point(self._yielded, counts)
                # Rotate roles so the restarted round-robin continues where it stopped.
                role = (w + start) % nw
                skip = skips[role]
        return self._sample(ep, role, nw, skip)

    def batches(self, epoch: int | None = None) -> Iterator[IntArray]:
        """Cell ids of each batch, in one process, counting them for :meth:`state_dict`.

        ``epoch`` (if given) is applied with :meth:`set_epoch` first.

        Examples
        --------
        >>> import numpy as np
        >>> s = SequentialSampler(np.arange(10), 4, 2, 2)
        >>> [b.tolist() for b in s.batches()]
        [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        """
        if epoch is not None:
            self.set_epoch(epoch)
        if self._yielded >= self.num_batches(1):
            self._yielded = 0  # a finished epoch is served again from its start
        return self._count(self.sample())

    def _count(self, buffers: Iterator[Buffer]) -> Iterator[IntArray]:
        batcher: Batcher[IntArray] = Batcher(self.batch_size, self.drop_last)
        for batch in batcher.rebatch(b.cell_ids for b in buffers):
            # Counted before handing it over: a checkpoint taken while the batch is being
            # used must not replay it.
            self._yielded += 1
            yield batch


class ChunkShuffleSampler(BufferSampler):
    """Chunk-aware shuffled minibatches: shuffled runs of ``read_rows`` rows, shuffled buffers.

    See :func:`~atlasloader.sampling.plan.plan_epoch` for the exact semantics, notably the
    torch ``DistributedSampler`` behaviour across ranks (``drop_last=False`` pads each rank
    by wrapping around; ``drop_last=True`` drops the tail, then each worker's partial batch).

    Parameters
    ----------
    indices
        Selected cells: ``None`` (all ``n_obs``), a boolean mask or integer ids (sorted and
        de-duplicated; see :func:`~atlasloader.sampling.runs.normalize_indices`).
    batch_size, read_rows, reads_per_buffer, shuffle, drop_last, seed, rank, world_size
        As in :func:`~atlasloader.sampling.plan.plan_epoch`.
    n_obs
        Cells in the store; ids must be below it.

    Examples
    --------
    >>> import numpy as np
    >>> s = ChunkShuffleSampler(np.arange(1000), batch_size=128, read_rows=16,
    ...                         reads_per_buffer=8, seed=0)
    >>> s.set_epoch(3)
    >>> batches = list(s.batches())
    >>> len(batches), sorted(np.concatenate(batches).tolist()) == list(range(1000))
    (8, True)
    """

    def __init__(
        self,
        indices: npt.ArrayLike | None,
        batch_size: int,
        read_rows: int,
        reads_per_buffer: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        *,
        n_obs: int | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size, drop_last=drop_last, seed=seed, rank=rank, world_size=world_size
        )
        self.read_rows = _check_int("read_rows", read_rows, min_value=1)
        self.reads_per_buffer = _check_int("reads_per_buffer", reads_per_buffer, min_value=1)
        self.shuffle = bool(shuffle)
        # Built once: the O(n) split into runs does not depend on the epoch.
        if indices is None and n_obs is not None:  # all cells: a range, no per-cell array
            self.table = RunTable.build_range(
                0, _check_int("n_obs", n_obs, min_value=0), self.read_rows
            )
        else:
            self.table = RunTable.build(normalize_indices(indices, n_obs), self.read_rows)

    @property
    def indices(self) -> IntArray:
        """The selected cell ids (sorted, unique, read-only)."""
        return self.table.indices

    @property
    def buffer_rows(self) -> int:
        """Rows per buffer."""
        return self.read_rows * self.reads_per_buffer

    def plan(self, epoch: int | None = None, *, worker: int = 0, num_workers: int = 1) -> EpochPlan:
        """The full (unskipped) plan of ``worker`` in ``epoch`` (default: current epoch)."""
        return plan_epoch(
            self.table,
            batch_size=self.batch_size,
            read_rows=self.read_rows,
            reads_per_buffer=self.reads_per_buffer,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
            seed=self.seed,
            epoch=self.epoch if epoch is None else epoch,
            rank=self.rank,
            world_size=self.world_size,
            worker=worker,
            num_workers=num_workers,
        )

    def _sample(
        self, epoch: int, worker: int, num_workers: int, skip_batches: int
    ) -> Iterator[Buffer]:
        plan = self.plan(epoch, worker=worker, num_workers=num_workers)
        return plan.buffers(skip_batches)

    def _worker_batch_counts(self, num_workers: int) -> list[int]:
        shard = _shard_size(self.table.n_cells, self.world_size, self.drop_last)
        return [
            num_batches(
                _worker_cells(shard, self.buffer_rows, w, num_workers),
                self.batch_size,
                self.drop_last,
            )
            for w in range(num_workers)
        ]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_cells={self.table.n_cells}, batch_size={self.batch_size}, "
            f"read_rows={self.read_rows}, reads_per_buffer={self.reads_per_buffer}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}, "
            f"rank={self.rank}, world_size={self.world_size}, epoch={self.epoch})"
        )


class SequentialSampler(ChunkShuffleSampler):
    """Cells in ascending order, read ``read_rows * reads_per_buffer`` rows at a time.

    For inference. With ``world_size > 1`` each rank gets a contiguous block (padded by
    wrapping around unless ``drop_last``). With several DataLoader workers each worker emits
    whole buffers, so after the DataLoader's round-robin interleaving the order is ascending
    only when a buffer is exactly one batch (``buffer_rows == batch_size``).

    Examples
    --------
    >>> [b.tolist() for b in SequentialSampler([4, 2, 9], 2, read_rows=4, reads_per_buffer=1)
    ...  .batches()]
    [[2, 4], [9]]
    """

    def __init__(
        self,
        indices: npt.ArrayLike | None,
        batch_size: int,
        read_rows: int,
        reads_per_buffer: int,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        *,
        n_obs: int | None = None,
    ) -> None:
        super().__init__(
            indices,
            batch_size,
            read_rows,
            reads_per_buffer,
            shuffle=False,
            drop_last=drop_last,
            seed=0,
            rank=rank,
            world_size=world_size,
            n_obs=n_obs,
        )
