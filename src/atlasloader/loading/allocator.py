"""Keep glibc's ``malloc`` from holding on to the loader's freed buffers between epochs.

What holds the memory. Nothing in the loader keeps references: over epochs the bytes glibc
counts as in use (``mallinfo2().uordblks``) and ``tracemalloc``'s traced memory stay flat. The
growth is memory glibc keeps after it was freed. A block of at least ``M_MMAP_THRESHOLD`` bytes
(128 KiB at start) gets its own ``mmap`` and goes back to the kernel when freed, but freeing one
*raises* the threshold to its size (the "dynamic threshold", up to 32 MiB on 64-bit) and the
trim threshold to twice that. The loader frees large blocks all the time: each shuffle buffer's
decoded ``data``/``indices`` (8192 rows x non-zeros per row x 4 bytes each: 6.5 MB at 200
non-zeros, 27 MB at 814), and a model step frees its activations of one batch. After the first
few, all of them come from the heap arenas (the main one and one per thread, up to 8 per core),
between small long-lived objects; the holes they leave sit in the middle of the heap, where
glibc's automatic trim (top of the heap only) never reaches, and each arena may keep up to
64 MiB free at its top. ``malloc_trim(0)`` hands those pages back at once.

What :func:`tune_allocator` does, on glibc, when a loader starts iterating:

- ``mallopt(M_MMAP_THRESHOLD, T)``, which also switches the dynamic threshold off, and
  ``mallopt(M_TRIM_THRESHOLD, 2 T)`` (the ratio glibc's own rule keeps). ``T`` is a quarter more
  than one dense batch of the loader (``batch_size x n_vars x itemsize``, see
  :func:`mmap_threshold_for`), so every per-batch allocation, the model's included, stays on the
  fast heap path; at least 8 MiB (the loader's per-batch index arrays stay below) and at most
  32 MiB (glibc's limit). A batch of 32 MiB or more is ``mmap``-ed whatever the setting: ``T`` is
  then 8 MiB. Larger blocks, the shuffle buffers of wide stores among them, are ``mmap``-ed and
  returned to the kernel when freed, as glibc does before its threshold moves. A later loader
  with larger batches raises ``T`` (never lowers it), so an inference pass with big batches does
  not pay a page fault per batch.
- :func:`release_free_memory` (``malloc_trim(0)``, ~15 ms for 230 MB) when the last batch of an
  epoch is handed out and again when the epoch's iterator finishes: free pages in every arena go
  back to the kernel.

Measured (``benchmarks/bench_memory.py``, 2 cores, glibc 2.36): training scvi-tools' SCVI on
100k cells x 2,000 genes, RSS after each epoch drops from 835-885 to 721-752 MiB and the peak
from 953-968 to 912-931 MiB at the same speed; loading 100k cells of a 20,000-gene store (814
non-zeros per cell, 2,000 genes selected) with a model step, peak RSS drops from 980 to 869 MiB
(as low as a 1 MiB pinned threshold, which makes each epoch ~35 % slower). A pinned threshold
below the model's batch tensors (the usual ``MALLOC_MMAP_THRESHOLD_=1048576`` advice) lowers the
peak more on narrow stores, but makes every such tensor a fresh ``mmap``: SCVI trained at half
speed and the sparse loader alone ran 4x slower here, so that stays the user's choice.

It is a no-op, and says why in :attr:`AllocatorTuning.reason`:

- off glibc (macOS, musl, Windows) or with another allocator in ``LD_PRELOAD`` (jemalloc,
  tcmalloc, mimalloc);
- when the user tuned glibc's malloc already: any of ``MALLOC_ARENA_MAX``,
  ``MALLOC_ARENA_TEST``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
  ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_`` in the environment, or ``glibc.malloc.*`` in
  ``GLIBC_TUNABLES``: their settings are kept as they are, and nothing is trimmed;
- when opted out with the environment variable ``ATLASLOADER_TUNE_MALLOC=0`` (also ``false``,
  ``no``, ``off``), read when the first loader starts iterating.

The settings are process-wide (they apply to every later allocation of the process, not only
the loader's) and are inherited by forked worker processes; spawned workers start untuned. The
arena count (``M_ARENA_MAX``) is left alone: capping it to 2 lowered the peak less than the
thresholds (980 to 919 MiB on the wide store) and not at all on the narrow one. With CUDA,
``pin_memory=True`` adds torch's pinned host caching allocator, which keeps freed pinned blocks
for reuse (``torch.cuda.empty_cache()`` does not release them); that memory is bounded by the
batches in flight and is not touched here.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "ENV_OPT_OUT",
    "AllocatorTuning",
    "current_tuning",
    "mmap_threshold_for",
    "release_free_memory",
    "tune_allocator",
]

ENV_OPT_OUT = "ATLASLOADER_TUNE_MALLOC"
# The environment variables glibc's malloc reads at start-up: set, they are the user's choice.
USER_MALLOC_ENV = (
    "MALLOC_ARENA_MAX",
    "MALLOC_ARENA_TEST",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
_FALSE = frozenset({"0", "false", "no", "off"})

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_MIB = 1 << 20
MIN_THRESHOLD = 8 * _MIB
# glibc refuses thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit): mallopt returns 0.
MAX_THRESHOLD = 32 * _MIB


@dataclass(frozen=True)
class AllocatorTuning:
    """What :func:`tune_allocator` did in this process.

    Attributes
    ----------
    applied
        The thresholds are set and epochs end with ``malloc_trim``.
    reason
        Why it was skipped, or what was set.
    mmap_threshold, trim_threshold
        The values given to ``mallopt`` (``None`` when skipped).
    """

    applied: bool
    reason: str
    mmap_threshold: int | None = None
    trim_threshold: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mmap_threshold_for(batch_nbytes: int) -> int:
    """The ``M_MMAP_THRESHOLD`` for dense batches of ``batch_nbytes`` bytes.

    A quarter more than a batch, within ``[8 MiB, 32 MiB]``; 8 MiB when a batch is
    ``mmap``-ed anyway (32 MiB or more).

    Examples
    --------
    >>> mmap_threshold_for(512 * 2000 * 4) // 2**20  # 512 cells x 2,000 genes, float32
    8
    >>> mmap_threshold_for(512 * 10_000 * 4) // 2**20
    25
    >>> mmap_threshold_for(512 * 20_000 * 4) // 2**20  # 41 MB: always its own mmap
    8
    """
    b = max(0, int(batch_nbytes))
    if b >= MAX_THRESHOLD:
        return MIN_THRESHOLD
    # A quarter more than a batch: room for a model's tensors of a batch with a few extra
    # columns (covariates), in whole MiB.
    want = -(-(b + b // 4) // _MIB) * _MIB
    return min(MAX_THRESHOLD, max(MIN_THRESHOLD, want))


def skip_reason(environ: Mapping[str, str], glibc: str | None) -> str | None:
    """Why the allocator must be left alone (``None``: tune it).

    Parameters
    ----------
    environ
        The process environment.
    glibc
        ``os.confstr("CS_GNU_LIBC_VERSION")`` (``"glibc 2.36"``), ``None`` off glibc.
    """
    value = environ.get(ENV_OPT_OUT)
    if value is not None and value.strip().lower() in _FALSE:
        return f"opted out with {ENV_OPT_OUT}={value}"
    if not glibc or not glibc.startswith("glibc"):
        return "not glibc's malloc (nothing to tune)"
    preload = environ.get("LD_PRELOAD", "")
    for name in _OTHER_ALLOCATORS:
        if name in preload:
            return f"{name} is preloaded (LD_PRELOAD={preload})"
    user = [k for k in USER_MALLOC_ENV if k in environ]
    if user:
        return "the user tuned malloc: " + ", ".join(f"{k}={environ[k]}" for k in user)
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc." in tunables:
        return f"the user tuned malloc: GLIBC_TUNABLES={tunables}"
    return None


def _glibc_version() -> str | None:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # Windows, macOS, musl
        return None


_lock = threading.Lock()
_state: AllocatorTuning | None = None
_libc: Any = None


def _load_libc() -> Any:
    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


def tune_allocator(batch_nbytes: int = 0) -> AllocatorTuning:
    """Fix glibc's mmap and trim thresholds for a loader's batches (once; see the module).

    Idempotent: the first call decides whether to tune (environment, platform); later calls
    only raise the threshold when their batches are larger.

    Parameters
    ----------
    batch_nbytes
        Bytes of one dense batch (``batch_size x n_vars x itemsize``).

    Examples
    --------
    >>> tuning = tune_allocator(512 * 2000 * 4)
    >>> tuning.applied or tuning.reason != ""
    True
    """
    global _state, _libc
    with _lock:
        if _state is None:
            reason = skip_reason(os.environ, _glibc_version())
            if reason is not None:
                _state = AllocatorTuning(False, reason)
                return _state
            try:
                _libc = _load_libc()
            except (OSError, AttributeError) as exc:
                _state = AllocatorTuning(False, f"mallopt is not available ({exc})")
                return _state
        elif not _state.applied:
            return _state
        threshold = mmap_threshold_for(batch_nbytes)
        if _state is not None and (_state.mmap_threshold or 0) >= threshold:
            return _state
        # Trim threshold first: setting either disables the dynamic rule for both.
        ok = _libc.mallopt(M_TRIM_THRESHOLD, 2 * threshold) == 1
        ok = _libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1 and ok
        if not ok:
            _state = AllocatorTuning(False, f"mallopt refused a threshold of {threshold} bytes")
            return _state
        _state = AllocatorTuning(
            True,
            f"M_MMAP_THRESHOLD={threshold}, M_TRIM_THRESHOLD={2 * threshold}, "
            "malloc_trim(0) after each epoch",
            threshold,
            2 * threshold,
        )
        return _state


def current_tuning() -> AllocatorTuning | None:
    """What :func:`tune_allocator` decided in this process (``None``: not called yet)."""
    return _state


def release_free_memory() -> bool:
    """``malloc_trim(0)`` when the allocator is tuned: free heap pages go back to the kernel.

    Returns whether memory was released (always ``False`` when not tuned).
    """
    state = _state
    if state is None or not state.applied:
        return False
    return bool(_libc.malloc_trim(0))
