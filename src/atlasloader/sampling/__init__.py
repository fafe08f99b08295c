"""Index maths of chunk-aware shuffled minibatches (pure numpy, no I/O).

:func:`plan_epoch` is the pure core: it turns a cell selection, a seed and an epoch into the
buffers (contiguous reads plus an in-buffer permutation) and batches each DataLoader worker of
each DDP rank emits. :class:`ChunkShuffleSampler` and :class:`SequentialSampler` wrap it with
resumable state.

Examples
--------
>>> import numpy as np
>>> from atlasloader.sampling import ChunkShuffleSampler
>>> s = ChunkShuffleSampler(np.arange(10_000), batch_size=256, read_rows=16,
...                         reads_per_buffer=64, seed=0)
>>> buf = next(s.sample(epoch=0))
>>> buf.runs.shape, buf.n_rows
((64, 2), 1024)
"""

from __future__ import annotations

from .plan import (
    Batcher,
    Buffer,
    EpochPlan,
    RunTable,
    normalize_indices,
    num_batches,
    plan_epoch,
)
from .sampler import BufferSampler, ChunkShuffleSampler, SequentialSampler

__all__ = [
    "Batcher",
    "Buffer",
    "BufferSampler",
    "ChunkShuffleSampler",
    "EpochPlan",
    "RunTable",
    "SequentialSampler",
    "normalize_indices",
    "num_batches",
    "plan_epoch",
]
