"""Highly variable genes on counts, Seurat v3 style (scanpy's ``flavor="seurat_v3"``).

Per batch (all cells when there is no batch key), with ``n`` cells:

1. per gene mean ``m`` and sample variance ``v`` (``ddof=1``), from the statistics pass;
2. a LOESS (local quadratic, tricube weights, ``span``) of ``log10(v)`` on ``log10(m)`` over
   the genes with ``v > 0``, giving the regularised standard deviation
   ``s = sqrt(10 ** fitted)`` (1 for genes with ``v == 0``);
3. every value is clipped at ``c = m + s * sqrt(n)`` and the normalised variance is
   ``sum_cells (min(x, c) - m)^2 / ((n - 1) * s^2)``;
4. genes are ranked by normalised variance (0 = most variable); a gene's
   ``highly_variable_nbatches`` is the number of batches where its rank is below
   ``n_top_genes``, its ``highly_variable_rank`` the median of those ranks (NaN in none), and the
   ``n_top_genes`` genes with the smallest median rank (more batches first among equal ranks,
   then gene order) are selected, as scanpy does.

Step 3 needs a second pass over ``X`` only for values above their clip: since
``min(x, c) = x - (x - c)^+``, the clipped sums follow from the first pass's sums minus the
excess of those values. The first pass records every gene's largest value per batch, so the
second pass looks only at the (batch, gene) pairs whose maximum exceeds the clip, and is
skipped altogether when there is none.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InvalidArgumentError, InvalidDataError
from . import graph
from .loess import loess
from .source import MatrixSource, load_block, matrix_source
from .stats import Moments, scan

__all__ = [
    "HIGHLY_VARIABLE",
    "HIGHLY_VARIABLE_NBATCHES",
    "HIGHLY_VARIABLE_RANK",
    "VARIANCES_NORM",
    "batch_codes",
    "highly_variable_genes",
    "hvg_frame",
    "rank_genes",
    "regularized_std",
]

HIGHLY_VARIABLE = "highly_variable"
HIGHLY_VARIABLE_RANK = "highly_variable_rank"
VARIANCES_NORM = "variances_norm"
HIGHLY_VARIABLE_NBATCHES = "highly_variable_nbatches"


# --- the clipped second pass --------------------------------------------------------------------
@dataclass(frozen=True)
class ClipTable:
    """Clip values per (batch code, gene), ``inf`` for batches without cells."""

    clip: np.ndarray  # inf where no value of the (batch, gene) exceeds its clip
    floor: np.ndarray  # smallest clip of each batch


@dataclass(frozen=True)
class Excess:
    """Sums over values above their clip, per ``batch * n_vars + gene`` key (sorted, unique)."""

    keys: np.ndarray
    over: np.ndarray  # sum of (x - c)
    over_sq: np.ndarray  # sum of (x^2 - c^2)

    @classmethod
    def of(cls, keys: np.ndarray, over: np.ndarray, over_sq: np.ndarray) -> Excess:
        uniq, inverse = np.unique(keys, return_inverse=True)
        return cls(
            uniq.astype(np.int64),
            np.bincount(inverse, weights=over, minlength=uniq.size),
            np.bincount(inverse, weights=over_sq, minlength=uniq.size),
        )

    def merge(self, other: Excess) -> Excess:
        return Excess.of(
            np.concatenate([self.keys, other.keys]),
            np.concatenate([self.over, other.over]),
            np.concatenate([self.over_sq, other.over_sq]),
        )

    def dense(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        over = np.zeros(shape[0] * shape[1])
        over_sq = np.zeros_like(over)
        over[self.keys] = self.over
        over_sq[self.keys] = self.over_sq
        return over.reshape(shape), over_sq.reshape(shape)


def block_excess(
    part: Any, start: int, stop: int, codes: np.ndarray | None, table: ClipTable
) -> Excess:
    """Pass-2 partial of rows ``[start, stop)``: the excess of values above their clip."""
    block: Any = load_block(part, start, stop)
    n_vars = table.clip.shape[1]
    rows_codes = np.zeros(stop - start, np.int64) if codes is None else codes.astype(np.int64)
    if rows_codes.size == 0:
        return Excess.of(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    floor = float(table.floor[np.unique(rows_codes)].min())
    if not np.isfinite(floor):
        return Excess.of(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    if sp.issparse(block):
        # Most values are below every clip of their batch: compare with the smallest first, so
        # only the few above it are looked up gene by gene.
        candidates = np.flatnonzero(block.data > floor)
        rows = np.searchsorted(block.indptr, candidates, side="right") - 1
        cols = block.indices[candidates]
        values = block.data[candidates].astype(np.float64)
    else:
        rows, cols = np.nonzero(block > floor)
        values = np.asarray(block[rows, cols], dtype=np.float64)
    keys = rows_codes[rows] * n_vars + cols
    clip = table.clip.ravel()[keys]
    above = values > clip
    keys, values, clip = keys[above], values[above], clip[above]
    return Excess.of(keys, values - clip, values * values - clip * clip)


def _merge(a: Excess, b: Excess) -> Excess:
    return a.merge(b)


def _excess_pass(
    source: MatrixSource, codes: np.ndarray | None, table: ClipTable, progress: bool
) -> Excess:
    shared_table = graph.shared(table, "clip-table")
    parts = [
        dask.delayed(block_excess, pure=False)(
            source.task_input(), a, b, None if codes is None else codes[a:b], shared_table
        )
        for a, b in source.blocks
    ]
    (excess,) = graph.compute(
        graph.tree_reduce(parts, _merge, "excess"), progress=progress, label="clipped variances"
    )
    return excess


# --- the maths ----------------------------------------------------------------------------------
def regularized_std(
    mean: np.ndarray, var: np.ndarray, span: float = 0.3, what: str = "adata.X"
) -> np.ndarray:
    """``sqrt(10 ** loess(log10 var ~ log10 mean))`` for genes with ``var > 0``, else 1.

    Examples
    --------
    >>> mean = np.geomspace(0.01, 10, 50)
    >>> bool(np.allclose(regularized_std(mean, 2 * mean), np.sqrt(2 * mean)))
    True
    """
    std = np.ones_like(mean, dtype=np.float64)
    varies = np.asarray(var > 0)
    if varies.sum() < 3:
        msg = (
            f"only {int(varies.sum())} gene(s) of {what} vary: the mean-variance trend of "
            "highly-variable gene selection needs at least 3 (check the layer and batch_key)"
        )
        raise InvalidDataError(msg)
    fitted = loess(np.log10(mean[varies]), np.log10(var[varies]), span)
    std[varies] = np.sqrt(10.0**fitted)
    return std


def rank_genes(norm_vars: np.ndarray, n_top_genes: int) -> dict[str, np.ndarray]:
    """Select genes from normalised variances ``(n_batches, n_vars)`` as scanpy's seurat_v3.

    Returns
    -------
    dict
        ``highly_variable`` (bool), ``highly_variable_rank`` (float32, NaN when in no batch's
        top ``n_top_genes``), ``highly_variable_nbatches`` (int64) and ``variances_norm``
        (float64, mean over batches).

    Examples
    --------
    >>> out = rank_genes(np.array([[3.0, 1.0, 2.0]]), 2)
    >>> out["highly_variable"].tolist(), out["highly_variable_rank"].tolist()
    ([True, False, True], [0.0, nan, 1.0])
    """
    n_batches, n_vars = norm_vars.shape
    order = np.argsort(-norm_vars, axis=1, kind="stable")
    ranks = np.empty((n_batches, n_vars), dtype=np.float32)
    np.put_along_axis(ranks, order, np.arange(n_vars, dtype=np.float32)[None, :], axis=1)
    in_top = ranks < n_top_genes
    nbatches = in_top.sum(0).astype(np.int64)
    ranks[~in_top] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # genes in no batch's top: NaN
        median = np.nanmedian(ranks, axis=0).astype(np.float32)
    # Smallest median rank first (NaN last), then more batches; ties keep gene order.
    chosen = np.lexsort((-nbatches, np.where(np.isnan(median), np.inf, median)))[:n_top_genes]
    highly_variable = np.zeros(n_vars, dtype=bool)
    highly_variable[chosen] = True
    return {
        HIGHLY_VARIABLE: highly_variable,
        HIGHLY_VARIABLE_RANK: median,
        VARIANCES_NORM: norm_vars.mean(0),
        HIGHLY_VARIABLE_NBATCHES: nbatches,
    }


def _batch_label(categories: np.ndarray | None, code: int) -> str:
    return "all cells" if categories is None else f"batch {categories[code]!r}"


def hvg_frame(
    source: MatrixSource,
    moments: Moments,
    codes: np.ndarray | None,
    n_top_genes: int,
    span: float,
    var_names: Any,
    categories: np.ndarray | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, bool]:
    """Highly variable genes from the statistics pass (and, when needed, the clipped pass).

    Returns the frame (indexed by ``var_names``) and whether a second pass over the matrix ran.
    """
    n_top = _check_n_top(n_top_genes, source.n_vars)
    if moments.vmin < 0:
        msg = (
            f"{source.where} holds negative values; Seurat v3 highly-variable genes are "
            "computed on raw counts: pass layer= naming the counts"
        )
        raise InvalidDataError(msg)
    keep = moments.n_cells > 0
    groups, n_cells = moments.groups[keep], moments.n_cells[keep]
    for code, n in zip(groups, n_cells):
        if n < 2:
            msg = (
                f"{_batch_label(categories, int(code))} has {int(n)} cell: per-batch "
                "highly-variable genes need at least 2 cells in every batch; merge or drop it"
            )
            raise InvalidDataError(msg)
    mean, var = moments.mean()[keep], moments.var()[keep]
    # One LOESS per batch, as tasks: on a cluster the fits of many batches run in parallel.
    fits = [
        dask.delayed(regularized_std, pure=False)(
            mean[i], var[i], span, f"{source.where} in {_batch_label(categories, int(code))}"
        )
        for i, code in enumerate(groups)
    ]
    std = np.stack(graph.compute(*fits))
    clip = mean + std * np.sqrt(n_cells.astype(np.float64))[:, None]
    # Only (batch, gene) pairs whose largest value exceeds the clip need the second pass.
    affected = moments.vmax[keep] > clip
    clipped = bool(affected.any())
    over = over_sq = np.zeros_like(mean)
    if clipped:
        n_codes = int(moments.groups.max()) + 1
        table = ClipTable(np.full((n_codes, source.n_vars), np.inf), np.full(n_codes, np.inf))
        table.clip[groups] = np.where(affected, clip, np.inf)
        table.floor[groups] = table.clip[groups].min(1)
        dense_over, dense_over_sq = _excess_pass(source, codes, table, progress).dense(
            (n_codes, source.n_vars)
        )
        over, over_sq = dense_over[groups], dense_over_sq[groups]
    n = n_cells.astype(np.float64)[:, None]
    sums = moments.sums[keep] - over
    sumsq = moments.sumsq[keep] - over_sq
    norm_vars = (n * mean * mean + sumsq - 2.0 * mean * sums) / ((n - 1.0) * std * std)
    ranked = rank_genes(norm_vars, n_top)
    frame = pd.DataFrame(ranked, index=pd.Index(var_names))
    if codes is None:
        frame = frame.drop(columns=[HIGHLY_VARIABLE_NBATCHES])
    return frame, clipped


def _check_n_top(n_top_genes: int, n_vars: int, warn: bool = True) -> int:
    if isinstance(n_top_genes, bool) or not isinstance(n_top_genes, int | np.integer):
        msg = f"n_top_genes must be a positive integer, got {n_top_genes!r}"
        raise InvalidArgumentError(msg)
    if n_top_genes < 1:
        raise InvalidArgumentError(f"n_top_genes must be at least 1, got {n_top_genes}")
    if n_top_genes > n_vars and warn:
        warnings.warn(
            f"n_top_genes={n_top_genes} is more than the {n_vars} genes: selecting all of them",
            UserWarning,
            stacklevel=3,
        )
    return int(min(n_top_genes, n_vars))


# --- inputs -------------------------------------------------------------------------------------
def batch_codes(adata: Any, batch_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Categories and int32 code per cell of ``adata.obs[batch_key]`` (dask on stores).

    Raises
    ------
    MissingKeyError
        The column is absent.
    InvalidDataError
        The column has missing values.
    """
    from ..fields._codes import encode
    from ..store.backing import backing_of

    backing = backing_of(adata)
    backing.require("obs", batch_key)
    with warnings.catch_warnings():
        # encode() warns about categories too small to train on; irrelevant to gene selection.
        warnings.simplefilter("ignore", UserWarning)
        categories, codes = encode(backing, "obs", batch_key)
    if not isinstance(codes, np.ndarray):
        (codes,) = dask.compute(codes)
    return np.asarray(categories), np.asarray(codes, dtype=np.int32)


def warn_if_not_counts(source: MatrixSource) -> None:
    """Warn (as scanpy) when a sample of the matrix holds non-integer values."""
    from ..fields.layer import is_nonnegative_integer

    if not is_nonnegative_integer(source.sample()):
        warnings.warn(
            f"highly-variable gene selection (Seurat v3) expects raw counts, but {source.where} "
            "holds non-integer or negative values; pass layer= naming the raw counts",
            UserWarning,
            stacklevel=3,
        )


def highly_variable_genes(
    adata: Any,
    n_top_genes: int,
    layer: str | None = None,
    batch_key: str | None = None,
    span: float = 0.3,
    *,
    progress: bool = False,
) -> pd.DataFrame:
    """Seurat v3 highly-variable genes on counts, computed chunk-wise with dask.

    The same selection as scanpy's ``highly_variable_genes(flavor="seurat_v3")``; the LOESS is
    evaluated exactly at every gene (scanpy's scikit-misc interpolates it), so normalised
    variances agree to about 1e-3 relative and the selection up to genes tied at the cut.
    Nothing is written; :func:`~atlasloader.preprocess.preprocess` persists the same columns.

    Parameters
    ----------
    adata
        A store opened with :func:`atlasloader.read_lazy`, or an in-memory AnnData.
    n_top_genes
        Number of genes to select.
    layer
        Layer holding the counts (None for ``X``).
    batch_key
        Obs column of batches: genes are ranked within each batch and combined (see the module
        docstring). None treats all cells as one batch.
    span
        Fraction of genes in each LOESS neighbourhood.
    progress
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``adata.var``: ``highly_variable`` (bool), ``highly_variable_rank``
        (float32), ``variances_norm`` (float64) and, with ``batch_key``,
        ``highly_variable_nbatches`` (int64).

    Examples
    --------
    >>> adata = atlasloader.read_lazy("atlas.zarr")  # doctest: +SKIP
    >>> hvg = highly_variable_genes(adata, n_top_genes=2000, batch_key="batch")  # doctest: +SKIP
    >>> int(hvg["highly_variable"].sum())  # doctest: +SKIP
    2000
    """
    source = matrix_source(adata, layer)
    _check_n_top(n_top_genes, source.n_vars, warn=False)  # before reading anything
    warn_if_not_counts(source)
    categories, codes = (None, None) if batch_key is None else batch_codes(adata, batch_key)
    result = scan(source, codes, want_cells=False, progress=progress)
    frame, _ = hvg_frame(
        source, result.moments, codes, n_top_genes, span, adata.var_names, categories, progress
    )
    return frame
