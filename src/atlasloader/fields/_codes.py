"""Categorical encoding of a column, identical on both backings.

In memory this is scvi-tools' ``_make_column_categorical`` (pandas). On a store the same
result is computed with dask: categories are found chunk-wise, codes mapped chunk-wise through
a lookup table, and checks (missing values, unseen categories, tiny categories) come from one
reduction pass, so nothing but the source column is read.
"""

from __future__ import annotations

import warnings
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
from pandas.api.types import CategoricalDtype

from ..errors import InvalidDataError
from ..store.backing import Backing, MemoryBacking, ZarrBacking, describe
from ..store.elements import ColumnData, to_object_strings

MIN_CELLS_PER_CATEGORY = 3


def code_dtype(n_categories: int) -> np.dtype:
    """The integer dtype pandas gives ``.cat.codes`` for this many categories."""
    for dt in (np.int8, np.int16, np.int32):
        if n_categories < np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def _nan_error(where: str, n_missing: int) -> InvalidDataError:
    msg = (
        f"{where} has {n_missing} missing value(s) (NaN/None); categorical fields need a "
        f"category for every cell. Fill them first, e.g. "
        f"`adata.obs[key] = adata.obs[key].cat.add_categories('unknown').fillna('unknown')`"
    )
    return InvalidDataError(msg)


def _warn_small(where: str, counts: np.ndarray, mapping: np.ndarray) -> None:
    used = np.flatnonzero(counts)
    if used.size and counts[used].min() < MIN_CELLS_PER_CATEGORY:
        small = used[np.argmin(counts[used])]
        warnings.warn(
            f"Category {small} in {where} has fewer than {MIN_CELLS_PER_CATEGORY} cells. "
            "Models may not train properly.",
            UserWarning,
            stacklevel=4,
        )


# --- categories present in a column ----------------------------------------------------------
def present_values(backing: Backing, attr_name: str, key: str) -> np.ndarray:
    """Sorted unique non-missing values of a column (``np.unique`` in the seed)."""
    if isinstance(backing, MemoryBacking):
        s = backing.series(attr_name, key)
        return np.unique(np.asarray(s.dropna()))
    assert isinstance(backing, ZarrBacking)
    col = backing.column(attr_name, key)
    if col.is_categorical:
        assert col.categories is not None
        counts = _code_counts(col.values, len(col.categories))
        return np.unique(col.categories[counts[1:] > 0])
    return np.asarray(pd.Index(_unique_values(col)).sort_values())


def _unique_values(col: ColumnData) -> np.ndarray:
    def block_unique(b: np.ndarray) -> np.ndarray:
        u = pd.unique(pd.Series(to_object_strings(b)).dropna())
        return np.asarray(u, dtype=object)

    parts = col.values.map_blocks(block_unique, chunks=(np.nan,), dtype=object)
    (uniq,) = dask.compute(parts)
    values = pd.unique(pd.Series(np.asarray(uniq, dtype=object)))
    # Blocks go through object arrays; give numbers back their dtype, as pandas does in memory
    # (an integer column's categories are int64, not object).
    return pd.Series(values, dtype=object).infer_objects().to_numpy()


def _code_counts(codes: da.Array, n_categories: int) -> np.ndarray:
    """Counts per code, with index 0 counting missing (-1)."""
    shifted = codes.astype(np.int64) + 1
    (counts,) = dask.compute(da.bincount(shifted, minlength=n_categories + 1))
    return np.asarray(counts)


def categories_of(backing: Backing, attr_name: str, key: str) -> np.ndarray:
    """The categories ``astype('category')`` would give (stored order for categoricals)."""
    if isinstance(backing, MemoryBacking):
        return backing.series(attr_name, key).astype("category").cat.categories.to_numpy(copy=True)
    assert isinstance(backing, ZarrBacking)
    col = backing.column(attr_name, key)
    if col.is_categorical:
        assert col.categories is not None
        return np.asarray(col.categories).copy()
    return pd.Index(_unique_values(col)).sort_values().to_numpy()


# --- encoding --------------------------------------------------------------------------------
def encode(
    backing: Backing,
    attr_name: str,
    key: str,
    mapping: np.ndarray | None = None,
) -> tuple[np.ndarray, Any]:
    """Encode ``adata.<attr_name>[key]`` as integer codes.

    Returns ``(mapping, codes)``: ``mapping`` is the categories array (the seed's
    ``categorical_mapping``) and ``codes`` a numpy array (memory) or dask array (store).
    With ``mapping`` given, codes follow it and values outside it are an error.
    """
    where = describe(attr_name, key)
    if mapping is None:
        mapping = categories_of(backing, attr_name, key)
    mapping = np.asarray(mapping)
    if isinstance(backing, MemoryBacking):
        return mapping, _encode_memory(backing, attr_name, key, mapping, where)
    assert isinstance(backing, ZarrBacking)
    return mapping, _encode_dask(backing, attr_name, key, mapping, where)


def _encode_memory(
    backing: MemoryBacking, attr_name: str, key: str, mapping: np.ndarray, where: str
) -> np.ndarray:
    source = backing.series(attr_name, key)
    n_missing = int(source.isna().sum())
    if n_missing:
        raise _nan_error(where, n_missing)
    cat = source.astype(CategoricalDtype(categories=mapping, ordered=True))
    codes = cat.cat.codes.to_numpy()
    if (codes == -1).any():
        received = source.astype("category").cat.categories
        msg = (
            f'Making .{attr_name}["{key}"] categorical failed. Expected categories: '
            f"{mapping}. Received categories: {received}. "
        )
        raise InvalidDataError(msg)
    _warn_small(where, np.bincount(codes, minlength=len(mapping)), mapping)
    return codes.astype(code_dtype(len(mapping)), copy=False)


def _encode_dask(
    backing: ZarrBacking, attr_name: str, key: str, mapping: np.ndarray, where: str
) -> da.Array:
    col = backing.column(attr_name, key)
    out_dtype = code_dtype(len(mapping))
    index = pd.Index(mapping)
    if col.is_categorical:
        assert col.categories is not None
        table = np.append(index.get_indexer(col.categories), -1).astype(out_dtype)
        # code -1 (missing) indexes the appended -1
        codes = col.values.map_blocks(lambda b: table[b], dtype=out_dtype)
    else:

        def lookup(b: np.ndarray) -> np.ndarray:
            return index.get_indexer(to_object_strings(b)).astype(out_dtype)

        codes = col.values.map_blocks(lookup, dtype=out_dtype)
    # One pass over the source: missing values and unseen categories both show as -1.
    counts = _code_counts(codes, len(mapping))
    if counts[0]:
        n_missing = _count_missing(col)
        if n_missing:
            raise _nan_error(where, n_missing)
        received = present_values(backing, attr_name, key)
        msg = (
            f'Making .{attr_name}["{key}"] categorical failed. Expected categories: '
            f"{mapping}. Received categories: {received}. "
        )
        raise InvalidDataError(msg)
    _warn_small(where, counts[1:], mapping)
    return codes


def _count_missing(col: ColumnData) -> int:
    if col.is_categorical:
        (n,) = dask.compute((col.values < 0).sum())
        return int(n)

    def block_missing(b: np.ndarray) -> np.ndarray:
        return np.asarray([pd.isna(to_object_strings(b)).sum()])

    (n,) = dask.compute(col.values.map_blocks(block_missing, chunks=(1,), dtype=np.int64).sum())
    return int(n)
