"""Loading: fetch rows, prefetch in the background, collate to (pinned, device) tensors.

Modules: :mod:`.loader` (:class:`AnnDataLoader`), :mod:`.fetch` (rows of one field, through
:class:`~atlasloader.reading.chunks.ChunkReader`), :mod:`.pipeline` and :mod:`.pool` (reading
and collating threads, the prefetch buffer), :mod:`.collate` and :mod:`.rows` (dict batches,
dense or sparse), :mod:`.device` (pinned memory, copies ahead), :mod:`.workers` (DataLoader
worker processes), :mod:`.multi` (several stores), :mod:`.allocator` (glibc tuning).

Imports: loading may import :mod:`atlasloader.sampling` (the epoch plan),
:mod:`atlasloader.store`, :mod:`atlasloader.reading` and :mod:`atlasloader.errors`; never
fields or the manager (it takes a registered manager as an argument).
"""

from .loader import AnnDataLoader

__all__ = ["AnnDataLoader"]
