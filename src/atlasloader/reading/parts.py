"""What :class:`~.chunks.ChunkReader` supplies to its local and remote halves (typing only).

:class:`~.local_reads.LocalReads` and :class:`~.remote_reads.RemoteReads` are mixins of the
reader; :class:`ReaderParts`, their common base, declares the state and methods they use from it
(the shard-index cache, the decoding, the error messages), so each half type-checks alone.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from .layout import _Layout

if TYPE_CHECKING:
    from ..errors import CorruptChunkError


class ReaderParts:
    """Declarations of the :class:`~.chunks.ChunkReader` state its halves share."""

    array: zarr.Array
    dtype: np.dtype
    index_cache_size: int
    _fill: np.ndarray
    # shard number -> ((inode, size, mtime_ns), index as uint64 (n_chunks, 2))
    _index_cache: dict[int, tuple[tuple[int, int, int], np.ndarray]]
    _index_lock: threading.Lock

    if TYPE_CHECKING:

        def _decode(self, lay: _Layout, raw: Any, path: str, chunk_index: int) -> np.ndarray: ...

        def _corrupt(self, path: str, chunk_index: int, reason: str) -> CorruptChunkError: ...

        def _corrupt_shard(
            self, lay: _Layout, path: str, shard: int, reason: str
        ) -> CorruptChunkError: ...
