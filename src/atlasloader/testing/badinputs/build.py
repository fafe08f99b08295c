"""Building inputs: small template stores copied per case, anndata-written stores, and edits
made through zarr (arrays rewritten, metadata consolidated again)."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .actions import _setup
from .case import N_CELLS, N_GENES, STORE

_TEMPLATES: dict[str, Path] = {}
_TEMPLATE_DIR: list[str] = []


def _template(kind: str) -> Path:
    """A small store of one kind, written once per process and copied for each case."""
    if kind not in _TEMPLATES:
        from ...data import make_atlas_store

        if not _TEMPLATE_DIR:
            _TEMPLATE_DIR.append(tempfile.mkdtemp(prefix="atlasloader-badinputs-"))
        path = Path(_TEMPLATE_DIR[0]) / f"{kind}.zarr"
        small: dict[str, Any] = {"n_cells": N_CELLS, "n_genes": N_GENES, "nnz_per_cell": 10}
        small |= {"n_batches": 3}
        small |= {"n_labels": 4, "chunk_rows": 64, "block_rows": 128, "seed": 0}
        if kind == "sharded":
            make_atlas_store(path, shard_rows=128, **small)
        elif kind == "chunked":
            make_atlas_store(path, **small)
        elif kind == "dense":
            make_atlas_store(path, dense=True, **small)
        elif kind == "v2":
            make_atlas_store(path, zarr_format=2, **small)
        elif kind == "query":
            make_atlas_store(path, **(small | {"n_batches": 5, "seed": 1}))
        elif kind == "registered":
            make_atlas_store(path, **small)
            _setup(path, batch_key="batch", labels_key="labels")
        else:  # pragma: no cover - a typo in the catalogue
            raise KeyError(kind)
        _TEMPLATES[kind] = path
    return _TEMPLATES[kind]


def _copy(kind: str, dst: str = STORE) -> Callable[[Path], None]:
    def build(base: Path) -> None:
        target = base / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(_template(kind), target)

    return build


def _then(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(base: Path) -> None:
        for step in steps:
            step(base)

    return build


def _anndata_store(
    obs: dict[str, Any] | None = None,
    X: Any = None,
    n_obs: int = N_CELLS,
    n_vars: int = N_GENES,
    obs_names: Sequence[str] | None = None,
) -> Callable[[Path], None]:
    """A store written by anndata's ``write_zarr`` (for obs columns atlasloader.data lacks)."""

    def build(base: Path) -> None:
        import anndata as ad
        import pandas as pd
        import scipy.sparse as sp

        rng = np.random.default_rng(0)
        x = X
        if x is None:
            x = sp.random(n_obs, n_vars, density=0.2, format="csr", rng=rng, dtype=np.float32)
            x.data[:] = rng.integers(1, 10, x.data.size)
        frame = pd.DataFrame(
            {"batch": pd.Categorical(rng.choice(["a", "b"], n_obs))} | dict(obs or {}),
            index=list(obs_names) if obs_names is not None else [f"c{i}" for i in range(n_obs)],
        )
        adata = ad.AnnData(X=x, obs=frame, var=pd.DataFrame(index=[f"g{i}" for i in range(n_vars)]))
        path = base / STORE
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata.write_zarr(path)

    return build


def _zarr_edit(edit: Callable[[Any], None], consolidate: bool = True) -> Callable[[Path], None]:
    """Change a store through zarr (arrays rewritten), then consolidate as anndata does."""

    def build(base: Path) -> None:
        import zarr

        root = zarr.open_group(str(base / STORE), mode="r+", use_consolidated=False)
        edit(root)
        if consolidate:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                zarr.consolidate_metadata(root.store)

    return build


def _replace_array(rel: str, values: np.ndarray, attrs: dict[str, Any] | None = None) -> Any:
    def edit(root: Any) -> None:
        parent, _, name = rel.rpartition("/")
        group = root[parent] if parent else root
        old = dict(group[name].attrs)
        del group[name]
        arr = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape)
        arr[...] = values
        arr.attrs.update(attrs if attrs is not None else old)

    return edit


def _set_values(rel: str, fn: Callable[[np.ndarray], np.ndarray]) -> Any:
    def edit(root: Any) -> None:
        arr = root[rel]
        arr[...] = fn(np.asarray(arr[...]))

    return edit
