"""One interface over the two things fields register against: in-memory AnnData and a store.

Fields ask a :class:`Backing` for columns, matrix samples and shapes, and hand it the encoded
columns to store. The in-memory backing behaves exactly as scvi-tools (new columns on
``adata.obs``/``adata.obsm``); the store backing reads through dask and writes through
:mod:`atlasloader.store.write`, never materialising ``X``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InvalidTypeError, MissingKeyError, ViewError
from .elements import ColumnData, read_elem
from .lazy import LazyAnnData
from .matrix import LazyMatrix
from .write import (
    finish_writes,
    is_consolidated,
    require_writable,
    write_obs_column,
    write_obsm_array,
)

if TYPE_CHECKING:
    import anndata as ad

ROW_ATTRS = ("obs", "obsm")


def describe(attr_name: str, key: str | None) -> str:
    return f"adata.{attr_name}" if key is None else f"adata.{attr_name}['{key}']"


class Backing(ABC):
    """What a field may ask of the data it registers against."""

    kind: str

    @property
    @abstractmethod
    def n_obs(self) -> int: ...

    @property
    @abstractmethod
    def n_vars(self) -> int: ...

    @property
    @abstractmethod
    def var_names(self) -> np.ndarray: ...

    @abstractmethod
    def keys(self, attr_name: str) -> list[str]: ...

    def has(self, attr_name: str, key: str | None) -> bool:
        if attr_name == "X":
            return key is None and self._has_x()
        return key in self.keys(attr_name)

    @abstractmethod
    def _has_x(self) -> bool: ...

    def require(self, attr_name: str, key: str | None) -> None:
        if not self.has(attr_name, key):
            if attr_name == "X":
                msg = (
                    "adata.X not found: the data has no X; pass layer=... naming the layer "
                    f"that holds the counts (layers: {self.keys('layers')})"
                )
                raise MissingKeyError(msg)
            avail = self.keys(attr_name)
            msg = (
                f"{key} not found in adata.{attr_name}. Available keys: {avail}; "
                "pass one of them (keys are column names, never paths)"
            )
            raise MissingKeyError(msg)

    @abstractmethod
    def matrix_sample(self, attr_name: str, key: str | None) -> Any:
        """A small sample of rows of X/a layer/an obsm matrix (dense or sparse)."""

    @abstractmethod
    def matrix_shape(self, attr_name: str, key: str | None) -> tuple[int, ...]: ...

    @abstractmethod
    def frame_columns(self, attr_name: str, key: str) -> list[str] | None:
        """Column names when ``adata.<attr_name>[key]`` is a DataFrame, else None."""

    @abstractmethod
    def uns_value(self, key: str) -> Any: ...

    @abstractmethod
    def write_obs(self, key: str, values: Any) -> None: ...

    @abstractmethod
    def write_obsm(self, key: str, values: Any, columns: list[str]) -> None: ...

    def flush(self) -> None:  # noqa: B027 - a no-op for backings that write immediately
        """Make every write of this registration durable and visible."""


class MemoryBacking(Backing):
    """An in-memory :class:`anndata.AnnData` (the seed's behaviour)."""

    kind = "memory"

    def __init__(self, adata: ad.AnnData) -> None:
        if adata.is_view:
            msg = (
                "Received a view of an AnnData object; make a copy first: "
                "`adata = adata.copy()` (views cannot hold the encoded columns)"
            )
            raise ViewError(msg)
        self.adata = adata

    @property
    def n_obs(self) -> int:
        return int(self.adata.n_obs)

    @property
    def n_vars(self) -> int:
        return int(self.adata.n_vars)

    @property
    def var_names(self) -> np.ndarray:
        return np.asarray(self.adata.var_names)

    def keys(self, attr_name: str) -> list[str]:
        return list(getattr(self.adata, attr_name).keys())

    def _has_x(self) -> bool:
        return self.adata.X is not None

    def series(self, attr_name: str, key: str) -> pd.Series:
        self.require(attr_name, key)
        return getattr(self.adata, attr_name)[key]

    def _matrix(self, attr_name: str, key: str | None) -> Any:
        self.require(attr_name, key)
        return self.adata.X if attr_name == "X" else getattr(self.adata, attr_name)[key]

    def matrix_sample(self, attr_name: str, key: str | None) -> Any:
        m = self._matrix(attr_name, key)
        return m.to_numpy() if isinstance(m, pd.DataFrame) else m

    def matrix_shape(self, attr_name: str, key: str | None) -> tuple[int, ...]:
        return tuple(self._matrix(attr_name, key).shape)

    def frame_columns(self, attr_name: str, key: str) -> list[str] | None:
        m = self._matrix(attr_name, key)
        return list(m.columns) if isinstance(m, pd.DataFrame) else None

    def uns_value(self, key: str) -> Any:
        self.require("uns", key)
        return self.adata.uns[key]

    def write_obs(self, key: str, values: Any) -> None:
        self.adata.obs[key] = values

    def write_obsm(self, key: str, values: Any, columns: list[str]) -> None:
        self.adata.obsm[key] = values


class ZarrBacking(Backing):
    """A store opened with :func:`~atlasloader.read_lazy`; reads lazily, writes atomically."""

    kind = "zarr"

    def __init__(self, adata: LazyAnnData) -> None:
        self.adata = adata
        self._dirty = False
        # Remembered before any write: on Zarr v3 writing root attrs drops consolidated metadata.
        self._consolidated = adata.writable and is_consolidated(adata.group)
        # A registration under way holds its rollback space in staging: flushes keep it.
        self.holds_reserve = False

    @property
    def n_obs(self) -> int:
        return self.adata.n_obs

    @property
    def n_vars(self) -> int:
        return self.adata.n_vars

    @property
    def var_names(self) -> np.ndarray:
        return np.asarray(self.adata.var_names)

    def keys(self, attr_name: str) -> list[str]:
        if attr_name == "obs":
            return list(self.adata.obs.columns)
        if attr_name == "var":
            return list(self.adata.var.columns)
        if attr_name in ("obsm", "layers"):
            return list(getattr(self.adata, attr_name).keys())
        if attr_name == "uns":
            g = self.adata.group.get("uns")
            return [] if g is None else list(g.keys())  # type: ignore[union-attr]
        return []

    def _has_x(self) -> bool:
        return "X" in self.adata.group

    def column(self, attr_name: str, key: str) -> ColumnData:
        self.require(attr_name, key)
        if attr_name != "obs":
            raise InvalidTypeError(f"only obs columns are read lazily, not adata.{attr_name}")
        return self.adata.obs.column(key)

    def matrix(self, attr_name: str, key: str | None) -> LazyMatrix:
        self.require(attr_name, key)
        if attr_name == "X":
            x = self.adata.X
            assert x is not None
            return x
        m = getattr(self.adata, attr_name)[key]
        if not isinstance(m, LazyMatrix):
            raise InvalidTypeError(f"{describe(attr_name, key)} is not a matrix")
        return m

    def matrix_sample(self, attr_name: str, key: str | None) -> Any:
        if attr_name == "obsm" and self.frame_columns(attr_name, key or "") is not None:
            return getattr(self.adata, attr_name)[key].to_numpy()
        return self.matrix(attr_name, key).sample_rows()

    def matrix_shape(self, attr_name: str, key: str | None) -> tuple[int, ...]:
        if attr_name == "obsm" and self.frame_columns(attr_name, key or "") is not None:
            return (self.n_obs, len(self.frame_columns(attr_name, key or "") or []))
        return self.matrix(attr_name, key).shape

    def frame_columns(self, attr_name: str, key: str) -> list[str] | None:
        self.require(attr_name, key)
        node = getattr(self.adata, attr_name).node(key)
        if node.attrs.get("encoding-type") == "dataframe":
            return list(node.attrs.get("column-order", []))
        return None

    def uns_value(self, key: str) -> Any:
        self.require("uns", key)
        return read_elem(self.adata.group["uns"][key])  # type: ignore[index]

    def _writable(self, what: str) -> None:
        require_writable(self.adata.group, what, self.adata.path)

    def write_obs(self, key: str, values: Any) -> None:
        self._writable(f"adata.obs['{key}']")
        write_obs_column(self.adata.group, key, _as_dask(values), {})
        self._dirty = True
        # A field may be used on its own (``field.register_field(store)``, as in the seed
        # tutorial): publish now so anndata's reader (consolidated metadata) sees the column.
        self.flush()

    def write_obsm(self, key: str, values: Any, columns: list[str]) -> None:
        self._writable(f"adata.obsm['{key}']")
        write_obsm_array(self.adata.group, key, _as_dask(values), {"columns": list(columns)})
        self._dirty = True
        self.flush()

    def mark_dirty(self) -> None:
        """Record that something was written outside write_obs/write_obsm (attrs)."""
        self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            finish_writes(self.adata.group, self._consolidated or None, self.holds_reserve)
            self.adata.refresh()
            self._dirty = False


def _as_dask(values: Any) -> da.Array:
    if isinstance(values, da.Array):
        return values
    if isinstance(values, pd.DataFrame):
        values = values.to_numpy()
    if sp.issparse(values):
        values = values.toarray()
    return da.from_array(np.asarray(values))


def backing_of(adata: Any) -> Backing:
    """The backing for an AnnData or LazyAnnData (cached on lazy objects so writes batch)."""
    if isinstance(adata, LazyAnnData):
        b = adata.__dict__.get("_backing")
        if b is None:
            b = ZarrBacking(adata)
            adata.__dict__["_backing"] = b
        return b
    try:
        import anndata as ad
    except ImportError:  # pragma: no cover
        ad = None  # type: ignore[assignment]
    if ad is not None and isinstance(adata, ad.AnnData):
        return MemoryBacking(adata)
    msg = (
        f"expected an anndata.AnnData or a store opened with atlasloader.read_lazy, "
        f"got {type(adata).__name__}"
    )
    raise InvalidTypeError(msg)
