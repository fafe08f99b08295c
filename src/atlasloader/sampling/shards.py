"""How an epoch divides among DDP ranks, DataLoader workers and batches (sizes only).

Ranks get equal contiguous shards of the epoch's stream (torch ``DistributedSampler``
semantics), workers get a shard's buffers round-robin, and a resumed epoch maps "batches
consumed" back to the batches each worker already emitted. Pure integer arithmetic: nothing
here builds a plan or touches a cell id.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._checks import _check_int

__all__ = ["num_batches"]


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


def _resume_point(done: int, counts: Sequence[int]) -> tuple[list[int], int]:
    """Where each worker stands after the first ``done`` batches of an epoch.

    Models ``torch.utils.data.DataLoader`` over an ``IterableDataset`` with ``in_order=True``
    (the default): it emits one batch of worker 0, of worker 1, ..., round after round,
    skipping exhausted workers. Batch ``r`` of worker ``w`` thus has the position
    ``r * nw + w``, and the first ``done`` batches are those before some position
    ``T = r0 * nw + start``.

    Returns
    -------
    skips
        Batches already emitted, per worker.
    start
        The worker whose turn is next. A resumed DataLoader begins its round-robin at worker 0
        again, so its worker ``i`` must play worker ``(i + start) % nw``: every remaining
        position then shifts by the same ``T``, which keeps the original order.
    """
    nw = len(counts)
    done = min(done, sum(counts))
    # r0 = full rounds completed: the largest r with sum(min(c, r)) <= done (binary search:
    # counts can be millions, workers are few).
    lo, hi = 0, max(counts, default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(c, mid) for c in counts) <= done:
            lo = mid
        else:
            hi = mid - 1
    skips = [min(c, lo) for c in counts]
    rem = done - sum(skips)
    start = 0
    # The partial round reached the first ``rem`` workers that still had a batch in it.
    for w in range(nw):
        if rem == 0:
            break
        if counts[w] > lo:
            skips[w] += 1
            rem -= 1
            start = w + 1
    if start == nw:
        start = 0
    return skips, start
