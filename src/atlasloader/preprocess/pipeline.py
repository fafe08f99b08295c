"""``preprocess``: compute what is asked in as few passes over ``X`` as possible, and persist it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from ..errors import InvalidArgumentError, InvalidTypeError
from ..store.lazy import LazyAnnData, read_lazy
from ..store.lock import store_dir, write_lock
from ..store.write import Staged, store_into
from .hvg import (
    HIGHLY_VARIABLE,
    HIGHLY_VARIABLE_NBATCHES,
    HIGHLY_VARIABLE_RANK,
    VARIANCES_NORM,
    batch_codes,
    hvg_frame,
    warn_if_not_counts,
)
from .persist import Location, Target, target_for
from .select import positive_median
from .source import matrix_source
from .stats import (
    MEAN_COUNTS,
    N_CELLS_BY_COUNTS,
    N_GENES_BY_COUNTS,
    SIZE_FACTOR,
    TOTAL_COUNTS,
    VAR_COUNTS,
    gene_frame,
    no_counts_error,
    scan,
    size_factors,
)

__all__ = ["GENE_STATS", "HVG", "LIBRARY_SIZE", "preprocess"]

LIBRARY_SIZE = "library_size"
GENE_STATS = "gene_stats"
HVG = "highly_variable_genes"


@dataclass
class _Pass:
    """One persisted result set: its columns, parameters and inputs (for reuse checks)."""

    name: str
    outputs: list[str]
    params: dict[str, Any]
    inputs: list[Location]
    summary: dict[str, Any] = field(default_factory=dict)


def _open(adata_or_path: Any) -> Any:
    if isinstance(adata_or_path, str | os.PathLike):
        return read_lazy(adata_or_path, mode="r+")
    if isinstance(adata_or_path, LazyAnnData):
        return adata_or_path
    try:
        import anndata as ad
    except ImportError:  # pragma: no cover - anndata is a dependency
        ad = None  # type: ignore[assignment]
    if ad is not None and isinstance(adata_or_path, ad.AnnData):
        return adata_or_path
    msg = (
        "preprocess expects a store path, a store opened with atlasloader.read_lazy or an "
        f"anndata.AnnData, got {type(adata_or_path).__name__}"
    )
    raise InvalidTypeError(msg)


def _plan(
    size_factors: bool,
    gene_stats: bool,
    n_top_genes: int | None,
    layer: str | None,
    batch_key: str | None,
    span: float,
) -> list[_Pass]:
    matrix: Location = ("X", None) if layer is None else ("layers", layer)
    passes = []
    if size_factors:
        outputs = [f"obs/{c}" for c in (TOTAL_COUNTS, N_GENES_BY_COUNTS, SIZE_FACTOR)]
        passes.append(_Pass(LIBRARY_SIZE, outputs, {"layer": layer}, [matrix]))
    if gene_stats:
        outputs = [f"var/{c}" for c in (MEAN_COUNTS, VAR_COUNTS, N_CELLS_BY_COUNTS)]
        passes.append(_Pass(GENE_STATS, outputs, {"layer": layer}, [matrix]))
    if n_top_genes is not None:
        cols = [HIGHLY_VARIABLE, HIGHLY_VARIABLE_RANK, VARIANCES_NORM]
        inputs = [matrix]
        if batch_key is not None:
            cols.append(HIGHLY_VARIABLE_NBATCHES)
            inputs.append(("obs", batch_key))
        params = {
            "layer": layer,
            "batch_key": batch_key,
            "n_top_genes": int(n_top_genes),
            "span": float(span),
            "flavor": "seurat_v3",
        }
        passes.append(_Pass(HVG, [f"var/{c}" for c in cols], params, inputs))
    return passes


def _check_args(n_top_genes: int | None, batch_key: str | None, span: float) -> None:
    if n_top_genes is not None and (
        isinstance(n_top_genes, bool)
        or not isinstance(n_top_genes, int | np.integer)
        or n_top_genes < 1
    ):
        msg = f"n_top_genes must be a positive integer or None, got {n_top_genes!r}"
        raise InvalidArgumentError(msg)
    if batch_key is not None and n_top_genes is None:
        msg = (
            f"batch_key={batch_key!r} is only used to select highly variable genes per batch: "
            "pass n_top_genes as well, or drop batch_key"
        )
        raise InvalidArgumentError(msg)
    if not span > 0:
        raise InvalidArgumentError(f"span must be positive, got {span!r}")


def preprocess(
    adata_or_path: Any,
    *,
    size_factors: bool = True,
    gene_stats: bool = True,
    n_top_genes: int | None = None,
    layer: str | None = None,
    batch_key: str | None = None,
    span: float = 0.3,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Compute library sizes, gene statistics and highly variable genes, and persist them.

    Everything asked for comes from one pass over the matrix (a second one only for highly
    variable genes when some value exceeds its Seurat v3 clip), run with dask on the active
    scheduler: threads by default, a ``dask.distributed`` cluster when a client is active.
    Results are written into the store (atomically, readable by ``anndata.read_zarr``) or, for
    an in-memory AnnData, into ``adata.obs``/``adata.var``:

    ======================  =====  =========================================================
    column                  where  meaning
    ======================  =====  =========================================================
    ``total_counts``        obs    float64, sum of the cell's values (its library size)
    ``n_genes_by_counts``   obs    int32, genes with a non-zero value in the cell
    ``size_factor``         obs    float32, ``total_counts / median(total_counts > 0)``
    ``mean_counts``         var    float64, mean over cells
    ``var_counts``          var    float64, sample variance over cells (``ddof=1``)
    ``n_cells_by_counts``   var    int64, cells with a non-zero value
    ``highly_variable``     var    bool, one of the ``n_top_genes`` selected genes
    ``highly_variable_rank`` var   float32, (median over batches of the) rank, NaN if in no
                                   batch's top ``n_top_genes``
    ``variances_norm``      var    float64, normalised variance (mean over batches)
    ``highly_variable_nbatches`` var  int64, batches where the gene is in the top (only with
                                   ``batch_key``)
    ======================  =====  =========================================================

    ``size_factor`` is the relative library size (median 1 over cells with counts, 0 for empty
    cells), the usual size factor of count normalisation (``x / size_factor`` keeps the
    typical cell's scale). scvi-tools uses ``size_factor_key`` as the library size itself (the
    offset ``log(size_factor)`` of a softmax over genes): register ``total_counts`` there when
    the model should reconstruct absolute counts, ``size_factor`` for relative scaling.

    Columns the user already has under these names are never changed: preprocessing raises
    unless ``overwrite=True``. Columns written by an earlier run are recognised (see
    :mod:`atlasloader.preprocess.persist`) and, when the data and parameters are unchanged,
    reused without reading ``X`` again; otherwise recomputed and replaced.

    Parameters
    ----------
    adata_or_path
        A store path (opened with ``read_lazy(path, mode="r+")``), a store opened with
        :func:`atlasloader.read_lazy`, or an in-memory :class:`anndata.AnnData`.
    size_factors
        Compute and persist ``total_counts``, ``n_genes_by_counts`` and ``size_factor``.
    gene_stats
        Compute and persist ``mean_counts``, ``var_counts`` and ``n_cells_by_counts``.
    n_top_genes
        Select this many highly variable genes (Seurat v3 flavour on counts); None skips it.
        The loader applies the subset with ``LayerField(..., var_subset="highly_variable")``.
    layer
        Layer holding the counts (None for ``X``).
    batch_key
        Obs column of batches for per-batch highly variable genes.
    span
        LOESS span of the highly-variable gene selection.
    overwrite
        Replace existing columns of the same names even when they were not written by us.
    progress
        Show progress bars (rich, on stderr) while passes run.

    Returns
    -------
    dict
        ``computed`` and ``reused`` (pass names: ``library_size``, ``gene_stats``,
        ``highly_variable_genes``), ``passes_over_x`` (0, 1 or 2), ``obs_columns`` and
        ``var_columns`` (what the store or AnnData now holds from this call), and ``summary``:
        ``n_obs``, ``n_vars``, ``median_total_counts``, ``n_empty_cells``,
        ``n_highly_variable``, ``clipping_pass`` where they apply.

    Raises
    ------
    InvalidDataError
        A target column exists and is the user's (without ``overwrite=True``), or the data
        cannot be used (no cells, negative values for highly variable genes...).
    ReadOnlyStoreError
        Results must be written but the store is read-only.

    Examples
    --------
    >>> from atlasloader.preprocess import preprocess
    >>> out = preprocess("atlas.zarr", n_top_genes=2000, batch_key="batch")  # doctest: +SKIP
    >>> out["computed"], out["passes_over_x"]  # doctest: +SKIP
    (['library_size', 'gene_stats', 'highly_variable_genes'], 2)
    >>> preprocess("atlas.zarr", n_top_genes=2000, batch_key="batch")["reused"]  # doctest: +SKIP
    ['library_size', 'gene_stats', 'highly_variable_genes']
    """
    _check_args(n_top_genes, batch_key, span)
    adata = _open(adata_or_path)
    passes = _plan(size_factors, gene_stats, n_top_genes, layer, batch_key, span)
    if not passes:
        msg = "nothing to compute: pass size_factors=True, gene_stats=True or n_top_genes"
        raise InvalidArgumentError(msg)
    directory = store_dir(adata)
    with write_lock(directory, "preprocess"):
        if directory is not None:
            adata.refresh()  # what another process persisted while this one waited
        target = target_for(adata)
        source = matrix_source(adata, layer)  # checks the layer before anything else
        reused, todo = [], []
        for p in passes:
            persisted = target.reusable(p.name, p.params, p.inputs, p.outputs)
            if persisted is None:
                todo.append(p)
            else:
                p.summary = persisted
                reused.append(p)
        target.check_outputs([loc for p in todo for loc in p.outputs], overwrite)
        n_passes = 0
        if todo:
            target.require_writable()
            target.discard()  # staging left by a killed run (we hold the write lock)
            try:
                n_passes = _run(adata, source, target, todo, n_top_genes, batch_key, span, progress)
            except BaseException:
                target.discard()  # a failed pass leaves nothing behind, not even staging
                raise
        target.finish()
    summary: dict[str, Any] = {"n_obs": source.n_obs, "n_vars": source.n_vars}
    for p in passes:
        summary.update(p.summary)
    outputs = [loc for p in passes for loc in p.outputs]
    return {
        "computed": [p.name for p in todo],
        "reused": [p.name for p in reused],
        "passes_over_x": n_passes,
        "obs_columns": [loc.split("/", 1)[1] for loc in outputs if loc.startswith("obs/")],
        "var_columns": [loc.split("/", 1)[1] for loc in outputs if loc.startswith("var/")],
        "summary": summary,
    }


def _run(
    adata: Any,
    source: Any,
    target: Target,
    todo: list[_Pass],
    n_top_genes: int | None,
    batch_key: str | None,
    span: float,
    progress: bool,
) -> int:
    """Compute the passes in ``todo`` and write them; returns the passes made over ``X``."""
    names = {p.name for p in todo}
    categories = codes = None
    if HVG in names:
        warn_if_not_counts(source)
        if batch_key is not None:
            categories, codes = batch_codes(adata, batch_key)
    staged = _stage_cells(target, source) if LIBRARY_SIZE in names else None
    sink = None if staged is None else (staged[0].array, staged[1].array)
    result = scan(source, codes, want_cells=LIBRARY_SIZE in names, progress=progress, sink=sink)
    n_passes = 1
    columns: dict[str, dict[str, Any]] = {}
    if LIBRARY_SIZE in names:
        columns[LIBRARY_SIZE], median, n_positive = _library_columns(result, staged, target, source)
        _summary(todo, LIBRARY_SIZE).update(
            median_total_counts=median, n_empty_cells=int(source.n_obs - n_positive)
        )
    if GENE_STATS in names:
        frame = gene_frame(result.moments, adata.var_names)
        columns[GENE_STATS] = {f"var/{c}": frame[c].to_numpy() for c in frame.columns}
    if HVG in names:
        assert n_top_genes is not None
        frame, clipped = hvg_frame(
            source,
            result.moments,
            codes,
            n_top_genes,
            span,
            adata.var_names,
            categories,
            progress,
        )
        n_passes += int(clipped)
        columns[HVG] = {f"var/{c}": frame[c].to_numpy() for c in frame.columns}
        _summary(todo, HVG).update(
            n_highly_variable=int(frame[HIGHLY_VARIABLE].sum()), clipping_pass=clipped
        )
    for p in todo:
        target.write(p.name, p.params, p.inputs, columns[p.name], p.summary)
    return n_passes


def _stage_cells(target: Target, source: Any) -> tuple[Staged, Staged] | None:
    """Store arrays the pass's tasks write per-cell values into (None: gather them)."""
    rows = source.blocks[0][1] - source.blocks[0][0]
    totals = target.stage(f"obs/{TOTAL_COUNTS}", source.n_obs, np.float64, rows)
    if totals is None:
        return None
    ngenes = target.stage(f"obs/{N_GENES_BY_COUNTS}", source.n_obs, np.int32, rows)
    assert ngenes is not None
    return totals, ngenes


def _library_columns(
    result: Any, staged: tuple[Staged, Staged] | None, target: Target, source: Any
) -> tuple[dict[str, Any], float, int]:
    """The library-size columns (arrays, or staged store arrays), the median and the number
    of cells with counts."""
    if staged is None:
        totals = result.total_counts
        assert totals is not None
        positive = totals[totals > 0]
        factors = size_factors(totals, source.where)
        cols = {TOTAL_COUNTS: totals, N_GENES_BY_COUNTS: result.n_genes_by_counts}
        cols[SIZE_FACTOR] = factors
        median = float(np.median(positive))
        n_positive = int(positive.size)
    else:
        # Totals were written by the tasks; the median is selected from the store, and the
        # factors are computed chunk by chunk from it: nothing per cell on the client.
        median, n_positive = positive_median(staged[0].array, source.n_obs)
        if n_positive == 0:
            raise no_counts_error(source.where)
        factors_staged = target.stage(f"obs/{SIZE_FACTOR}", source.n_obs, np.float32, 1 << 20)
        assert factors_staged is not None
        factors = (da.from_zarr(staged[0].array) / median).astype(np.float32)
        store_into(factors, factors_staged)
        cols = {TOTAL_COUNTS: staged[0], N_GENES_BY_COUNTS: staged[1]}
        cols[SIZE_FACTOR] = factors_staged
    return {f"obs/{k}": v for k, v in cols.items()}, median, n_positive


def _summary(passes: list[_Pass], name: str) -> dict[str, Any]:
    return next(p for p in passes if p.name == name).summary
