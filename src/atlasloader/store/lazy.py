"""``LazyAnnData``: an AnnData-shaped view of a Zarr store that reads nothing large up front."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import zarr

from ..errors import (
    AtlasLoaderError,
    CorruptChunkError,
    InvalidDataError,
    InvalidTypeError,
    MissingKeyError,
    ShapeMismatchError,
)
from .elements import ColumnData, column_dask, column_to_pandas, encoding_type, read_elem
from .matrix import LazyMatrix
from .open import Mode, local_root, open_root, store_is_writable


class LazyFrame(Mapping[str, pd.Series]):
    """Columns of ``obs``/``var`` read one at a time on access (as pandas), or as dask arrays."""

    def __init__(self, parent: LazyAnnData, attr: str) -> None:
        self._parent = parent
        self._attr = attr

    @property
    def _group(self) -> zarr.Group:
        g = self._parent.group[self._attr]
        assert isinstance(g, zarr.Group)
        return g

    @property
    def columns(self) -> pd.Index:
        return pd.Index(list(self._group.attrs.get("column-order", [])))

    def keys(self) -> Any:  # type: ignore[override]
        return list(self.columns)

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __len__(self) -> int:
        return self._parent.n_obs if self._attr == "obs" else self._parent.n_vars

    def __contains__(self, key: object) -> bool:
        return key in self.columns

    def column(self, key: str) -> ColumnData:
        """The column as lazily read dask arrays (codes + categories for categoricals)."""
        if key not in self:
            msg = (
                f"{key!r} not found in adata.{self._attr}; available columns: {list(self.columns)}"
            )
            raise MissingKeyError(msg)
        try:
            col = column_dask(self._group, key, self._attr)
        except AtlasLoaderError:
            raise
        except (ValueError, TypeError, NotImplementedError) as e:
            # zarr refuses metadata it has no data type or codec for (object arrays with a
            # pickle codec among them): never decoded, named.
            msg = (
                f"adata.{self._attr}[{key!r}] ({self._attr}/{key} in the store) has array "
                f"metadata that cannot be read safely ({e}); atlasloader reads numeric, "
                "boolean, string and categorical columns only, never pickled objects: "
                "write the column again with anndata"
            )
            raise InvalidDataError(msg) from e
        n = len(self)
        if col.values.shape[0] != n:
            msg = (
                f"adata.{self._attr}[{key!r}] has {col.values.shape[0]} values but "
                f"{self._attr} has {n} rows ({self._attr}/{key} in the store): write the "
                "column again with one value per row"
            )
            raise ShapeMismatchError(msg)
        return col

    def __getitem__(self, key: str) -> pd.Series:  # type: ignore[override]
        index = self._parent.obs_names if self._attr == "obs" else self._parent.var_names
        s = column_to_pandas(self.column(key), index=index)
        s.name = key
        return s

    def __setitem__(self, key: str, value: Any) -> None:
        msg = (
            f"cannot assign adata.{self._attr}[{key!r}] on a store opened with read_lazy: "
            "stores are changed only through registration (fields) or atlasloader.preprocess; "
            "to add your own column, use adata.to_memory() or anndata.io.write_elem"
        )
        raise InvalidTypeError(msg)

    def to_pandas(self) -> pd.DataFrame:
        index = self._parent.obs_names if self._attr == "obs" else self._parent.var_names
        return pd.DataFrame({k: self[k].to_numpy() for k in self.columns}, index=index)

    def __repr__(self) -> str:
        return f"<LazyFrame adata.{self._attr}: {len(self)} rows, columns {list(self.columns)}>"


class LazyMatrices(Mapping[str, Any]):
    """``layers`` / ``obsm``: entries opened lazily as :class:`LazyMatrix` (or frames)."""

    def __init__(self, parent: LazyAnnData, attr: str) -> None:
        self._parent = parent
        self._attr = attr

    @property
    def _group(self) -> zarr.Group | None:
        g = self._parent.group.get(self._attr)
        return g if isinstance(g, zarr.Group) else None

    def keys(self) -> Any:  # type: ignore[override]
        g = self._group
        return [] if g is None else sorted(g.keys())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        g = self._group
        return g is not None and isinstance(key, str) and key in g

    def node(self, key: str) -> zarr.Array | zarr.Group:
        g = self._group
        if g is None or key not in g:
            msg = f"{key!r} not found in adata.{self._attr}; available: {self.keys()}"
            raise MissingKeyError(msg)
        return g[key]

    def __getitem__(self, key: str) -> Any:
        node = self.node(key)
        if encoding_type(node) == "dataframe":
            return read_elem(node)
        return LazyMatrix(node, where=f"adata.{self._attr}['{key}']")

    def __setitem__(self, key: str, value: Any) -> None:
        msg = (
            f"cannot assign adata.{self._attr}[{key!r}] on a store opened with read_lazy; "
            "use adata.to_memory() to edit in memory"
        )
        raise InvalidTypeError(msg)


class LazyAnnData:
    """An AnnData Zarr store opened without reading ``X`` or any obs column.

    Use :func:`read_lazy` to create one. It answers what registration needs (shape, column
    names, var names, small samples) from metadata, and gives dask arrays for whole-column
    passes. ``to_memory()`` returns an ordinary :class:`anndata.AnnData`.
    """

    is_view = False
    isbacked = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: Mode = "r",
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.path = str(path)
        self.mode: Mode = mode
        self.storage_options = storage_options
        self.group = open_root(path, mode=mode, storage_options=storage_options)
        self.obs = LazyFrame(self, "obs")
        self.layers = LazyMatrices(self, "layers")
        self.obsm = LazyMatrices(self, "obsm")

    # --- identity / shape ---------------------------------------------------------------------
    @cached_property
    def _shape(self) -> tuple[int, int]:
        obs = self.group["obs"]
        var = self.group["var"]
        n_obs = int(obs[obs.attrs.get("_index", "_index")].shape[0])  # type: ignore[index,union-attr]
        n_vars = int(var[var.attrs.get("_index", "_index")].shape[0])  # type: ignore[index,union-attr]
        return n_obs, n_vars

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def n_obs(self) -> int:
        return self._shape[0]

    @property
    def n_vars(self) -> int:
        return self._shape[1]

    @property
    def writable(self) -> bool:
        return store_is_writable(self.group)

    @property
    def local_path(self) -> Any:
        return local_root(self.group)

    # --- small, cached elements ---------------------------------------------------------------
    @cached_property
    def var(self) -> pd.DataFrame:
        return read_elem(self.group["var"])

    @property
    def var_names(self) -> pd.Index:
        return self.var.index

    @cached_property
    def obs_names(self) -> pd.Index:
        obs = self.group["obs"]
        idx = obs[obs.attrs.get("_index", "_index")]  # type: ignore[index]
        try:
            names = np.asarray(read_elem(idx))
        except MemoryError:
            raise
        except Exception as e:  # codecs raise many unrelated types for a corrupt chunk
            msg = (
                f"cannot read the obs names ({idx.path!r}) of the store {self.path!r}: "
                f"{type(e).__name__}: {e}. The chunk is missing or corrupt; re-create the store "
                "or restore that file"
            )
            raise CorruptChunkError(msg) from e
        return pd.Index(names.astype(object))

    @cached_property
    def uns(self) -> dict[str, Any]:
        g = self.group.get("uns")
        return {} if g is None else dict(read_elem(g))

    @property
    def X(self) -> LazyMatrix | None:
        return LazyMatrix(self.group["X"], "adata.X") if "X" in self.group else None

    # --- lifecycle ----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-open the root after atlasloader wrote to the store (new columns, attrs)."""
        self.group = open_root(self.path, mode=self.mode, storage_options=self.storage_options)
        for name in ("uns", "var", "obs_names"):
            self.__dict__.pop(name, None)

    def reopen(self, mode: Mode) -> LazyAnnData:
        return LazyAnnData(self.path, mode=mode, storage_options=self.storage_options)

    def to_memory(self) -> Any:
        """Read the whole store into an :class:`anndata.AnnData` (small stores only)."""
        import anndata as ad

        return ad.io.read_zarr(self.group.store) if hasattr(ad, "io") else ad.read_zarr(self.path)

    def __repr__(self) -> str:
        lines = [
            f"AnnData object with n_obs × n_vars = {self.n_obs} × {self.n_vars} "
            f"backed at {self.path!r}"
        ]
        sections = [
            ("obs", list(self.obs.columns)),
            ("var", list(self.var.columns)),
            ("uns", list(self.group["uns"].keys()) if "uns" in self.group else []),  # type: ignore[union-attr]
            ("obsm", self.obsm.keys()),
            ("layers", self.layers.keys()),
        ]
        for name, keys in sections:
            if keys:
                lines.append(f"    {name}: " + ", ".join(f"'{k}'" for k in keys))
        return "\n".join(lines)


def read_lazy(
    path: str | os.PathLike[str],
    mode: Mode = "r+",
    storage_options: dict[str, Any] | None = None,
) -> LazyAnnData:
    """Open an AnnData Zarr store (format 2 or 3, dense or CSR ``X``) lazily.

    Nothing large is read: ``X`` and obs columns stay on disk until a field or the loader
    asks for them. The store is opened read-write by default so registration can persist
    encodings; pass ``mode="r"`` for a read-only store (registration then needs an earlier
    persisted registration, or raises :class:`~atlasloader.errors.ReadOnlyStoreError`).

    Examples
    --------
    >>> adata = atlasloader.read_lazy("atlas.zarr")  # doctest: +SKIP
    >>> adata.obs["batch"][:5]  # doctest: +SKIP
    """
    local = "://" not in str(path) and os.path.exists(path)
    if mode == "r+" and local and not os.access(path, os.W_OK):
        mode = "r"
    return LazyAnnData(path, mode=mode, storage_options=storage_options)
