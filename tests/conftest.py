"""Shared fixtures: the seed tutorial's synthetic data on both backings, and table rendering.

``backing`` runs a test three times: on the in-memory AnnData, and on the same data written
with ``write_zarr`` (Zarr format 2 and 3) and reopened with :func:`atlasloader.read_lazy`.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest

BACKINGS = ("memory", "zarr2", "zarr3")
STORE_BACKINGS = ("zarr2", "zarr3")


# --- data ----------------------------------------------------------------------------------------
def _fallback_synthetic_iid(seed: int = 0, n_batches: int = 2, batch_size: int = 200) -> ad.AnnData:
    """The seed's ``synthetic_iid`` shape, for when ``atlasloader.data`` is not there yet."""
    rng = np.random.default_rng(seed)
    n_obs, n_genes, n_proteins = batch_size * n_batches, 100, 100
    x = rng.negative_binomial(5, 0.3, size=(n_obs, n_genes))
    x = (x * rng.binomial(1, 0.7, size=x.shape)).astype(np.float32)
    obs = pd.DataFrame(index=pd.Index(np.arange(n_obs).astype(str)))
    obs["batch"] = pd.Categorical.from_codes(
        np.repeat(np.arange(n_batches), batch_size), [f"batch_{i}" for i in range(n_batches)]
    )
    obs["labels"] = pd.Categorical.from_codes(
        rng.integers(0, 3, size=n_obs), [f"label_{i}" for i in range(3)]
    )
    var = pd.DataFrame(index=pd.Index([f"gene_{i}" for i in range(n_genes)]))
    adata = ad.AnnData(x, obs=obs, var=var)
    adata.obsm["protein_expression"] = rng.negative_binomial(5, 0.3, size=(n_obs, n_proteins))
    adata.uns["protein_names"] = np.array([f"protein_{i}" for i in range(n_proteins)])
    return adata


def make_seed_adata(seed: int = 0, n_batches: int = 2) -> ad.AnnData:
    """400 (200 per batch) x 100 counts like scvi-tools' ``synthetic_iid``."""
    try:
        from atlasloader.data import synthetic_iid
    except ImportError:
        return _fallback_synthetic_iid(seed=seed, n_batches=n_batches)
    return synthetic_iid(seed=seed, n_batches=n_batches)


@pytest.fixture
def seed_adata() -> ad.AnnData:
    return make_seed_adata(seed=0)


@pytest.fixture
def seed_factory() -> Callable[..., ad.AnnData]:
    """``seed_factory(seed=, n_batches=)``: more synthetic_iid-like data (e.g. a query)."""
    return make_seed_adata


def write_store(adata: ad.AnnData, path: Path, zarr_format: int) -> Path:
    """``adata.write_zarr`` in the given Zarr format (anndata's own writer)."""
    with warnings.catch_warnings(), ad.settings.override(zarr_write_format=zarr_format):
        warnings.simplefilter("ignore", UserWarning)
        adata.write_zarr(path)
    return path


@pytest.fixture(scope="session")
def _written_stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[Any, Path]]:
    """Stores written once per session by content, copied for each test (copying is ~50x
    faster than anndata's writer, and every test still gets its own store)."""
    return tmp_path_factory.mktemp("written"), {}


@pytest.fixture
def to_backing(tmp_path: Path, _written_stores: tuple[Path, dict[Any, Path]]) -> Callable[..., Any]:
    """``to_backing(adata, kind, name=...)``: the AnnData itself (a copy) or a reopened store."""
    counter = iter(range(10_000))
    cache_dir, written = _written_stores

    def make(adata: ad.AnnData, kind: str, name: str | None = None, mode: str = "r+") -> Any:
        if kind == "memory":
            return adata.copy()
        from atlasloader import read_lazy

        fmt = {"zarr2": 2, "zarr3": 3}[kind]
        key = (hashlib.sha1(pickle.dumps(adata)).hexdigest(), fmt)
        if key not in written:
            written[key] = write_store(adata, cache_dir / f"{len(written)}-{kind}.zarr", fmt)
        path = tmp_path / f"{name or 'store'}-{next(counter)}-{kind}.zarr"
        shutil.copytree(written[key], path)
        return read_lazy(path, mode=mode)

    return make


@pytest.fixture(params=BACKINGS)
def backing_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=STORE_BACKINGS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def backing(seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]) -> Any:
    """The seed data in memory, or written to a Zarr store (format 2 or 3) and read lazily."""
    return to_backing(seed_adata, backing_kind, name="seed")


# --- registry tables -----------------------------------------------------------------------------
@pytest.fixture
def printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[[Callable[[], Any]], str]:
    """``printed(fn)``: what ``fn()`` prints (rich output, wide terminal, no colour codes)."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERM", "dumb")

    def run(fn: Callable[[], Any]) -> str:
        capsys.readouterr()
        fn()
        return re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)

    return run


@pytest.fixture
def render(printed: Callable[[Callable[[], Any]], str]) -> Callable[..., str]:
    """``render(manager)``: what ``manager.view_registry()`` prints, as plain text."""

    def run(manager: Any, **kwargs: Any) -> str:
        return printed(lambda: manager.view_registry(**kwargs))

    return run


def table_rows(text: str) -> list[list[str]]:
    """Cell texts of every body (``│``) and header (``┃``) row of rich tables in ``text``."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        for sep in ("│", "┃"):
            if line.startswith(sep) and line.endswith(sep):
                rows.append([c.strip() for c in line[1:-1].split(sep)])
    return rows


@pytest.fixture
def rows_of() -> Callable[[str], list[list[str]]]:
    return table_rows


# --- dask.distributed ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def dask_cluster() -> Any:
    """A real ``dask.distributed`` LocalCluster with two worker *processes* (one thread each).

    Session-scoped: starting one costs seconds. Tests use it with ``distributed_client``.
    """
    from distributed import LocalCluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit="2GiB",
            silence_logs=logging.ERROR,
        )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def distributed_client(dask_cluster: Any) -> Any:
    """A Client on :func:`dask_cluster`, set as dask's default scheduler for the test."""
    from distributed import Client

    with Client(dask_cluster, set_as_default=True) as client:
        yield client
