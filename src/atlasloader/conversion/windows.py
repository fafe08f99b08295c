"""Fill per-cell output arrays window by window, in input order or in a shuffled order.

:func:`fill` writes the stored arrays of one obs column (one array, or two for a nullable
column) from a function that returns global input rows ``a:b`` of them, about :data:`ROWS`
rows at a time (whole chunks of the output, so that no chunk is encoded twice). Unshuffled,
window ``a:b`` of the output is window ``a:b`` of the input.

Shuffled, output window ``a:b`` holds the input rows ``perm[a:b]``, scattered over the whole
input; reading them directly would read the input once per window. Instead
:class:`RowShuffle` sorts them externally, as :mod:`.shuffle` does for matrices: each input
window is split by the output window its rows land in (``inverse``) and appended to that
window's *bucket* file, under ``<partial store>/__shuffle__/obs``; each bucket then holds the
rows of one output window in ascending input order, which ``perm[a:b]`` puts in output order.
Memory is a window of one column, whatever the number of cells; the bucket files take about
the size of the column and are deleted once their window is written.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptChunkError

if TYPE_CHECKING:
    from .state import Spilled

ROWS = 1 << 18  # rows per window: 2 MB of a numeric column, ~20-30 MB of cell names
OBS_TMP = "obs"  # folder of the buckets, inside the partial store's temporary folder

Parts = tuple[np.ndarray, ...]  # the stored arrays of a column, for one window of rows
Produce = Callable[[int, int], Parts]
Write = Callable[[int, int, Parts], None]


def spans(n: int, step: int | None = None) -> Iterator[tuple[int, int]]:
    """Windows ``(a, b)`` covering rows ``0:n``, of ``step`` rows (:data:`ROWS`, read when
    called, by default)."""
    step = ROWS if step is None else step
    for a in range(0, n, step):
        yield a, min(n, a + step)


def step_of(arrays: Sequence[Any]) -> int:
    """Rows per window for these arrays: whole chunks of each, so that no chunk is written
    twice, unless their chunks are much longer than :data:`ROWS` (then ROWS)."""
    step = 1
    for arr in arrays:
        step = math.lcm(step, max(1, int(arr.chunks[0])))
    if step > 4 * ROWS:
        return ROWS
    return max(step, (ROWS // step) * step)


def fill(arrays: Sequence[Any], produce: Produce, n: int, shuffle: RowShuffle | None) -> None:
    """Write rows ``0:n`` of ``arrays`` from ``produce(a, b)`` (global input rows ``a:b``)."""

    def write(a: int, b: int, parts: Parts) -> None:
        for arr, part in zip(arrays, parts):
            arr[a:b] = part

    step = step_of(arrays)
    if shuffle is None:
        for a, b in spans(n, step):
            write(a, b, produce(a, b))  # one window alive at a time
    else:
        shuffle.gather(shuffle.scatter(produce, step), step, write)


class RowShuffle:
    """Scatter a column's input windows to per-output-window bucket files, then gather them.

    Parameters
    ----------
    tmp
        Folder for the bucket files (created, and removed by :meth:`remove`).
    perm, inverse
        Output row ``i`` holds input row ``perm[i]``; input row ``g`` goes to ``inverse[g]``.
    """

    def __init__(self, tmp: str, perm: Spilled, inverse: Spilled) -> None:
        self.tmp, self.perm, self.inverse = tmp, perm, inverse
        self.n = perm.length
        self._column = 0

    def scatter(self, produce: Produce, step: int) -> tuple[bool, ...]:
        """Append every input window's rows to the buckets of ``step`` output rows they land
        in; return which parts are strings."""
        self._column += 1
        os.makedirs(self._folder(), exist_ok=True)
        strings = tuple(p.dtype.kind == "O" for p in produce(0, 0))
        for a, b in spans(self.n, step):
            self._scatter(produce(a, b), self.inverse.read(a, b) // step)
        return strings

    def _scatter(self, parts: Parts, ids: np.ndarray) -> None:
        # Stable: within a bucket, rows stay in input order (what gather relies on).
        order = np.argsort(ids, kind="stable")
        cuts = np.flatnonzero(np.diff(ids[order])) + 1
        for group in np.split(order, cuts):
            with open(self._bucket(int(ids[group[0]])), "ab") as f:
                for part in parts:
                    _save(f, part[group])

    def gather(self, strings: tuple[bool, ...], step: int, write: Write) -> None:
        """``write(a, b, parts)`` each output window from its bucket, in output order."""
        for a, b in spans(self.n, step):
            path = self._bucket(a // step)
            write(a, b, self._gather(path, strings, a, b))
            os.unlink(path)  # written: free the disk early
        shutil.rmtree(self._folder(), ignore_errors=True)

    def _gather(self, path: str, strings: tuple[bool, ...], a: int, b: int) -> Parts:
        loaded = _load_all(path, strings)
        if any(len(p) != b - a for p in loaded):
            msg = (
                f"the obs shuffle bucket {path!r} does not hold output rows {a}:{b}; convert again"
            )
            raise CorruptChunkError(msg)
        # The bucket holds input rows perm[a:b] in ascending order: the j-th of them goes
        # to the output row whose input row is the j-th smallest.
        order = np.argsort(self.perm.read(a, b))
        parts = []
        for p in loaded:
            out = np.empty_like(p)
            out[order] = p
            parts.append(out)
        return tuple(parts)

    def remove(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _folder(self) -> str:
        return os.path.join(self.tmp, f"{self._column:05d}")

    def _bucket(self, bucket: int) -> str:
        return os.path.join(self._folder(), f"{bucket:06d}.npy")


# --- bucket records: .npy arrays back to back; strings as lengths + UTF-8 bytes ----------------
def _save(f: Any, part: np.ndarray) -> None:
    if part.dtype.kind == "O":
        encoded = [s.encode("utf-8", "surrogatepass") for s in part]
        np.save(f, np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
        np.save(f, np.frombuffer(b"".join(encoded), dtype=np.uint8))
    else:
        np.save(f, part, allow_pickle=False)


def _load(f: Any, string: bool) -> np.ndarray:
    if not string:
        return np.load(f, allow_pickle=False)
    lengths = np.load(f, allow_pickle=False)
    data = np.load(f, allow_pickle=False).tobytes()
    ends = np.cumsum(lengths).tolist()
    out = np.empty(len(lengths), dtype=object)
    out[:] = [
        data[e - n : e].decode("utf-8", "surrogatepass") for e, n in zip(ends, lengths.tolist())
    ]
    return out


def _load_all(path: str, strings: tuple[bool, ...]) -> list[np.ndarray]:
    records: list[list[np.ndarray]] = [[] for _ in strings]
    if not os.path.exists(path):  # every output window has rows, so a bucket
        raise CorruptChunkError(f"the obs shuffle bucket {path!r} is missing; convert again")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        while f.tell() < size:
            for i, string in enumerate(strings):
                records[i].append(_load(f, string))
    return [
        np.concatenate(r) if r else np.zeros(0, dtype=object if s else np.int8)
        for r, s in zip(records, strings)
    ]
