"""Index maths of chunk-aware shuffled minibatches (pure numpy, no I/O).

:func:`plan_epoch` is the pure core: it turns a cell selection, a seed and an epoch into the
buffers (contiguous reads plus an in-buffer permutation) and batches each DataLoader worker of
each DDP rank emits. :class:`ChunkShuffleSampler` and :class:`SequentialSampler` wrap it with
resumable state.

Modules, lowest first (each imports only those above it):

- ``_checks``: argument checks, read-only views, the ``int64`` array type;
- ``runs``: the selection and its runs (:func:`normalize_indices`, :class:`RunTable`);
- ``buffers``: one shuffle buffer and batching across buffers (:class:`Buffer`,
  :class:`Batcher`);
- ``shards``: sizes of rank shards, worker deals and batches, and where each worker stands
  when an epoch resumes (:func:`num_batches`);
- ``plan``: one worker's plan of one epoch (:class:`EpochPlan`, :func:`plan_epoch`);
- ``sampler``: the resumable samplers.

The room may import only :mod:`atlasloader.errors` from the package, plus numpy; every other
room that needs index maths imports it from here.

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

from .buffers import Batcher, Buffer
from .plan import EpochPlan, plan_epoch
from .runs import RunTable, normalize_indices
from .sampler import BufferSampler, ChunkShuffleSampler, SequentialSampler
from .shards import num_batches

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
