"""The exact median of the positive values of a stored column, in bounded memory.

``size_factor`` divides every cell's total counts by their median over cells with counts.
Gathering 10^8 totals to sort them would cost 0.8 GB on the client, so the median is found by
*radix selection* on the bits of the float64 values instead: for non-negative floats the
order of the values is the order of their bit patterns read as unsigned integers, so the
``k``-th smallest value is found 16 bits at a time, high bits first. Each of the four rounds
is one pass of dask tasks over the stored column, each returning a 65,536-bin histogram of the
next 16 bits among the values whose higher bits match what is known so far. Both middle
ranks (an even count has two) are resolved in the same passes, and the result equals
``numpy.median`` of the positive values bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import numpy as np

from . import graph

__all__ = ["positive_median"]

DIGIT_BITS = 16
ROUNDS = 64 // DIGIT_BITS
BINS = 1 << DIGIT_BITS
TASK_ROWS = 1 << 20  # values read per task (8 MB of float64; a task holds ~5x that)


def _keys(array: Any, start: int, stop: int) -> np.ndarray:
    values = np.asarray(array[start:stop], dtype=np.float64)
    return values[values > 0].view(np.uint64)  # NaN and values <= 0 are not candidates


def _count(array: Any, start: int, stop: int) -> int:
    return int(_keys(array, start, stop).size)


def _histograms(
    array: Any, start: int, stop: int, prefixes: tuple[int, ...], shift: int
) -> dict[int, np.ndarray]:
    """Per known ``prefix`` (bits above ``shift + DIGIT_BITS``): counts of the next digit."""
    keys = _keys(array, start, stop)
    out = {}
    high = shift + DIGIT_BITS
    for prefix in prefixes:
        picked = keys if high >= 64 else keys[(keys >> np.uint64(high)) == np.uint64(prefix)]
        digits = ((picked >> np.uint64(shift)) & np.uint64(BINS - 1)).astype(np.intp)
        out[prefix] = np.bincount(digits, minlength=BINS)
    return out


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        return {k: a[k] + b[k] for k in a}
    return a + b


def _pass(array: Any, ranges: Sequence[tuple[int, int]], func: Any, *args: Any) -> Any:
    parts = [dask.delayed(func, pure=False)(array, a, b, *args) for a, b in ranges]
    return graph.compute(graph.tree_reduce(parts, _add, "median"))[0]


def positive_median(array: Any, n: int) -> tuple[float, int]:
    """``(median, count)`` of the values ``> 0`` among the first ``n`` of a stored column.

    ``array`` is anything sliceable along rows that pickles for dask workers (a Zarr array).
    The median is NaN when no value is positive.
    """
    ranges = [(a, min(n, a + TASK_ROWS)) for a in range(0, n, TASK_ROWS)]
    if not ranges:
        return float("nan"), 0
    count = int(_pass(array, ranges, _count))
    if count == 0:
        return float("nan"), 0
    ranks = [(count - 1) // 2, count // 2]  # equal when the count is odd
    prefixes = [0, 0]
    for r in range(ROUNDS):
        shift = 64 - DIGIT_BITS * (r + 1)
        hists = _pass(array, ranges, _histograms, tuple(sorted(set(prefixes))), shift)
        for i in range(2):
            cum = np.cumsum(hists[prefixes[i]])
            digit = int(np.searchsorted(cum, ranks[i], side="right"))
            ranks[i] -= int(cum[digit - 1]) if digit else 0
            prefixes[i] = (prefixes[i] << DIGIT_BITS) | digit
    lo, hi = (np.array([p], dtype=np.uint64).view(np.float64)[0] for p in prefixes)
    if count % 2:
        return float(lo), count
    return float(np.mean(np.array([lo, hi]))), count  # as numpy.median averages them
