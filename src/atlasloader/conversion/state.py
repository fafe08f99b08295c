"""Per-cell state of a conversion, spilled to files next to the partial store.

A conversion needs three arrays with one entry per cell: the permutation (output row ``i``
holds input row ``perm[i]``), its inverse, and the output row pointers of a CSR matrix (8
bytes each: 2.4 GB at 10^8 cells). They live in flat binary files under
``<partial store>/__state__`` (removed with the partial store), are built in windows of
:data:`WINDOW` entries, and reach the tasks as :class:`Spilled` references (a path and a
length) from which each task reads the slice it needs. The driver's heap and the task graph
therefore hold no per-cell array, so the graph stays the same size however many cells there
are; the operating system keeps what is read in its page cache, which it can reclaim.
Their disk space is reserved when they are created (a full disk fails there, by name).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["STATE_DIR", "WINDOW", "Spilled", "permutation", "remove_state", "row_pointers"]

STATE_DIR = "__state__"
WINDOW = 1 << 22  # entries per window (32 MB of int64)


@dataclass(frozen=True)
class Spilled:
    """A 1-D int64 array in a flat file (picklable: tasks read their slices themselves)."""

    path: str
    length: int

    @staticmethod
    def create(folder: Path, name: str, length: int) -> Spilled:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.i8"
        with open(path, "wb") as f:
            _allocate(f.fileno(), 8 * length)
        return Spilled(str(path), int(length))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Entries ``start:stop`` (a copy in memory)."""
        start, stop = max(0, start), min(self.length, stop)
        with open(self.path, "rb") as f:
            f.seek(8 * start)
            return np.fromfile(f, dtype="<i8", count=max(0, stop - start))

    def write(self, start: int, values: np.ndarray) -> None:
        """Set entries ``start:start + len(values)``."""
        with open(self.path, "r+b") as f:
            f.seek(8 * start)
            # ``file.write`` raises ENOSPC (a DiskFullError for the user); ``tofile`` raised
            # a bare "n requested and m written" OSError on a short write.
            f.write(np.ascontiguousarray(values, dtype="<i8").data)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Entries at ``positions`` (any order), through a mapping dropped afterwards."""
        if self.length == 0 or len(positions) == 0:
            return np.zeros(0, dtype=np.int64)
        mapped = self.mapped()
        try:
            return np.array(mapped[positions])
        finally:
            del mapped

    def mapped(self, mode: str = "r") -> np.memmap:
        """The whole array memory-mapped (for random access; rows are paged in on demand)."""
        return np.memmap(self.path, dtype="<i8", mode=mode, shape=(self.length,))  # type: ignore[call-overload]

    def last(self) -> int:
        return int(self.read(self.length - 1, self.length)[0])


def _allocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes of disk for a state file now, not when its pages are written.

    The files are written through memory maps: a page that cannot be backed on a full disk
    would kill the process with SIGBUS. Allocated up front, a full disk is an ``ENOSPC``
    here, before anything is written. Filesystems that cannot allocate get a sparse file.
    """
    if size == 0:
        return
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows
        os.ftruncate(fd, size)
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)


def _windows(n: int) -> range:
    return range(0, n, WINDOW)


def permutation(folder: Path, n: int, seed: int) -> tuple[Spilled, Spilled]:
    """``numpy.random.default_rng(seed).permutation(n)`` and its inverse, as files.

    The permutation is the very one numpy's ``permutation`` returns (it shuffles ``arange``
    in place, here the mapped file), so a seed gives the same order as before spilling.
    """
    perm = Spilled.create(folder, "permutation", n)
    for a in _windows(n):
        perm.write(a, np.arange(a, min(n, a + WINDOW), dtype=np.int64))
    if n:
        mapped = perm.mapped("r+")
        np.random.default_rng(seed).shuffle(mapped)
        mapped.flush()
        del mapped
    inverse = Spilled.create(folder, "inverse", n)
    if n:
        out = inverse.mapped("r+")
        for a in _windows(n):
            b = min(n, a + WINDOW)
            out[perm.read(a, b)] = np.arange(a, b, dtype=np.int64)
        out.flush()
        del out
    return perm, inverse


def row_pointers(folder: Path, counts: Spilled, perm: Spilled | None) -> Spilled:
    """Output row pointers (``n + 1``) from the values per input row (in output order)."""
    n = counts.length
    ptr = Spilled.create(folder, "indptr", n + 1)
    running = 0
    for a in _windows(n):
        b = min(n, a + WINDOW)
        c = counts.read(a, b) if perm is None else counts.take(perm.read(a, b))
        sums = np.cumsum(c, dtype=np.int64) + running
        ptr.write(a + 1, sums)
        running = int(sums[-1])
    return ptr


def remove_state(folder: Path) -> None:
    """Delete the state files (after the matrices and obs are written)."""
    if folder.is_dir():
        for f in folder.iterdir():
            os.unlink(f)
        folder.rmdir()
