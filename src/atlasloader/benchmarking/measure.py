"""Measuring a loader: throughput, time to first batch, peak memory and batch randomness.

:func:`measure_loader` times any iterable of minibatches (atlasloader's or a peer's), so every
loader in ``benchmarks/bench_loader.py`` is measured by the same code. This module imports only
numpy and the standard library (psutil where used, and nothing of atlasloader), so that the peer
runners, which live in a virtual environment without atlasloader, can load this file by path
(``benchmarks/peers/_common.py``); keep it that way.

Metrics
-------
cells/s
    Cells yielded per second of wall time after ``warmup_batches`` batches, the consumer only
    keeping a reference to each batch (no arithmetic on it).
time to first batch
    From constructing the loader (``loader_factory()``) to receiving its first batch.
peak RSS
    ``VmHWM`` of ``/proc/self/status`` (reset through ``/proc/self/clear_refs`` when the run
    starts), plus the high-water marks of live worker processes, if any. ``ru_maxrss`` is not
    used: it survives ``exec`` and reports a parent's peak in a fresh subprocess.
batch entropy / ideal
    Mean Shannon entropy of the category column within each full minibatch, divided by the
    mean for minibatches of the same size drawn uniformly at random from the whole dataset's
    categories (a true random permutation). 1.0 is perfectly random; a loader reading long
    contiguous runs of a sorted atlas scores well below it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BenchResult",
    "batch_entropy",
    "children_peak_rss_bytes",
    "ideal_entropy",
    "measure_loader",
    "peak_rss_bytes",
    "reset_peak_rss",
]

_IDEAL_SAMPLES = 256  # random batches for the ideal entropy: standard error ~0.1 % of the mean


@dataclass(frozen=True)
class BenchResult:
    """One measured loader run.

    Attributes
    ----------
    loader
        Label of the loader and its settings, as shown in the table.
    cells_per_s
        Cells per second after warm-up.
    time_to_first_batch_s
        Seconds from loader construction to its first batch.
    peak_rss_gb
        Peak resident memory in GB (1e9 bytes): this process plus live worker processes.
    entropy_ratio
        Mean per-batch category entropy over that of random batches (``nan`` without
        categories).
    n_cells
        Cells yielded in the timed part.
    n_batches
        Batches yielded in the timed part.
    seconds
        Wall time of the timed part.
    batch_size
        Largest batch seen (the nominal batch size).
    entropy_mean, entropy_ideal
        The two entropies (nats) behind ``entropy_ratio``.
    peak_rss_workers_gb
        Part of ``peak_rss_gb`` from worker processes (high-water marks summed; pages shared
        with the parent are counted once per process, so this is an upper bound).
    settings
        Free-form details (knobs, setup times, paths), kept out of comparisons.
    """

    loader: str
    cells_per_s: float
    time_to_first_batch_s: float
    peak_rss_gb: float
    entropy_ratio: float
    n_cells: int
    n_batches: int
    seconds: float
    batch_size: int
    entropy_mean: float = math.nan
    entropy_ideal: float = math.nan
    peak_rss_workers_gb: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResult:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in names})

    def with_(self, **changes: Any) -> BenchResult:
        """A copy with some fields replaced (e.g. a relabelled ``loader``)."""
        return type(self)(**{**asdict(self), **changes})


# --- memory -------------------------------------------------------------------------------------
def reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS; ``False`` where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _vm_hwm(status_path: str) -> int | None:
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_rss_bytes() -> int | None:
    """``VmHWM`` of this process in bytes (``None`` without ``/proc``)."""
    return _vm_hwm("/proc/self/status")


def children_peak_rss_bytes() -> int:
    """Sum of the ``VmHWM`` of this process's live descendants (DataLoader workers)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is an atlasloader dependency
        return 0
    total = 0
    for child in psutil.Process().children(recursive=True):
        total += _vm_hwm(f"/proc/{child.pid}/status") or 0
    return total


# --- randomness ---------------------------------------------------------------------------------
def batch_entropy(codes: np.ndarray) -> float:
    """Shannon entropy (nats) of the categories in one batch."""
    codes = np.asarray(codes).reshape(-1)
    if codes.size == 0:
        return math.nan
    _, counts = np.unique(codes, return_counts=True)
    p = counts / codes.size
    return float(-(p * np.log(p)).sum())


def ideal_entropy(
    codes: np.ndarray, batch_size: int, n_samples: int = _IDEAL_SAMPLES, seed: int = 0
) -> float:
    """Mean :func:`batch_entropy` of batches drawn at random without replacement from ``codes``.

    This is the per-batch entropy a true random permutation of the dataset would give.
    """
    codes = np.asarray(codes).reshape(-1)
    if codes.size == 0:
        return math.nan
    size = min(int(batch_size), codes.size)
    rng = np.random.default_rng(seed)
    return float(
        np.mean(
            [
                batch_entropy(codes[rng.choice(codes.size, size, replace=False)])
                for _ in range(n_samples)
            ]
        )
    )


# --- measuring ----------------------------------------------------------------------------------
def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, possibly on a device
        x = x.detach().cpu().numpy()
    elif hasattr(x, "to_numpy"):  # pandas
        x = x.to_numpy()
    return np.asarray(x).reshape(-1)


def _batch_len(batch: Any) -> int:
    if isinstance(batch, dict):
        for v in batch.values():
            if hasattr(v, "shape") and len(v.shape) > 0:
                return int(v.shape[0])
        raise ValueError(f"cannot tell the size of a batch with keys {sorted(batch)}")
    if hasattr(batch, "shape"):
        return int(batch.shape[0])
    return len(batch)


def _category_getter(category_key: Any) -> Callable[[Any], np.ndarray] | None:
    if category_key is None:
        return None
    if callable(category_key):
        return lambda b: _as_numpy(category_key(b))
    return lambda b: _as_numpy(b[category_key])


def measure_loader(
    loader_factory: Callable[[], Iterable[Any]],
    *,
    n_batches: int | None = None,
    warmup_batches: int = 20,
    seconds: float | None = None,
    category_key: str | Callable[[Any], Any] | None = None,
    categories: np.ndarray | None = None,
    name: str = "loader",
    reset_peak: bool = True,
    settings: dict[str, Any] | None = None,
) -> BenchResult:
    """Measure throughput, time to first batch, peak RSS and randomness of a loader.

    Iteration restarts (a new epoch, ``iter`` called again on the same loader) whenever the
    loader is exhausted before the requested number of batches.

    Parameters
    ----------
    loader_factory
        Builds the loader (an iterable of batches); its cost counts towards time to first batch.
    n_batches
        Batches to time after warm-up.
    warmup_batches
        Batches consumed (untimed) after the first one, before timing starts.
    seconds
        Stop timing after this many seconds (whichever of ``n_batches``/``seconds`` comes
        first). With neither, the rest of the first pass after warm-up is timed.
    category_key
        Key of each (dict) batch holding the category of every cell, or a function of a batch
        returning those categories; ``None`` skips the randomness metric.
    categories
        Categories of every cell of the dataset, for the ideal entropy; by default the
        categories seen in the timed batches.
    name
        Label of the result.
    reset_peak
        Reset the process's peak RSS before starting (callers that want setup such as opening
        the store counted reset it themselves and pass ``False``).
    settings
        Stored in :attr:`BenchResult.settings`.

    Returns
    -------
    The measurements.

    Examples
    --------
    >>> import numpy as np
    >>> data = [{"X": np.zeros((4, 3)), "batch": np.array([0, 1, 0, 1])}] * 10
    >>> r = measure_loader(lambda: data, n_batches=5, warmup_batches=2, category_key="batch",
    ...                    categories=np.array([0, 1] * 20))
    >>> r.n_cells
    20
    """
    if n_batches is not None and n_batches <= 0:
        raise ValueError(f"n_batches must be positive, got {n_batches!r}")
    if warmup_batches < 0:
        raise ValueError(f"warmup_batches must be >= 0, got {warmup_batches!r}")
    get_codes = _category_getter(category_key)
    if reset_peak:
        reset_peak_rss()

    t0 = time.perf_counter()
    loader = loader_factory()
    it = iter(loader)
    batch = next(it)  # an empty loader raises StopIteration here: nothing to measure
    ttfb = time.perf_counter() - t0

    def next_batch() -> Any:
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(loader)
            return next(it)

    for _ in range(warmup_batches):
        batch = next_batch()

    one_pass = n_batches is None and seconds is None
    entropies: list[tuple[int, float]] = []
    seen: list[np.ndarray] = []
    n_cells = n_done = max_len = 0
    start = time.perf_counter()
    while True:
        if one_pass:
            try:
                batch = next(it)
            except StopIteration:
                if n_done:
                    break
                it = iter(loader)
                continue
        else:
            batch = next_batch()
        size = _batch_len(batch)
        n_cells += size
        n_done += 1
        max_len = max(max_len, size)
        if get_codes is not None:
            codes = get_codes(batch)
            entropies.append((codes.size, batch_entropy(codes)))
            if categories is None:
                seen.append(codes)
        if n_batches is not None and n_done >= n_batches:
            break
        if seconds is not None and time.perf_counter() - start >= seconds:
            break
    elapsed = time.perf_counter() - start
    workers = children_peak_rss_bytes()
    peak = (peak_rss_bytes() or 0) + workers

    e_mean = e_ideal = ratio = math.nan
    full = [e for n, e in entropies if n == max_len]
    if full:
        e_mean = float(np.mean(full))
        pool = categories if categories is not None else np.concatenate(seen)
        e_ideal = ideal_entropy(pool, max_len)
        ratio = e_mean / e_ideal if e_ideal > 0 else math.nan
    return BenchResult(
        loader=name,
        cells_per_s=n_cells / elapsed if elapsed > 0 else math.nan,
        time_to_first_batch_s=ttfb,
        peak_rss_gb=peak / 1e9,
        entropy_ratio=ratio,
        n_cells=n_cells,
        n_batches=n_done,
        seconds=elapsed,
        batch_size=max_len,
        entropy_mean=e_mean,
        entropy_ideal=e_ideal,
        peak_rss_workers_gb=workers / 1e9,
        settings=dict(settings or {}),
    )
