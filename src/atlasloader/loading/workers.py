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
import time
from collections.abc import Iterator
from typing import Any

from ..errors import AtlasLoaderError, WorkerDiedError
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

    return _Guarded(
        tud.DataLoader(
            WorkerBatches(pipeline, sampler),
            batch_size=None,
            num_workers=num_workers,
            pin_memory=pin_memory and torch.cuda.is_available(),
            multiprocessing_context=multiprocessing_context,
            prefetch_factor=2,
        )
    )


class _Guarded:
    """Iterates a worker ``DataLoader``, naming the worker when one died under it.

    torch notices a dead worker itself (its SIGCHLD handler, or a 5 s liveness check), but a
    worker killed while a batch is crossing to the main process surfaces as whatever the
    transfer raised (``ConnectionResetError`` from the file-descriptor handover, an EOF):
    any such error, raised while a worker has exited, becomes :class:`WorkerDiedError`
    naming the worker's pid and exit code.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[dict[str, Any]]:
        it = iter(self.loader)
        try:
            while True:
                try:
                    batch = next(it)
                except StopIteration:
                    return
                except AtlasLoaderError:
                    raise
                except Exception as e:
                    dead = _dead_workers(it, _TRANSFER_GRACE_S if _in_transfer(e) else 0.0)
                    if not dead:
                        raise
                    who = ", ".join(f"pid {pid} (exit code {code})" for pid, code in dead)
                    msg = (
                        f"DataLoader worker {who} ended in the middle of the epoch "
                        f"({type(e).__name__}: {e}); a worker killed by the system is often "
                        "out of memory: lower num_workers, prefetch or reads_per_buffer"
                    )
                    raise WorkerDiedError(msg) from e
                yield batch
        finally:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()


# A killed worker's end of the handover socket closes while the kernel tears the process down,
# a moment before the process can be reaped: a transfer error may reach us before its exit code.
_TRANSFER_GRACE_S = 5.0


def _in_transfer(e: BaseException) -> bool:
    """Whether ``e`` is what a batch's handover raises when its sender vanished mid-transfer."""
    return isinstance(e, ConnectionError | EOFError)


def _dead_workers(it: Any, grace_s: float = 0.0) -> list[tuple[int, int]]:
    """``(pid, exitcode)`` of the iterator's worker processes that have exited.

    With ``grace_s`` > 0, waits up to that long for one to exit before answering none.
    """
    deadline = time.monotonic() + grace_s
    while True:
        dead = []
        for proc in getattr(it, "_workers", ()):
            code = proc.exitcode
            if code is not None and code != 0:
                dead.append((proc.pid, code))
        if dead or time.monotonic() >= deadline:
            return dead
        time.sleep(0.02)
