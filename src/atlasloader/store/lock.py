"""One writer at a time per store: an advisory lock held while an operation writes into it.

Registration, transfer and preprocessing read what is persisted, compute, and write columns
and records back. Two processes doing that at once on one store could each write a record
set that lacks the other's fields. So every such operation on a writable local store holds an
exclusive ``flock`` on the store's directory from before it reads the persisted state
until its last write is published: a second writer *waits* for the first (then reuses what
the first persisted, or adds its own fields to it), up to ``ATLASLOADER_LOCK_TIMEOUT`` seconds
(default 600), after which it raises :class:`~atlasloader.errors.StoreLockedError` naming the
holder's pid (read from ``/proc/locks``).

The lock is the kernel's: it is released when the holder exits, however it exits (SIGKILL
included), so a crashed job never leaves a store locked. Readers (loaders, ``validate``) take
no lock: every write is published atomically, so they see the old or the new state. The lock
is re-entrant within a process (a registration inside a preprocessing run, for instance).
Object stores have no such lock: there atlasloader relies on its publish order (chunk objects
before metadata, records last) and one writer per store is the caller's responsibility.

Locking the directory itself adds no file to the store: nothing that Zarr, anndata or a
checksum of the user's files would see.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreLockedError, os_errors

__all__ = ["lock_timeout", "store_dir", "write_lock"]

_POLL_S = 0.05

_held: dict[str, tuple[int, int]] = {}  # resolved store path -> (fd, depth)
_guard = threading.RLock()


def lock_timeout() -> float:
    raw = os.environ.get("ATLASLOADER_LOCK_TIMEOUT", "600")
    try:
        return max(0.0, float(raw))
    except ValueError:
        return 600.0


def _holder(fd: int) -> str:
    """``"process 1234"`` holding a flock on the file of ``fd`` (Linux), else a vaguer name."""
    st = os.fstat(fd)
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "another process"
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (a "->" marks a waiting entry)
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue
        if parts[5].rsplit(":", 1)[-1] == str(st.st_ino) and parts[4] != str(os.getpid()):
            return f"process {parts[4]}"
    return "another process"


@contextmanager
def write_lock(store: str | os.PathLike[str] | None, what: str) -> Iterator[None]:
    """Hold the store's write lock for ``what`` (e.g. ``"registration"``).

    ``store`` is the local store directory; None (an object store or an in-memory AnnData)
    takes no lock.
    """
    if store is None:
        yield
        return
    with os_errors(store, what), _locked(store, what):
        yield


@contextmanager
def _locked(store: str | os.PathLike[str], what: str) -> Iterator[None]:
    import fcntl

    key = str(Path(store).resolve())
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if not reentered:
        fd = os.open(key, os.O_RDONLY)
        deadline = time.monotonic() + lock_timeout()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    os.close(fd)
                    msg = (
                        f"the store {key!r} is being written by {holder} (it holds the "
                        f"store's write lock); {what} waited {lock_timeout():g} s for it. Let "
                        "that job finish (or stop it), or raise ATLASLOADER_LOCK_TIMEOUT"
                    )
                    raise StoreLockedError(msg) from None
                time.sleep(_POLL_S)
        with _guard:
            _held[key] = (fd, 1)
    try:
        yield
    finally:
        with _guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def store_dir(adata: Any) -> str | None:
    """The local directory to lock for writes into ``adata`` (None: nothing to lock)."""
    from .lazy import LazyAnnData
    from .open import local_root

    if not isinstance(adata, LazyAnnData) or not adata.writable:
        return None
    base = local_root(adata.group)
    return None if base is None else str(base)


# A forked child does not hold its parent's flock in our bookkeeping.
os.register_at_fork(after_in_child=_held.clear)
