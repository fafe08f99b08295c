"""Read and write anndata-encoded elements of a Zarr store, lazily where they are large.

Small elements (var, uns, categories) go through anndata's own ``read_elem``; obs columns and
obsm arrays become dask arrays over the Zarr chunks, so nothing large is read until computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import zarr
from dask.array.core import getter as dask_getter
from dask.base import tokenize

from ..errors import CorruptChunkError, InvalidDataError, MissingKeyError

try:  # anndata >= 0.11
    from anndata.io import read_elem, write_elem
except ImportError:  # pragma: no cover
    from anndata.experimental import read_elem, write_elem  # type: ignore[no-redef]

__all__ = ["ColumnData", "column_dask", "encoding_type", "read_elem", "write_elem"]

# Rows per dask task for whole-column passes: big enough that graph overhead is negligible.
COLUMN_TASK_ROWS = 4_194_304


def encoding_type(node: zarr.Array | zarr.Group) -> str:
    enc = node.attrs.get("encoding-type")
    if enc is None:
        return "array" if isinstance(node, zarr.Array) else "dict"
    return str(enc)


@dataclass(frozen=True)
class ColumnData:
    """A lazily read 1-D column: values, or codes with their categories for categoricals."""

    values: da.Array
    categories: np.ndarray | None = None
    ordered: bool = False
    mask: da.Array | None = None  # True where a nullable integer/boolean is missing

    @property
    def is_categorical(self) -> bool:
        return self.categories is not None

    def __len__(self) -> int:
        return int(self.values.shape[0])


def _dask(arr: zarr.Array, rows: int = COLUMN_TASK_ROWS) -> da.Array:
    # Align tasks to whole stored chunks so no chunk is decoded twice.
    chunk = arr.chunks[0] if arr.chunks else arr.shape[0]
    step = max(chunk, (rows // max(chunk, 1)) * chunk) if chunk else rows
    chunks = (step, *arr.shape[1:])
    name = "from-zarr-" + tokenize(arr, chunks)  # as da.from_zarr
    return da.from_array(arr, chunks=chunks, name=name, getitem=_read_block)


def _read_block(a: Any, b: Any, asarray: bool = True, lock: Any = None) -> Any:
    """dask's getter, with undecodable chunks reported as the column they belong to."""
    try:
        return dask_getter(a, b, asarray=asarray, lock=lock)
    except MemoryError:
        raise
    except Exception as e:  # codecs raise many unrelated types for a corrupt chunk
        msg = (
            f"cannot read {getattr(a, 'path', 'an array')!r} (rows {b}) of the store "
            f"{getattr(a, 'store', '')}: {type(e).__name__}: {e}. The chunk is missing or "
            "corrupt; re-create the store or restore that file"
        )
        raise CorruptChunkError(msg) from e


def column_dask(group: zarr.Group, key: str, where: str = "obs") -> ColumnData:
    """A column of a dataframe group (``obs``/``var``) as dask arrays."""
    if key not in group:
        msg = f"{key!r} not found in adata.{where}; available: {list_columns(group)}"
        raise MissingKeyError(msg)
    node = group[key]
    enc = encoding_type(node)
    if enc == "categorical":
        assert isinstance(node, zarr.Group)
        try:
            cats = np.asarray(read_elem(node["categories"]))
        except MemoryError:
            raise
        except Exception as e:  # codecs raise many unrelated types for a corrupt chunk
            msg = (
                f"cannot read the categories of adata.{where}[{key!r}] "
                f"({node['categories'].path!r}) of the store {node.store}: "
                f"{type(e).__name__}: {e}. The chunk is missing or corrupt; re-create the "
                "store or restore that file"
            )
            raise CorruptChunkError(msg) from e
        if cats.dtype.kind in "UT" or str(cats.dtype).startswith("StringDType"):
            cats = cats.astype(object)
        if not pd.Index(cats).is_unique:
            dup = pd.Index(cats)[pd.Index(cats).duplicated()].unique().tolist()[:5]
            msg = (
                f"adata.{where}[{key!r}] lists some categories more than once ({dup}) in "
                f"{node['categories'].path!r}: the categories chunk is missing or the column "
                "was written wrongly; restore that file or write the column again"
            )
            raise InvalidDataError(msg)
        return ColumnData(_dask(node["codes"]), cats, bool(node.attrs.get("ordered", False)))
    if enc in ("nullable-integer", "nullable-boolean"):
        assert isinstance(node, zarr.Group)
        return ColumnData(_dask(node["values"]), mask=_dask(node["mask"]))
    if isinstance(node, zarr.Array):
        return ColumnData(_dask(node))
    msg = f"adata.{where}[{key!r}] has encoding {enc!r}, which is not a 1-D column"
    raise InvalidDataError(msg)


def list_columns(group: zarr.Group) -> list[str]:
    order = list(group.attrs.get("column-order", []))
    return order


def to_object_strings(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "UT" or str(values.dtype).startswith("StringDType"):
        return values.astype(object)
    return values


def column_to_pandas(col: ColumnData, index: pd.Index | None = None) -> pd.Series:
    """Materialise a column (used for small columns and for user-facing ``obs[key]``)."""
    values = col.values.compute()
    if col.categories is not None:
        data: Any = pd.Categorical.from_codes(
            values, categories=col.categories, ordered=col.ordered
        )
    elif col.mask is not None:
        mask = col.mask.compute()
        kind = "boolean" if values.dtype == bool else str(pd.array(values).dtype)
        data = pd.array(values, dtype=kind)
        data[mask] = pd.NA
    else:
        data = to_object_strings(values)
    return pd.Series(data, index=index)
