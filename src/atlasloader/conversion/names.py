"""The output's cell names: collisions between inputs found without holding the names.

If a name occurs in two inputs, every name gets ``-<input position>`` appended (as
``anndata.concat(..., index_unique="-")`` does), with a warning; names repeated within one input
are kept. Finding out needs every name once, but not all of them at the same time:

1. every cell's name is hashed to 64 bits (input by input, window by window), the input's
   position replacing the hash's lowest bits, and the array (8 bytes per cell) sorted in place;
2. a run of equal hashes with two input positions is a *candidate*: equal names have equal
   hashes, so no candidate means no collision;
3. candidates are confirmed on the names themselves, a window of them at a time, in the order
   the warning reports them (first input, then first position): a hash collision between two
   different names is never reported.

The names themselves are then read again, window by window, when the index is written.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import windows
from .columns import InputColumn, strings
from .windows import spans

if TYPE_CHECKING:
    from .source import Source


def index_key(node: Any) -> str:
    value = node.attrs.get("_index", "_index")
    return value.decode() if isinstance(value, bytes) else str(value)


def hash_names(names: np.ndarray) -> np.ndarray:
    """64-bit hashes of names (pandas' SipHash with a fixed key: the same in every run)."""
    return np.asarray(pd.util.hash_array(names, categorize=False), dtype=np.uint64)


class Names:
    """Read the output's cell names (input order) from the inputs, window by window.

    ``unique`` says whether ``-<input position>`` is appended to every name.
    """

    def __init__(self, sources: list[Source], unique: bool) -> None:
        self.sources, self.unique = sources, unique
        self.columns = [InputColumn(s, index_key(s.node("obs"))) for s in sources]
        self.key = index_key(sources[0].node("obs"))  # the output's index key: the first's

    def read(self, k: int, a: int, b: int) -> np.ndarray:
        """Names of rows ``a:b`` of input ``k``, as written to the output."""
        names = strings(self.columns[k].read(a, b))
        return names + f"-{k}" if self.unique else names

    def index(self) -> pd.Index:
        """All the names at once (for an obsm dataframe of several inputs, which needs them).

        Only that rare case holds every name in memory; :func:`~.obs.write_obs` itself never
        does.
        """
        sizes = [int(c.node.shape[0]) for c in self.columns]
        parts = [self.read(k, 0, n) for k, n in enumerate(sizes)]
        index = pd.Index(np.concatenate(parts), dtype=object)
        index.name = None if self.key == "_index" else self.key
        return index


def check_names(sources: list[Source], paths: list[str], sizes: list[int]) -> Names:
    """Whether any name occurs in two inputs (warning if so): how names are written."""
    if len(sources) == 1:
        return Names(sources, unique=False)
    names = Names(sources, unique=False)
    shared = _first_shared(names, sizes)
    if shared is None:
        return names
    names.unique = True
    name, j, k = shared
    warnings.warn(
        f"obs_names collide between inputs (e.g. {name!r} is in both {paths[j]!r} and "
        f"{paths[k]!r}): every name was made unique by appending '-<input position>' (as "
        "anndata.concat(index_unique='-'))",
        UserWarning,
        stacklevel=5,
    )
    return names


def _first_shared(names: Names, sizes: list[int]) -> tuple[str, int, int] | None:
    """The first name (by input, then position) also in an earlier input, and both inputs."""
    bits = max(1, (len(sizes) - 1).bit_length())
    low = np.uint64((1 << bits) - 1)
    tagged = np.empty(sum(sizes), dtype=np.uint64)
    start = 0
    for k, n in enumerate(sizes):
        for a, b in spans(n):
            h = hash_names(names.read(k, a, b))
            tagged[start + a : start + b] = (h & ~low) | np.uint64(k)
        start += n
    tagged.sort()
    for k in _candidate_inputs(tagged, low):
        found = _confirm(names, sizes, tagged, low, k)
        if found is not None:
            return found
    return None


def _candidate_inputs(tagged: np.ndarray, low: np.uint64) -> list[int]:
    """Inputs with a hash also in an earlier input (``tagged``: sorted hash | input)."""
    found: set[int] = set()
    run_hash, run_first = None, 0
    for a, b in spans(len(tagged)):
        w = tagged[a:b]
        hashes, inputs = w & ~low, (w & low).astype(np.int64)
        starts = np.empty(len(w), dtype=bool)
        starts[0] = hashes[0] != run_hash
        starts[1:] = hashes[1:] != hashes[:-1]
        # Each element's run starts at the last start before it (or in an earlier window).
        at = np.where(starts, np.arange(len(w)), -1)
        np.maximum.accumulate(at, out=at)
        first = np.where(at >= 0, inputs[np.maximum(at, 0)], run_first)
        found.update(np.unique(inputs[inputs != first]).tolist())
        run_hash, run_first = hashes[-1], int(first[-1])
    return sorted(found)


def _confirm(
    names: Names, sizes: list[int], tagged: np.ndarray, low: np.uint64, k: int
) -> tuple[str, int, int] | None:
    """The first name of input ``k`` that an earlier input has, exactly; None if none."""
    for batch in _candidates(names, sizes, tagged, low, k):
        hashes = np.unique(hash_names(np.array(list(batch), dtype=object)) & ~low)
        where: dict[str, int] = {}
        for j in range(k):
            for a, b in spans(sizes[j]):
                w = names.read(j, a, b)
                h = hash_names(w) & ~low
                for s in w[np.isin(h, hashes)]:
                    if s in batch:
                        where.setdefault(s, j)
        for s in batch:
            if s in where:
                return str(s), where[s], k
    return None


def _candidates(names: Names, sizes: list[int], tagged: np.ndarray, low: np.uint64, k: int) -> Any:
    """Batches (up to a window each) of input ``k``'s distinct names whose hash is in an
    earlier input, in order of first appearance."""
    batch: dict[str, None] = {}
    for a, b in spans(sizes[k]):
        w = names.read(k, a, b)
        h = hash_names(w) & ~low
        # The run of a hash starts with its smallest input: earlier than k?
        at = np.searchsorted(tagged, h)
        hit = tagged[np.minimum(at, len(tagged) - 1)]
        earlier = ((hit & ~low) == h) & ((hit & low).astype(np.int64) < k)
        for s in w[earlier]:
            batch.setdefault(s, None)
            if len(batch) >= windows.ROWS:
                yield batch
                batch = {}
    if batch:
        yield batch
