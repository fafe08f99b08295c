"""Fixtures of the loader tests: small AnnData objects and real Zarr stores written by anndata.

Every case is built from :func:`make_data` (deterministic), so a test can compare what the
loader yields with the exact rows of the source data. Stores are written with anndata's own
``write_zarr`` (format 2 or 3) and reopened with :func:`atlasloader.read_lazy`; dense ``X`` is
chunked by :data:`ROW_CHUNK` rows and CSR ``X`` by :data:`CSR_CHUNK` values so that batches
span several chunks.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr

import atlasloader
from atlasloader import AnnDataManager
from atlasloader.fields import CategoricalObsField, LayerField, NumericalObsField

N_OBS = 400
N_VARS = 30
ROW_CHUNK = 50
CSR_CHUNK = 500
BATCHES = ("batch_0", "batch_1", "batch_2")
SITES = ("site_a", "site_b")


@dataclass(frozen=True)
class Case:
    """Where ``X`` lives: ``backing`` in memory/zarr2/zarr3, ``fmt`` dense/csr, ``dtype``."""

    backing: str
    fmt: str
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.backing}-{self.fmt}-{self.dtype}"

    @property
    def on_disk(self) -> bool:
        return self.backing != "memory"


# Both Zarr formats x dense/CSR x float/integer, plus both in-memory layouts.
ALL_CASES = [
    Case("memory", "dense", "float32"),
    Case("memory", "csr", "float32"),
    *[
        Case(b, f, d)
        for b in ("zarr2", "zarr3")
        for f in ("dense", "csr")
        for d in ("float32", "int32")
    ],
]
# A smaller cross-section for the heavier tests: each backing, format and dtype at least once.
CORE_CASES = [
    Case("memory", "dense", "float32"),
    Case("zarr2", "dense", "int32"),
    Case("zarr3", "csr", "float32"),
]


def make_data(
    n_obs: int = N_OBS,
    n_vars: int = N_VARS,
    fmt: str = "dense",
    dtype: str = "float32",
    seed: int = 0,
) -> ad.AnnData:
    """Counts with a random ``batch``, a ``site`` and a ``cell_id`` column equal to the row."""
    rng = np.random.default_rng(seed)
    counts = rng.negative_binomial(5, 0.3, size=(n_obs, n_vars))
    counts = counts * rng.binomial(1, 0.3, size=counts.shape)
    x: Any = counts.astype(dtype)
    if fmt == "csr":
        x = sp.csr_matrix(x)
    obs = pd.DataFrame(index=pd.Index([f"cell_{i}" for i in range(n_obs)]))
    obs["batch"] = pd.Categorical.from_codes(rng.integers(0, len(BATCHES), n_obs), BATCHES)
    obs["site"] = pd.Categorical.from_codes(rng.integers(0, len(SITES), n_obs), SITES)
    obs["cell_id"] = np.arange(n_obs, dtype=np.int64)
    var = pd.DataFrame(index=pd.Index([f"gene_{j}" for j in range(n_vars)]))
    return ad.AnnData(x, obs=obs, var=var)


def write_store(adata: ad.AnnData, path: Path, zarr_format: int) -> Path:
    """``write_zarr`` in ``zarr_format``; X chunked by rows (dense) or values (CSR)."""
    with warnings.catch_warnings(), ad.settings.override(zarr_write_format=zarr_format):
        warnings.simplefilter("ignore", UserWarning)
        if sp.issparse(adata.X):
            adata.write_zarr(path)
            # anndata writes CSR arrays in one chunk at this size; rewrite X in several so
            # reads cross chunk boundaries, then refresh the consolidated metadata.
            group = zarr.open_group(path, mode="r+", use_consolidated=False)
            del group["X"]
            ad.io.write_elem(group, "X", adata.X, dataset_kwargs={"chunks": (CSR_CHUNK,)})
            zarr.consolidate_metadata(path)
        else:
            adata.write_zarr(path, chunks=(ROW_CHUNK, adata.n_vars))
    return path


def dense_x(adata: ad.AnnData) -> np.ndarray:
    x = adata.X
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def default_fields() -> list[Any]:
    return [
        LayerField("x", None, is_count_data=True),
        CategoricalObsField("batch", "batch"),
        NumericalObsField("cell_id", "cell_id"),
    ]


@dataclass
class Built:
    """A registered manager over ``data`` plus the in-memory ``reference`` it was made from."""

    case: Case
    manager: AnnDataManager
    data: Any
    reference: ad.AnnData
    path: Path | None

    @property
    def x(self) -> np.ndarray:
        return dense_x(self.reference)

    @property
    def batch_codes(self) -> np.ndarray:
        return self.reference.obs["batch"].cat.codes.to_numpy()

    @property
    def n_obs(self) -> int:
        return int(self.reference.n_obs)


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """A store of ``make_data(...)`` written once per session (tests register copies)."""
    root = tmp_path_factory.mktemp("templates")
    written: dict[tuple, Path] = {}

    def get(case: Case, n_obs: int, seed: int) -> Path:
        key = (case, n_obs, seed)
        if key not in written:
            reference = make_data(n_obs=n_obs, fmt=case.fmt, dtype=case.dtype, seed=seed)
            path = root / f"{case.id}-{n_obs}-{seed}.zarr"
            written[key] = write_store(reference, path, zarr_format=int(case.backing[-1]))
        return written[key]

    return get


@pytest.fixture
def build(tmp_path: Path, store_template: Callable[..., Path]) -> Callable[..., Built]:
    """``build(case, fields=None, n_obs=N_OBS)``: register the data of ``case``.

    Stores are fresh copies in ``tmp_path`` (registration writes to them; tests may damage
    them).
    """
    counter = iter(range(1_000))

    def make(
        case: Case, fields: Sequence[Any] | None = None, n_obs: int = N_OBS, seed: int = 0
    ) -> Built:
        reference = make_data(n_obs=n_obs, fmt=case.fmt, dtype=case.dtype, seed=seed)
        path: Path | None = None
        if case.on_disk:
            path = tmp_path / f"{case.id}-{next(counter)}.zarr"
            shutil.copytree(store_template(case, n_obs, seed), path)
            data: Any = atlasloader.read_lazy(path)
        else:
            data = reference.copy()
        manager = AnnDataManager(fields=list(fields) if fields else default_fields())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # float counts are fine here
            manager.register_fields(data)
        return Built(case, manager, data, reference, path)

    return make


def cell_ids(batches: Sequence[dict[str, Any]], key: str = "cell_id") -> np.ndarray:
    """Cell numbers of every batch, concatenated in the order yielded."""
    if not batches:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([b[key].numpy().reshape(-1) for b in batches]).astype(np.int64)
