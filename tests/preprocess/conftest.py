"""Fixtures of the preprocessing tests: count data, real Zarr stores, and numpy references.

Stores are written with anndata's own ``write_zarr`` (Zarr format 2 or 3, dense or CSR ``X``)
or :func:`atlasloader.data.make_atlas_store` (the loader's sharded layout) and reopened with
:func:`atlasloader.read_lazy`. ``small_tasks`` shrinks the row blocks so that even small data
runs as many dask tasks (partial results combined across blocks and batches).

The references recompute everything from the dense in-memory matrix with plain numpy: the
LOESS point by point with ``numpy.linalg.lstsq``, Seurat v3's clipping and ranking directly.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import atlasloader

N_OBS = 600
N_VARS = 120
PLANTED = np.array([3, 17, 40, 41, 77, 90, 101, 115])


def counts(
    n_obs: int = N_OBS,
    n_vars: int = N_VARS,
    seed: int = 0,
    n_batches: int = 3,
    planted: np.ndarray | None = PLANTED,
    sorted_batches: bool = False,
    outliers: int = 0,
    theta: float | None = None,
) -> ad.AnnData:
    """Negative-binomial counts with a ``batch`` column; ``planted`` genes get extra variance
    (a random tenth of the cells express them 8x), ``outliers`` single huge values. ``theta``
    fixes every gene's dispersion (large: nearly Poisson), else it varies by gene."""
    rng = np.random.default_rng(seed)
    mu = rng.gamma(0.6, 2.0, n_vars) + 0.05
    theta_g = rng.gamma(3.0, 1.0, n_vars) if theta is None else np.full(n_vars, theta)
    lam = rng.gamma(theta_g, mu / theta_g, size=(n_obs, n_vars))
    if planted is not None:
        planted = planted[planted < n_vars]
        burst = rng.random((n_obs, planted.size)) < 0.1
        lam[:, planted] *= np.where(burst, 8.0, 1.0)
    x = rng.poisson(lam).astype(np.float32)
    for _ in range(outliers):
        x[rng.integers(n_obs), rng.integers(n_vars)] += 300
    codes = np.sort(rng.integers(0, n_batches, n_obs)) if sorted_batches else None
    if codes is None:
        codes = rng.integers(0, n_batches, n_obs)
    obs = pd.DataFrame(
        {"batch": pd.Categorical.from_codes(codes, [f"b{i}" for i in range(n_batches)])},
        index=pd.Index([f"cell_{i}" for i in range(n_obs)]),
    )
    var = pd.DataFrame(index=pd.Index([f"gene_{i}" for i in range(n_vars)]))
    return ad.AnnData(x, obs=obs, var=var)


def as_format(adata: ad.AnnData, fmt: str) -> ad.AnnData:
    """A copy with ``X`` dense or CSR."""
    out = adata.copy()
    x = np.asarray(out.X.toarray() if sp.issparse(out.X) else out.X)
    out.X = sp.csr_matrix(x) if fmt == "csr" else x
    return out


def write(adata: ad.AnnData, path: Path, zarr_format: int = 3, chunk_rows: int = 64) -> Path:
    """``write_zarr`` with row-chunked dense ``X`` (so blocks span several chunks)."""
    chunks = None if sp.issparse(adata.X) else (chunk_rows, adata.n_vars)
    with warnings.catch_warnings(), ad.settings.override(zarr_write_format=zarr_format):
        warnings.simplefilter("ignore", UserWarning)
        adata.write_zarr(path, chunks=chunks)
    return path


@pytest.fixture
def small_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """About 1,500 values per task: the test data runs as tens of tasks."""
    monkeypatch.setattr("atlasloader.preprocess.source.TASK_VALUES", 1500)


@pytest.fixture(params=["memory-dense", "memory-csr", "zarr2-dense", "zarr3-csr", "zarr3-dense"])
def backed(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """``(data, reference AnnData)``: the counts in memory or in a store, dense or CSR."""
    kind, fmt = request.param.split("-")
    ref = as_format(counts(), fmt)
    if kind == "memory":
        return ref.copy(), ref
    path = write(ref, tmp_path / f"{request.param}.zarr", zarr_format=int(kind[-1]))
    return atlasloader.read_lazy(path), ref


def dense(adata: ad.AnnData, layer: str | None = None) -> np.ndarray:
    x = adata.X if layer is None else adata.layers[layer]
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


# --- references ----------------------------------------------------------------------------------
def loess_reference(x: np.ndarray, y: np.ndarray, span: float) -> np.ndarray:
    """LOESS by the book: for each point, weighted least squares over its q nearest points."""
    n = x.size
    q = n if span >= 1 else int(np.floor(n * span))
    out = np.empty(n)
    for i in range(n):
        d = np.abs(x - x[i])
        h = np.sort(d)[q - 1] * (span if span > 1 else 1.0)
        w = np.clip(1 - (d / h) ** 3, 0, None) ** 3 if h > 0 else (d == 0).astype(float)
        design = np.stack([np.ones(n), x - x[i], (x - x[i]) ** 2], axis=1)
        sw = np.sqrt(w)
        coef = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)[0]
        out[i] = coef[0]
    return out


def seurat_v3_reference(
    x: np.ndarray, batches: np.ndarray | None, n_top: int, span: float = 0.3
) -> pd.DataFrame:
    """Seurat v3 highly-variable genes straight from the dense matrix."""
    labels = np.zeros(x.shape[0], int) if batches is None else np.asarray(batches)
    norm = []
    for b in pd.unique(labels):
        xb = x[labels == b]
        n = xb.shape[0]
        mean, var = xb.mean(0), xb.var(0, ddof=1)
        ok = var > 0
        std = np.ones_like(mean)
        std[ok] = np.sqrt(10 ** loess_reference(np.log10(mean[ok]), np.log10(var[ok]), span))
        clipped = np.minimum(xb, mean + std * np.sqrt(n))
        norm.append(((clipped - mean) ** 2).sum(0) / ((n - 1) * std**2))
    norm_vars = np.stack(norm)
    ranks = np.argsort(np.argsort(-norm_vars, axis=1, kind="stable"), axis=1).astype(float)
    nbatches = (ranks < n_top).sum(0)
    ranks[ranks >= n_top] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(ranks, axis=0)
    df = pd.DataFrame(
        {"highly_variable_rank": median, "highly_variable_nbatches": nbatches},
        index=pd.RangeIndex(x.shape[1]),
    )
    df["variances_norm"] = norm_vars.mean(0)
    order = df.sort_values(
        ["highly_variable_rank", "highly_variable_nbatches"],
        ascending=[True, False],
        na_position="last",
        kind="stable",
    ).index
    df["highly_variable"] = False
    df.loc[order[:n_top], "highly_variable"] = True
    return df
