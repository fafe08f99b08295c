"""``BatchPipeline``: buffers in, finished tensor batches out, on a pool of threads.

The same pipeline runs in the loader's process or inside each DataLoader worker process
(:mod:`.workers`). A thread pool reads buffers ahead of the consumer (Zarr decoding releases the
GIL), the :class:`~atlasloader.sampling.Batcher` cuts the buffers' rows into batches (carrying
remainders into the next buffer), and the same threads collate (gather, densify) a few batches
ahead, so the consumer only receives finished tensors. Memory is bounded by ``prefetch``
buffers plus the batches in flight.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..sampling import Batcher, Buffer
from .collate import collate
from .fetch import RowFetcher
from .pool import ArrayPool, pool_for
from .rows import RowSet

INDICES_KEY = "ind_x"  # scvi-tools' REGISTRY_KEYS.INDICES_KEY


def run_cells(runs: np.ndarray) -> np.ndarray:
    """The cell ids of ``[start, stop)`` runs, concatenated in order."""
    runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    lengths = runs[:, 1] - runs[:, 0]
    offsets = np.cumsum(lengths) - lengths
    ids = np.repeat(runs[:, 0] - offsets, lengths)
    ids += np.arange(int(lengths.sum()), dtype=np.int64)
    return ids


@dataclass
class BatchPipeline:
    """Reads and collates the batches of a stream of buffers (picklable, for worker processes).

    Parameters
    ----------
    fetchers
        Row fetcher of each registry key to load.
    dtypes
        Output dtype of each key (the keys of ``fetchers``).
    batch_size, drop_last
        As the loader's.
    sparse, pin_memory
        As the loader's: keep sparse ``X`` sparse; pin outputs when CUDA is available.
    num_threads
        Reading and collating threads.
    prefetch
        Buffers read ahead of the one being cut into batches.
    """

    fetchers: Mapping[str, RowFetcher]
    dtypes: Mapping[str, np.dtype]
    batch_size: int
    drop_last: bool
    sparse: bool
    pin_memory: bool
    num_threads: int
    prefetch: int
    load_indices: bool = False

    def read_buffer(self, buffer: Buffer) -> RowSet:
        """Decode a buffer's runs in store order; its permutation is applied when collating."""
        blocks = {key: f.read_runs(buffer.runs) for key, f in self.fetchers.items()}
        if self.load_indices:
            blocks[INDICES_KEY] = run_cells(buffer.runs).reshape(-1, 1)
        return RowSet([(blocks, buffer.order)])

    def collate_rows(self, rows: RowSet, arrays: ArrayPool | None = None) -> dict[str, Any]:
        out = {
            key: collate(list(rows.blocks(key)), dtype, self.sparse, self.pin_memory, arrays)
            for key, dtype in self.dtypes.items()
        }
        if self.load_indices:
            out[INDICES_KEY] = collate(
                list(rows.blocks(INDICES_KEY)), np.dtype(np.int64), False, self.pin_memory
            )
        return out

    def run(self, buffers: Iterator[Buffer]) -> Iterator[dict[str, Any]]:
        """Batches (dicts of CPU tensors) of ``buffers``, in order.

        An exception raised in a thread is re-raised here, when its result is due.
        """
        batcher: Batcher[RowSet] = Batcher(self.batch_size, self.drop_last, concat=RowSet.concat)
        depth = self.num_threads + 1  # batches collated ahead of the consumer
        arrays = pool_for(depth)
        collate_rows = functools.partial(self.collate_rows, arrays=arrays)
        with ThreadPoolExecutor(self.num_threads, thread_name_prefix="atlasloader") as pool:
            rows = batcher.rebatch(ahead(buffers, pool, self.read_buffer, self.prefetch))
            yield from ahead(rows, pool, collate_rows, depth)


def ahead(
    items: Iterator[Any], pool: ThreadPoolExecutor, fn: Callable[[Any], Any], depth: int
) -> Iterator[Any]:
    """``map(fn, items)`` in ``pool`` with ``depth`` calls in flight, results in order.

    An exception in a thread is re-raised here, in the consumer, when its result is due;
    calls not yet started are cancelled when the consumer stops early.
    """
    queue: deque[Future[Any]] = deque()
    try:
        for item in items:
            queue.append(pool.submit(fn, item))
            if len(queue) > depth:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()
    finally:
        for fut in queue:
            fut.cancel()
