"""Fixtures of the model tests: the seed tutorial's last-section AnnData on every backing."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import atlasloader

BACKINGS = ("memory", "zarr2", "zarr3")


def synthetic(seed: int = 0) -> ad.AnnData:
    """400 x 100 counts, two batches of 200 cells, three labels (``synthetic_iid``)."""
    try:
        from atlasloader.data import synthetic_iid
    except ImportError:  # pragma: no cover - only while atlasloader.data is being written
        rng = np.random.default_rng(seed)
        x = rng.negative_binomial(5, 0.3, size=(400, 100))
        x = (x * rng.binomial(1, 0.7, size=x.shape)).astype(np.float32)
        obs = pd.DataFrame(index=pd.Index(np.arange(400).astype(str)))
        obs["batch"] = pd.Categorical.from_codes(np.repeat([0, 1], 200), ["batch_0", "batch_1"])
        obs["labels"] = pd.Categorical.from_codes(
            rng.integers(0, 3, 400), ["label_0", "label_1", "label_2"]
        )
        var = pd.DataFrame(index=pd.Index([f"gene_{i}" for i in range(100)]))
        return ad.AnnData(x, obs=obs, var=var)
    return synthetic_iid(seed=seed)


def seed_setup_adata(seed: int = 0) -> ad.AnnData:
    """The seed's AnnData: a ``raw_counts`` layer, one categorical and one continuous covariate."""
    adata = synthetic(seed)
    adata.layers["raw_counts"] = adata.X.copy()
    adata.obs["my_categorical_covariate"] = ["A"] * 200 + ["B"] * 200
    adata.obs["my_continuous_covariate"] = np.random.default_rng(seed).integers(0, 100, 400)
    return adata


def write_store(adata: ad.AnnData, path: Path, zarr_format: int) -> Path:
    with warnings.catch_warnings(), ad.settings.override(zarr_write_format=zarr_format):
        warnings.simplefilter("ignore", UserWarning)
        adata.write_zarr(path)
    return path


@pytest.fixture
def on_backing(tmp_path: Path) -> Callable[..., Any]:
    """``on_backing(adata, kind)``: a copy of ``adata`` or the store it was written to, reopened."""
    counter = iter(range(1_000))

    def make(adata: ad.AnnData, kind: str) -> Any:
        if kind == "memory":
            return adata.copy()
        path = tmp_path / f"data-{next(counter)}-{kind}.zarr"
        write_store(adata, path, zarr_format=int(kind[-1]))
        return atlasloader.read_lazy(path)

    return make
