"""Per-cell library sizes and per-gene moments in one chunk-wise pass over ``X``.

One task per row block returns, for the cells of the block, their total counts and number of
non-zero genes, and for every (group, gene) the number of cells, the sum, the sum of squares and
the number of non-zero values (a group is a batch when highly variable genes are selected per
batch, else all cells). Partials are added in a tree; means and sample variances (``ddof=1``)
follow from the sums in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InvalidDataError
from . import graph
from .source import Block, MatrixSource, load_block, matrix_source

__all__ = [
    "MEAN_COUNTS",
    "N_CELLS_BY_COUNTS",
    "N_GENES_BY_COUNTS",
    "SIZE_FACTOR",
    "TOTAL_COUNTS",
    "VAR_COUNTS",
    "Moments",
    "Scan",
    "gene_stats",
    "library_size",
    "scan",
    "size_factors",
]

TOTAL_COUNTS = "total_counts"
N_GENES_BY_COUNTS = "n_genes_by_counts"
SIZE_FACTOR = "size_factor"
MEAN_COUNTS = "mean_counts"
VAR_COUNTS = "var_counts"
N_CELLS_BY_COUNTS = "n_cells_by_counts"


@dataclass(frozen=True)
class Moments:
    """Sums over cells per (group, gene): what means, variances and detection counts need.

    Parameters
    ----------
    groups
        ``(k,)`` sorted group ids present (batch codes; ``[0]`` when there are no batches).
    n_cells
        ``(k,)`` cells per group.
    sums, sumsq
        ``(k, n_vars)`` float64 sums of values and of squared values.
    nnz
        ``(k, n_vars)`` non-zero values.
    vmax
        ``(k, n_vars)`` largest stored value (``-inf`` where a sparse gene stores none): tells
        which genes a Seurat v3 clip can affect.
    vmin
        Smallest value anywhere (implicit zeros of sparse data included).
    """

    groups: np.ndarray
    n_cells: np.ndarray
    sums: np.ndarray
    sumsq: np.ndarray
    nnz: np.ndarray
    vmax: np.ndarray
    vmin: float

    @property
    def n_vars(self) -> int:
        return int(self.sums.shape[1])

    def merge(self, other: Moments) -> Moments:
        """The moments of the union of both sets of cells."""
        groups = np.union1d(self.groups, other.groups)
        a = np.searchsorted(groups, self.groups)
        b = np.searchsorted(groups, other.groups)
        shape = (groups.size, self.n_vars)

        def add(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            out = np.zeros((groups.size, *x.shape[1:]), dtype=x.dtype)
            out[a] += x
            out[b] += y
            return out

        vmax = np.full(shape, -np.inf)
        vmax[a] = self.vmax
        vmax[b] = np.maximum(vmax[b], other.vmax)
        return Moments(
            groups,
            add(self.n_cells, other.n_cells),
            add(self.sums, other.sums),
            add(self.sumsq, other.sumsq),
            add(self.nnz, other.nnz),
            vmax,
            min(self.vmin, other.vmin),
        )

    def pooled(self) -> Moments:
        """All groups added into one (group 0)."""
        return Moments(
            np.zeros(1, dtype=np.int64),
            self.n_cells.sum(keepdims=True),
            self.sums.sum(0, keepdims=True),
            self.sumsq.sum(0, keepdims=True),
            self.nnz.sum(0, keepdims=True),
            self.vmax.max(0, keepdims=True),
            self.vmin,
        )

    def mean(self) -> np.ndarray:
        """``(k, n_vars)`` means per group."""
        return self.sums / np.maximum(self.n_cells, 1)[:, None]

    def var(self) -> np.ndarray:
        """``(k, n_vars)`` sample variances (``ddof=1``; NaN for groups of one cell)."""
        n = self.n_cells[:, None].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            centred = self.sumsq - self.sums * (self.sums / np.maximum(n, 1))
            var = np.maximum(centred, 0.0) / (n - 1)
        return np.where(n > 1, var, np.nan)


@dataclass(frozen=True)
class Scan:
    """The result of one pass: moments, and per-cell values when they were asked for."""

    moments: Moments
    total_counts: np.ndarray | None
    n_genes_by_counts: np.ndarray | None


# --- kernels (run inside dask tasks) -----------------------------------------------------------
def _row_sums(values: np.ndarray, ptr: np.ndarray) -> np.ndarray:
    """Sum of each CSR row's stored values (0 for rows without any)."""
    out = np.zeros(ptr.size - 1)
    full = ptr[:-1] < ptr[1:]
    if full.any():
        out[full] = np.add.reduceat(values, ptr[:-1][full])
    return out


def _csr_moments(block: sp.csr_matrix, local: np.ndarray, k: int) -> tuple[Any, ...]:
    data, idx = block.data, block.indices
    ptr = block.indptr.astype(np.int64, copy=False)
    n_rows, n_vars = block.shape
    lengths = np.diff(ptr)
    all_nonzero = bool(data.all())
    vals = data.astype(np.float64)
    totals = _row_sums(vals, ptr)
    vmin = float(vals.min()) if vals.size else 0.0
    if (lengths < n_vars).any():
        vmin = min(vmin, 0.0)
    if k == 1:
        key = idx.astype(np.intp)
        flags = np.ones_like(vals) if all_nonzero else (data != 0).astype(np.float64)
    else:
        key = np.repeat(local.astype(np.intp) * n_vars, lengths) + idx
    vmax = np.full(k * n_vars, -np.inf)
    np.maximum.at(vmax, key, vals)  # float64 values and intp keys: numpy's fast path
    if k == 1:
        # Column sums as sparse products: scipy's kernels release the GIL and beat bincount.
        ones = np.ones(n_rows)
        sums = (ones @ sp.csr_matrix((vals, idx, ptr), shape=block.shape))[None, :]
        nnz = (ones @ sp.csr_matrix((flags, idx, ptr), shape=block.shape))[None, :]
        ngenes = lengths if all_nonzero else _row_sums(flags, ptr)
        del flags
        vals *= vals  # in place: one block-sized buffer fewer at the peak
        sumsq = (ones @ sp.csr_matrix((vals, idx, ptr), shape=block.shape))[None, :]
    else:
        size = k * n_vars
        sums = np.bincount(key, weights=vals, minlength=size).reshape(k, n_vars)
        if all_nonzero:
            nnz = np.bincount(key, minlength=size).reshape(k, n_vars)
            ngenes = lengths
        else:
            nonzero = data != 0
            nnz = np.bincount(key[nonzero], minlength=size).reshape(k, n_vars)
            ngenes = _row_sums(nonzero.astype(np.float64), ptr)
        vals *= vals
        sumsq = np.bincount(key, weights=vals, minlength=size).reshape(k, n_vars)
    return sums, sumsq, nnz, vmax.reshape(k, n_vars), vmin, totals, ngenes


def _dense_moments(block: np.ndarray, local: np.ndarray, k: int) -> tuple[Any, ...]:
    vals = np.asarray(block, dtype=np.float64)
    nonzero = block != 0
    n_rows = vals.shape[0]
    if k == 1:
        sums = vals.sum(0)[None, :]
        sumsq = np.einsum("ij,ij->j", vals, vals)[None, :]
        nnz = nonzero.sum(0)[None, :]
        vmax = vals.max(0, initial=-np.inf)[None, :]
    else:
        onehot = np.zeros((k, n_rows))
        onehot[local, np.arange(n_rows)] = 1.0
        sums = onehot @ vals
        sumsq = onehot @ (vals * vals)
        nnz = onehot @ nonzero
        vmax = np.stack([vals[local == j].max(0, initial=-np.inf) for j in range(k)])
    vmin = float(vals.min()) if vals.size else 0.0
    return sums, sumsq, nnz, vmax, vmin, vals.sum(1), nonzero.sum(1)


def block_moments(
    part: Any,
    start: int,
    stop: int,
    codes: np.ndarray | None,
    want_cells: bool,
    sink: tuple[Any, Any] | None = None,
) -> tuple[Moments, np.ndarray | None, np.ndarray | None]:
    """Pass-1 partial of rows ``[start, stop)``: moments, and per-cell values if wanted.

    With a ``sink`` (two arrays whose chunks are this task's rows), the per-cell values are
    written there instead of returned.
    """
    block: Block = load_block(part, start, stop)
    if codes is None:
        groups, local = np.zeros(1, dtype=np.int64), np.zeros(stop - start, dtype=np.int64)
    else:
        groups, local = np.unique(codes, return_inverse=True)
    k = groups.size
    kernel = _csr_moments if sp.issparse(block) else _dense_moments
    sums, sumsq, nnz, vmax, vmin, totals, ngenes = kernel(block, local, k)  # type: ignore[operator]
    moments = Moments(
        groups.astype(np.int64),
        np.bincount(local, minlength=k).astype(np.int64),
        np.asarray(sums, dtype=np.float64),
        np.asarray(sumsq, dtype=np.float64),
        np.rint(np.asarray(nnz, dtype=np.float64)).astype(np.int64),
        vmax,
        vmin,
    )
    if not want_cells:
        return moments, None, None
    totals = np.asarray(totals, dtype=np.float64)
    ngenes = np.asarray(ngenes).astype(np.int32)
    if sink is None:
        return moments, totals, ngenes
    sink[0][start:stop] = totals
    sink[1][start:stop] = ngenes
    return moments, None, None


def _merge(a: Moments, b: Moments) -> Moments:
    return a.merge(b)


# --- the pass -----------------------------------------------------------------------------------
def scan(
    source: MatrixSource,
    codes: np.ndarray | None = None,
    *,
    want_cells: bool = True,
    progress: bool = False,
    sink: tuple[Any, Any] | None = None,
) -> Scan:
    """One pass over the matrix: per-(group, gene) moments and per-cell values.

    Parameters
    ----------
    source
        The planned row blocks (:func:`~atlasloader.preprocess.source.matrix_source`).
    codes
        Group (batch) code of every cell, or None for one group.
    want_cells
        Compute per-cell total counts and non-zero genes.
    progress
        Show a progress bar.
    sink
        Where the tasks write the per-cell values (arrays for total counts and non-zero genes,
        chunked like ``source.blocks``): then nothing per cell reaches the client and the
        :class:`Scan` holds None for them. Without it they are returned (12 bytes per cell).
    """
    if source.n_obs == 0:
        msg = f"{source.where} has no cells (0 rows): there is nothing to preprocess"
        raise InvalidDataError(msg)
    parts = []
    cells = []
    for start, stop in source.blocks:
        block_codes = None if codes is None else codes[start:stop]
        task = dask.delayed(block_moments, nout=3, pure=False)(
            source.task_input(), start, stop, block_codes, want_cells, sink
        )
        parts.append(task[0])
        cells.append((task[1], task[2]))
    total = graph.tree_reduce(parts, _merge, "moments")
    if not want_cells or sink is not None:
        (moments,) = graph.compute(total, progress=progress, label="statistics")
        return Scan(moments, None, None)
    moments, per_cell = graph.compute(total, cells, progress=progress, label="statistics")
    totals = np.concatenate([t for t, _ in per_cell])
    ngenes = np.concatenate([g for _, g in per_cell])
    return Scan(moments, totals, ngenes)


def size_factors(total_counts: np.ndarray, where: str = "adata.X") -> np.ndarray:
    """``total_counts / median(total_counts[total_counts > 0])`` as float32.

    Raises
    ------
    InvalidDataError
        Every cell has zero counts.

    Examples
    --------
    >>> size_factors(np.array([100.0, 200.0, 0.0, 400.0])).tolist()
    [0.5, 1.0, 0.0, 2.0]
    """
    positive = total_counts[total_counts > 0]
    if positive.size == 0:
        raise no_counts_error(where)
    return (total_counts / np.median(positive)).astype(np.float32)


def no_counts_error(where: str) -> InvalidDataError:
    msg = f"every cell has zero total counts in {where}: size factors are undefined"
    return InvalidDataError(msg)


def _obs_index(adata: Any) -> pd.Index:
    return pd.Index(adata.obs_names)


def library_size(adata: Any, layer: str | None = None, *, progress: bool = False) -> pd.DataFrame:
    """Per-cell library sizes and size factors, computed chunk-wise with dask.

    Nothing is written; :func:`~atlasloader.preprocess.preprocess` persists the same columns.

    Parameters
    ----------
    adata
        A store opened with :func:`atlasloader.read_lazy`, or an in-memory AnnData.
    layer
        Layer holding the counts (None for ``X``).
    progress
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``adata.obs``: ``total_counts`` (float64, sum of the cell's values),
        ``n_genes_by_counts`` (int32, genes with a non-zero value) and ``size_factor``
        (float32, ``total_counts`` over the median of the positive ``total_counts``).

    Examples
    --------
    >>> adata = atlasloader.read_lazy("atlas.zarr")  # doctest: +SKIP
    >>> library_size(adata)["size_factor"].median()  # doctest: +SKIP
    1.0
    """
    source = matrix_source(adata, layer)
    result = scan(source, None, want_cells=True, progress=progress)
    assert result.total_counts is not None
    return pd.DataFrame(
        {
            TOTAL_COUNTS: result.total_counts,
            N_GENES_BY_COUNTS: result.n_genes_by_counts,
            SIZE_FACTOR: size_factors(result.total_counts, source.where),
        },
        index=_obs_index(adata),
    )


def gene_frame(moments: Moments, var_names: Any) -> pd.DataFrame:
    """``mean_counts``, ``var_counts`` and ``n_cells_by_counts`` from pooled moments."""
    pooled = moments.pooled()
    return pd.DataFrame(
        {
            MEAN_COUNTS: pooled.mean()[0],
            VAR_COUNTS: pooled.var()[0],
            N_CELLS_BY_COUNTS: pooled.nnz[0].astype(np.int64),
        },
        index=pd.Index(var_names),
    )


def gene_stats(adata: Any, layer: str | None = None, *, progress: bool = False) -> pd.DataFrame:
    """Per-gene mean, sample variance and detection count, computed chunk-wise with dask.

    Nothing is written; :func:`~atlasloader.preprocess.preprocess` persists the same columns.

    Parameters
    ----------
    adata
        A store opened with :func:`atlasloader.read_lazy`, or an in-memory AnnData.
    layer
        Layer holding the counts (None for ``X``).
    progress
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``adata.var``: ``mean_counts`` (float64), ``var_counts`` (float64, sample
        variance with ``ddof=1``) and ``n_cells_by_counts`` (int64, cells with a non-zero value).

    Examples
    --------
    >>> adata = atlasloader.read_lazy("atlas.zarr")  # doctest: +SKIP
    >>> gene_stats(adata).sort_values("mean_counts").tail(3)  # doctest: +SKIP
    """
    source = matrix_source(adata, layer)
    result = scan(source, None, want_cells=False, progress=progress)
    return gene_frame(result.moments, adata.var_names)
