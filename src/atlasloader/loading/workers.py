"""DataLoader worker processes: each worker reads and collates its own share of the buffers.

:class:`WorkerBatches` is a ``torch.utils.data.IterableDataset`` of whole batches. Inside worker
``w`` of ``n`` it asks the sampler for that worker's buffers (``sample(worker=w,
num_workers=n)``): workers get disjoint sets of cells that together cover the rank's shard, and
a resumed epoch skips exactly the batches already consumed, given torch's round-robin order over
workers. The loader wraps it in a ``DataLoader(batch_size=None)``: batches cross to the main
process through shared memory, and an exception in a worker is re-raised there.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from ..sampling import ChunkShuffleSampler
from .pipeline import BatchPipeline


def _torch_data() -> Any:
    import torch.utils.data as tud

    return tud


class WorkerBatches(_torch_data().IterableDataset):  # type: ignore[misc]
    """The batches of one epoch, split among the DataLoader's worker processes.

    Parameters
    ----------
    pipeline
        Reads and collates (runs inside each worker).
    sampler
        The loader's sampler, copied with its epoch and position at construction.
    """

    def __init__(self, pipeline: BatchPipeline, sampler: ChunkShuffleSampler) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.sampler = copy.deepcopy(sampler)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = _torch_data().get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        buffers = self.sampler.sample(worker=worker, num_workers=num_workers)
        return self.pipeline.run(buffers)


def worker_loader(
    pipeline: BatchPipeline,
    sampler: ChunkShuffleSampler,
    num_workers: int,
    pin_memory: bool,
    multiprocessing_context: Any = None,
) -> Any:
    """A ``DataLoader`` yielding the epoch's batches from ``num_workers`` worker processes."""
    tud = _torch_data()
    import torch

    return tud.DataLoader(
        WorkerBatches(pipeline, sampler),
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        multiprocessing_context=multiprocessing_context,
        prefetch_factor=2,
    )
