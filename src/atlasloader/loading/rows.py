"""``RowSet``: rows chosen from read buffers, not yet copied (what the ``Batcher`` cuts).

A buffer is read in store order (runs of consecutive rows, as decoded) and shuffled by a
permutation. Rather than permuting the buffer's CSR and then slicing batches out of it (two
copies, both holding the GIL), a batch is a list of *parts* ``(sources, sel)``: the buffer's
decoded blocks per key and the positions of the batch's rows in it. Collating gathers each
batch's rows straight into its output tensor (see :mod:`.collate`). Slicing and joining
``RowSet`` objects only slices and joins the small position arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

Sources = Mapping[str, Any]


class RowSet:
    """Rows ``sel`` of decoded buffer blocks ``sources``, possibly from several buffers.

    Parameters
    ----------
    parts
        ``(sources, sel)`` pairs: ``sources`` maps each registry key to a block (numpy array
        or scipy CSR matrix) of the same buffer, ``sel`` is an int64 array of row positions
        in those blocks. The rows of the set are the parts' rows, in order.

    Examples
    --------
    >>> rs = RowSet([({"x": np.arange(5) * 10}, np.array([4, 0, 2]))])
    >>> len(rs), [int(v) for _, s in rs[1:].parts for v in s]
    (3, [0, 2])
    """

    __slots__ = ("_len", "parts")

    def __init__(self, parts: Sequence[tuple[Sources, np.ndarray]]) -> None:
        self.parts = list(parts)
        self._len = sum(int(sel.shape[0]) for _, sel in self.parts)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, sl: slice) -> RowSet:
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise TypeError("RowSet supports contiguous slices only")
        start, stop, _ = sl.indices(self._len)
        out: list[tuple[Sources, np.ndarray]] = []
        pos = 0
        for sources, sel in self.parts:
            n = int(sel.shape[0])
            lo, hi = max(start - pos, 0), min(stop - pos, n)
            if lo < hi:
                out.append((sources, sel[lo:hi]))
            pos += n
            if pos >= stop:
                break
        return RowSet(out)

    @staticmethod
    def concat(pieces: Sequence[RowSet]) -> RowSet:
        return RowSet([part for piece in pieces for part in piece.parts])

    def blocks(self, key: str) -> Iterator[tuple[Any, np.ndarray]]:
        """``(block, sel)`` of every part for one key."""
        for sources, sel in self.parts:
            yield sources[key], sel
