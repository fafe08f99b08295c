"""Loader benchmark: the library part of ``atlasloader bench``.

:func:`bench_store` measures atlasloader's :class:`~atlasloader.AnnDataLoader` on one store, as
a model would use it (what ``atlasloader bench STORE`` runs). The measuring itself is
:func:`~.measure.measure_loader` (:mod:`.measure`, shared with the peer loaders), the tables
are :func:`~.tables.format_table` and :func:`~.tables.format_markdown` (:mod:`.tables`); both
are exported here too.
"""

from __future__ import annotations

import os
import time

import numpy as np

from .measure import (
    BenchResult,
    batch_entropy,
    ideal_entropy,
    measure_loader,
    peak_rss_bytes,
    reset_peak_rss,
)
from .tables import COLUMNS, format_markdown, format_table

__all__ = [
    "COLUMNS",
    "BenchResult",
    "batch_entropy",
    "bench_store",
    "format_markdown",
    "format_table",
    "ideal_entropy",
    "measure_loader",
    "peak_rss_bytes",
    "reset_peak_rss",
]


def bench_store(
    path: str | os.PathLike[str],
    *,
    batch_size: int = 512,
    shuffle: bool = True,
    dense: bool = True,
    rows_per_read: int | None = None,
    reads_per_buffer: int | None = None,
    batch_key: str = "batch",
    n_batches: int = 300,
    seed: int = 0,
    warmup_batches: int = 20,
    name: str | None = None,
) -> BenchResult:
    """Benchmark :class:`~atlasloader.AnnDataLoader` on a store, as a model would use it.

    The store is opened with :func:`atlasloader.read_lazy` and registered with ``X`` and
    ``obs[batch_key]`` (registration writes the encoded column into the store, as for any
    model setup). Peak RSS counts opening and registration; time to first batch counts loader
    construction and the first batch only.

    Parameters
    ----------
    path
        An AnnData Zarr store (or anything :func:`atlasloader.read_lazy` opens).
    batch_size
        Cells per minibatch.
    shuffle
        Shuffle (chunk-aware) as in training.
    dense
        Dense float32 ``X``; ``False`` yields sparse CSR tensors (no densifying).
    rows_per_read, reads_per_buffer
        The loader's randomness/locality knobs (``None``: its defaults).
    batch_key
        Categorical ``obs`` column whose per-batch entropy measures randomness.
    n_batches
        Batches timed after warm-up.
    seed
        Shuffling seed.
    warmup_batches
        Untimed batches before timing.
    name
        Label in the table (default: ``atlasloader`` plus the non-default settings).

    Returns
    -------
    The measurements; :attr:`BenchResult.settings` records the settings and setup time.

    Examples
    --------
    >>> result = bench_store("atlas.zarr", n_batches=100)  # doctest: +SKIP
    >>> format_table([result])  # doctest: +SKIP
    """
    # A training script has torch loaded already: its import is not the loader's first batch.
    import torch  # noqa: F401

    from ..fields import CategoricalObsField, LayerField
    from ..loading import AnnDataLoader
    from ..manager import AnnDataManager
    from ..store.lazy import read_lazy

    reset_peak_rss()
    t0 = time.perf_counter()
    adata = read_lazy(path)
    manager = AnnDataManager(
        fields=[LayerField("X", None), CategoricalObsField("batch", batch_key)]
    )
    manager.register_fields(adata)
    codes = np.asarray(adata.obs[batch_key].cat.codes).reshape(-1)
    setup_s = time.perf_counter() - t0

    def factory() -> AnnDataLoader:
        return AnnDataLoader(
            manager,
            batch_size=batch_size,
            shuffle=shuffle,
            sparse=not dense,
            rows_per_read=rows_per_read,
            reads_per_buffer=reads_per_buffer,
            seed=seed,
        )

    knobs = {"rows_per_read": rows_per_read, "reads_per_buffer": reads_per_buffer}
    if name is None:
        parts = [f"{k}={v}" for k, v in knobs.items() if v is not None]
        parts += [] if dense else ["sparse"]
        parts += [] if shuffle else ["no shuffle"]
        name = "atlasloader" + (f" ({', '.join(parts)})" if parts else "")
    settings = {
        "path": os.fspath(path),
        "n_obs": int(codes.size),
        "n_vars": int(adata.n_vars),
        "dense": dense,
        "shuffle": shuffle,
        "seed": seed,
        "setup_s": setup_s,
        **knobs,
    }
    return measure_loader(
        factory,
        n_batches=n_batches,
        warmup_batches=warmup_batches,
        category_key="batch",
        categories=codes,
        name=name,
        reset_peak=False,
        settings=settings,
    )
