"""Reading every chunk of the arrays of a store, as dask tasks, and naming what fails.

Each task reads a block of rows of one array (at most about 64 MB decoded). A block that fails
is read again one stored object (chunk, or shard) at a time, and a failing shard one inner chunk
at a time, so each problem names the object's key and the chunks that cannot be decoded.
Missing chunks are not problems: Zarr does not write chunks that hold only the fill value.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import zarr

from .report import Problem, short_error

__all__ = ["read_chunks"]

_BLOCK_BYTES = 64 << 20  # decoded bytes one task reads at once
_MAX_LISTED = 12  # inner chunk indices listed in one problem


def _unit_shape(arr: zarr.Array) -> tuple[int, ...]:
    """Shape of one stored object: a shard if the array is sharded, else a chunk."""
    shards = getattr(arr, "shards", None)
    return tuple(int(s) for s in (shards or arr.chunks))


def _n_units(arr: zarr.Array) -> int:
    if arr.ndim == 0:
        return 1
    return math.prod(-(-int(n) // u) for n, u in zip(arr.shape, _unit_shape(arr)))


def _row_blocks(arr: zarr.Array) -> list[tuple[int, int]]:
    if arr.ndim == 0:
        return [(0, 1)]
    n = int(arr.shape[0])
    unit = _unit_shape(arr)[0]
    row_bytes = max(1, math.prod(int(s) for s in arr.shape[1:]) * max(1, arr.dtype.itemsize))
    step = max(unit, (_BLOCK_BYTES // row_bytes) // unit * unit)
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _region(arr: zarr.Array, coords: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(
        slice(c * s, min((c + 1) * s, int(n))) for c, s, n in zip(coords, shape, arr.shape)
    )


def _read(arr: zarr.Array, selection: Any) -> int:
    return int(np.asarray(arr[selection]).nbytes)


def _check_block(arr: zarr.Array, lo: int, hi: int) -> tuple[int, list[Problem]]:
    """Decoded bytes of rows ``[lo, hi)`` of ``arr``, or the problems of its stored objects."""
    try:
        return _read(arr, () if arr.ndim == 0 else slice(lo, hi)), []
    except MemoryError:
        raise
    except Exception as e:  # codecs raise many unrelated types for a corrupt chunk
        if arr.ndim == 0:
            return 0, [Problem(arr.path, f"cannot be read: {short_error(e)}")]
        block_error = e
    unit = _unit_shape(arr)
    first, last = lo // unit[0], -(-hi // unit[0])
    ranges = [range(first, last)] + [
        range(-(-int(n) // u)) for n, u in zip(arr.shape[1:], unit[1:])
    ]
    problems = [p for c in itertools.product(*ranges) if (p := _check_unit(arr, c)) is not None]
    if not problems:  # every object alone reads: say what failed together
        what = f"rows {lo}:{hi} cannot be read: {short_error(block_error)}"
        problems.append(Problem(arr.path, what))
    return 0, problems


def _check_unit(arr: zarr.Array, coords: tuple[int, ...]) -> Problem | None:
    unit = _unit_shape(arr)
    try:
        _read(arr, _region(arr, coords, unit))
        return None
    except MemoryError:
        raise
    except Exception as e:
        error = e
    key = f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}"
    if not getattr(arr, "shards", None):
        return Problem(key, f"chunk {coords} cannot be decoded: {short_error(error)}")
    inner = tuple(int(c) for c in arr.chunks)
    per_shard = [u // c for u, c in zip(unit, inner)]
    bad: list[tuple[int, ...]] = []
    total = 0
    for offset in itertools.product(*(range(k) for k in per_shard)):
        chunk = tuple(c * k + o for c, k, o in zip(coords, per_shard, offset))
        region = _region(arr, chunk, inner)
        if any(s.start >= s.stop for s in region):
            continue  # beyond the array's edge
        total += 1
        try:
            _read(arr, region)
        except MemoryError:
            raise
        except Exception:
            bad.append(offset)
    if not bad or len(bad) == total:
        what = f"shard {coords} cannot be decoded (index or every chunk): {short_error(error)}"
        return Problem(key, what)
    shown = ", ".join(str(b[0]) if len(b) == 1 else str(b) for b in bad[:_MAX_LISTED])
    more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    what = (
        f"inner chunks {shown}{more} (of {total}) of shard {coords} cannot be decoded: "
        f"{short_error(error)}"
    )
    return Problem(key, what)


def read_chunks(arrays: list[zarr.Array], progress: bool) -> tuple[int, int, list[Problem]]:
    """Read every stored object of ``arrays`` as dask tasks on the active scheduler.

    Returns ``(stored objects, decoded bytes read, problems)``; ``progress`` shows a bar.
    """
    import dask

    from ..cluster import dask_progress

    tasks = [
        dask.delayed(_check_block, pure=False)(arr, lo, hi)
        for arr in arrays
        for lo, hi in _row_blocks(arr)
        if arr.ndim == 0 or arr.shape[0] > 0
    ]
    with dask_progress(progress, "reading chunks"):
        results = dask.compute(*tasks) if tasks else ()
    n_bytes = sum(r[0] for r in results)
    problems = [p for r in results for p in r[1]]
    return sum(_n_units(a) for a in arrays), n_bytes, problems
