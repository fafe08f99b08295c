"""``ArrayPool``: output arrays recycled once nothing outside the pool refers to them.

A dense ``(512, 20000)`` float32 batch is 41 MB. Allocating it fresh for every batch makes the
kernel fault in and zero 41 MB of pages each time, which costs more than densifying itself. The
pool keeps the arrays it handed out and lends one again only when its reference count shows that
the pool is its only holder: the consumer has dropped the batch and every tensor viewing it
(``torch.from_numpy`` keeps the array alive for as long as the tensor's storage lives, including
storage kept by autograd). A batch the consumer still holds is never overwritten. Arrays that
will be densified into are re-zeroed only where the previous batch wrote.
"""

from __future__ import annotations

import sys
import threading

import numpy as np


class Lease:
    """One pooled array and the flat positions last written into it (``None``: all of it)."""

    __slots__ = ("array", "touched")

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.touched: list[np.ndarray] | None = None


def _refs(lease: Lease) -> int:
    # The same expression measures a free array at construction and tests leases later, so the
    # count needs no assumption about how an interpreter counts temporaries.
    return sys.getrefcount(lease.array)


class ArrayPool:
    """At most ``capacity`` recycled arrays; more are allocated (and not kept) when all are in use.

    Parameters
    ----------
    capacity
        Arrays kept for reuse. Memory held is ``capacity`` arrays of the largest batch shape.

    Examples
    --------
    >>> pool = ArrayPool(2)
    >>> a, _ = pool.take((2, 3), np.dtype(np.float32), zeroed=True)
    >>> b, _ = pool.take((2, 3), np.dtype(np.float32), zeroed=True)
    >>> a is b  # ``a`` is still held here, so ``b`` is another array
    False
    >>> del a
    >>> c, _ = pool.take((2, 3), np.dtype(np.float32), zeroed=True)
    >>> c.sum() == 0
    np.True_
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._leases: list[Lease] = []
        self._lock = threading.Lock()
        # References to a free array: the lease's attribute plus getrefcount's own argument
        # (measured, not assumed, since interpreters count differently).
        self._free_refs = _refs(Lease(np.empty(0)))
        self.reused = 0

    def take(
        self, shape: tuple[int, ...], dtype: np.dtype, *, zeroed: bool
    ) -> tuple[np.ndarray, Lease | None]:
        """An array of ``shape``/``dtype`` (all zeros if ``zeroed``), and its lease if pooled.

        Write the flat positions you fill into ``lease.touched`` (or set it to ``None``) so the
        next borrower is re-zeroed cheaply.
        """
        dtype = np.dtype(dtype)
        found: Lease | None = None
        with self._lock:
            for lease in self._leases:
                # No local may hold ``lease.array`` while its references are counted.
                same = lease.array.shape == shape and lease.array.dtype == dtype
                if same and _refs(lease) <= self._free_refs:
                    found = lease
                    break
            if found is None:
                fresh = np.zeros(shape, dtype) if zeroed else np.empty(shape, dtype)
                if len(self._leases) >= self.capacity:
                    self._drop_one_free_locked()
                if len(self._leases) < self.capacity:
                    found = Lease(fresh)
                    self._leases.append(found)
                    return fresh, found
                return fresh, None
            out = found.array  # held from here on: no other thread can take it
            # Unknown contents until the borrower records what it wrote.
            touched, found.touched = found.touched, None
            self.reused += 1
        if zeroed:
            if touched is None:
                out.fill(0)
            else:
                flat = out.reshape(-1)
                for positions in touched:
                    flat[positions] = 0
        return out, found

    def _drop_one_free_locked(self) -> None:
        # A free array of another shape (e.g. the last, smaller batch) makes room.
        for i, lease in enumerate(self._leases):
            if _refs(lease) <= self._free_refs:
                del self._leases[i]
                return

    def clear(self) -> None:
        with self._lock:
            self._leases.clear()

    def __len__(self) -> int:
        return len(self._leases)


def pool_for(depth: int) -> ArrayPool:
    """A pool for ``depth`` batches collated ahead, plus the consumer's current and last batch."""
    return ArrayPool(depth + 3)


__all__ = ["ArrayPool", "Lease", "pool_for"]
