"""Concatenate the inputs' ``obs`` (and other small per-cell elements) for :func:`convert`.

``obs`` is written column by column, so that only one column of every input is in memory at a
time (plus the cell names). The union of the columns is kept, in order of first appearance:

- a column missing in some inputs is filled with NaN (numbers, stored as float64), NA
  (booleans, stored as a nullable boolean) or a missing category (categoricals and strings:
  Zarr v3 string arrays cannot hold a missing value, so such a string column is stored as a
  categorical);
- categoricals take the union of their categories (sorted naturally, as ``anndata.concat``
  does); a column categorical in one input and string in another becomes categorical; ordered
  categoricals stay ordered only if every input has the same categories;
- numbers of different types take their common type; anything else (numbers in one input,
  strings in another) raises :class:`~atlasloader.errors.InvalidDataError` naming the column.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import ColumnExistsError, InvalidDataError

if TYPE_CHECKING:
    from .source import Source

SOURCE_KEY = "source_file"  # default obs column naming each cell's input
POSITION_KEY = "original_position"  # obs column of a shuffled store: each cell's input position
_ELEM_KWARGS = {"shards": None}


def _attr_list(attrs: Any, name: str) -> list[str]:
    value = attrs.get(name, [])
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value)]


def _index_key(node: Any) -> str:
    value = node.attrs.get("_index", "_index")
    return value.decode() if isinstance(value, bytes) else str(value)


def _strings(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    return arr.astype(object) if arr.dtype.kind != "O" else arr


def obs_columns(source: Source) -> list[str]:
    return _attr_list(source.node("obs").attrs, "column-order")


def n_obs(source: Source) -> int:
    obs = source.node("obs")
    return int(obs[_index_key(obs)].shape[0])


def obs_names(sources: list[Source], paths: list[str]) -> pd.Index:
    """The output's cell names (input order), made unique if two inputs share a name.

    If any name occurs in two inputs, every name gets ``-<input position>`` appended, as
    ``anndata.concat(..., index_unique="-")`` does; names repeated within one input are kept.
    """
    per_input = []
    for source in sources:
        obs = source.node("obs")
        per_input.append(_strings(source.read_elem(f"obs/{_index_key(obs)}")))
    names = np.concatenate(per_input) if len(per_input) > 1 else per_input[0]
    index = pd.Index(names, dtype=object)
    if len(sources) > 1 and not index.is_unique:
        n_within = sum(len(pd.unique(n)) for n in per_input)
        if n_within > len(index.unique()):
            shared = _first_shared(per_input)
            warnings.warn(
                f"obs_names collide between inputs (e.g. {shared[0]!r} is in both "
                f"{paths[shared[1]]!r} and {paths[shared[2]]!r}): every name was made unique "
                "by appending '-<input position>' (as anndata.concat(index_unique='-'))",
                UserWarning,
                stacklevel=5,
            )
            keys = np.repeat(np.arange(len(per_input)).astype(str), [len(n) for n in per_input])
            index = pd.Index(pd.Series(names, dtype=object).str.cat(keys, sep="-"), dtype=object)
    name = _index_key(sources[0].node("obs"))
    index.name = None if name == "_index" else name
    return index


def _first_shared(per_input: list[np.ndarray]) -> tuple[str, int, int]:
    seen: dict[str, int] = {}
    for k, names in enumerate(per_input):
        for name in pd.unique(names):
            if name in seen and seen[name] != k:
                return str(name), seen[name], k
            seen.setdefault(name, k)
    raise AssertionError("no shared name")  # pragma: no cover


def check_new_columns(
    sources: list[Source], paths: list[str], source_key: str | None, shuffle: bool
) -> None:
    """Refuse to overwrite a user's obs column with one that convert adds."""
    for source, path in zip(sources, paths):
        columns = obs_columns(source)
        if source_key is not None and source_key in columns:
            msg = (
                f"adata.obs[{source_key!r}] already exists in {path!r}; convert records each "
                "cell's input there and never overwrites a column. Pass "
                "source_key='another_name', or source_key=None to not record the inputs"
            )
            raise ColumnExistsError(msg)
        if shuffle and POSITION_KEY in columns:
            msg = (
                f"adata.obs[{POSITION_KEY!r}] already exists in {path!r}; convert(shuffle=True) "
                "records each cell's position before shuffling there and never overwrites a "
                "column. Rename or drop that column in the input (it is there if the input was "
                "itself converted with shuffle=True)"
            )
            raise ColumnExistsError(msg)


def write_obs(
    root: Any,
    sources: list[Source],
    paths: list[str],
    perm: np.ndarray | None,
    source_key: str | None,
) -> pd.Index:
    """Write ``obs`` (columns union, ``source_key``, the permutation); return the cell names."""
    from ..store.elements import write_elem

    names = obs_names(sources, paths)
    out_names = names if perm is None else names[perm]
    write_elem(root, "obs", pd.DataFrame(index=out_names), dataset_kwargs=_ELEM_KWARGS)
    group = root["obs"]
    sizes = [n_obs(s) for s in sources]
    columns: dict[str, None] = {}
    for source in sources:
        columns.update(dict.fromkeys(obs_columns(source)))
    for col in columns:
        values = [
            source.read_elem(f"obs/{col}") if col in obs_columns(source) else None
            for source in sources
        ]
        merged = values[0] if len(values) == 1 else unify(col, values, sizes, paths)
        write_elem(group, col, take(merged, perm), dataset_kwargs=_ELEM_KWARGS)
        del values, merged
    order = list(columns)
    if source_key is not None:
        codes = np.repeat(np.arange(len(sources), dtype=np.int32), sizes)
        label = pd.Categorical.from_codes(codes, categories=pd.Index(paths, dtype=object))
        write_elem(group, source_key, take(label, perm), dataset_kwargs=_ELEM_KWARGS)
        order.append(source_key)
    if perm is not None:
        write_elem(group, POSITION_KEY, perm.astype(np.int64), dataset_kwargs=_ELEM_KWARGS)
        order.append(POSITION_KEY)
    group.attrs["column-order"] = order
    return names


def take(values: Any, perm: np.ndarray | None) -> Any:
    """Rows ``perm`` of a column, array, sparse matrix or dataframe (all of it if None)."""
    if perm is None:
        return values
    if isinstance(values, pd.DataFrame):
        return values.iloc[perm]
    if isinstance(values, np.ndarray) or hasattr(values, "tocsr"):
        return values[perm]
    return values.take(perm)


# --- unifying one column ------------------------------------------------------------------------
def _kind(values: Any) -> str:
    if isinstance(values, pd.Categorical):
        return "category"
    if isinstance(values, pd.api.extensions.ExtensionArray):
        return "nullable"
    arr = np.asarray(values)
    if arr.dtype.kind in "OUST" or str(arr.dtype).startswith("StringDType"):
        return "string"
    if arr.dtype.kind == "b":
        return "bool"
    if arr.dtype.kind in "iufc":
        return "number"
    return f"other ({arr.dtype})"


def _describe(values: Any) -> str:
    return "categorical" if isinstance(values, pd.Categorical) else str(values.dtype)


def unify(col: str, values: list[Any], sizes: list[int], paths: list[str]) -> Any:
    """One column of the concatenated obs from each input's column (None where missing)."""
    present = [v for v in values if v is not None]
    kinds = {_kind(v) for v in present}
    missing = len(present) < len(values)
    if "category" in kinds or (kinds == {"string"} and missing):
        if not kinds <= {"category", "string"}:
            _conflict(col, values, paths)
        return _categorical(values, sizes)
    if kinds == {"string"}:
        return np.concatenate([_strings(v) for v in present])
    if kinds <= {"number", "bool"}:
        if not missing:
            return np.concatenate([np.asarray(v) for v in present])
        if kinds == {"bool"}:
            return _nullable(values, sizes, "boolean")
        dtype = np.result_type(np.float64, *[np.asarray(v).dtype for v in present])
        return np.concatenate(
            [np.full(n, np.nan, dtype) if v is None else np.asarray(v, dtype) for v, n in
             zip(values, sizes)]
        )  # fmt: skip
    if kinds <= {"number", "bool", "nullable"}:
        dtypes = [getattr(v.dtype, "numpy_dtype", v.dtype) for v in present]
        if all(np.dtype(d).kind == "b" for d in dtypes):
            return _nullable(values, sizes, "boolean")
        if all(np.dtype(d).kind in "biu" for d in dtypes):
            return _nullable(values, sizes, "Int64")
        # anndata stores no nullable floats: NaN marks the missing values.
        return np.concatenate(
            [np.full(n, np.nan) if v is None else pd.array(v, dtype="Float64").to_numpy(
                dtype=np.float64, na_value=np.nan) for v, n in zip(values, sizes)]
        )  # fmt: skip
    _conflict(col, values, paths)
    raise AssertionError  # pragma: no cover


def _conflict(col: str, values: list[Any], paths: list[str]) -> None:
    found = ", ".join(f"{_describe(v)} in {p!r}" for v, p in zip(values, paths) if v is not None)
    msg = (
        f"adata.obs[{col!r}] cannot be concatenated: it is {found}. Give it one type in every "
        "input (all numbers, or all strings/categories), or rename it in some inputs"
    )
    raise InvalidDataError(msg)


def _nullable(values: list[Any], sizes: list[int], dtype: str) -> Any:
    arrays = [
        pd.array([pd.NA] * n, dtype=dtype) if v is None else pd.array(v, dtype=dtype)
        for v, n in zip(values, sizes)
    ]
    return pd.concat([pd.Series(a) for a in arrays], ignore_index=True).array


def _categorical(values: list[Any], sizes: list[int]) -> pd.Categorical:
    cats = [v for v in values if isinstance(v, pd.Categorical)]
    strings = [_strings(v) for v in values if v is not None and not isinstance(v, pd.Categorical)]
    first = cats[0].categories if cats else None
    ordered = (
        not strings
        and first is not None
        and all(c.ordered and c.categories.equals(first) for c in cats)
    )
    if ordered and first is not None:
        categories = first
    else:
        from natsort import natsorted

        union: dict[Any, None] = {}
        for c in cats:
            union.update(dict.fromkeys(c.categories))
        for s in strings:
            union.update(dict.fromkeys(pd.unique(s[pd.notna(s)])))
        categories = pd.Index(natsorted(union), dtype=object if not cats else None)
    codes = []
    for v, n in zip(values, sizes):
        if v is None:
            codes.append(np.full(n, -1, dtype=np.int64))
        elif isinstance(v, pd.Categorical):
            lookup = categories.get_indexer(v.categories)
            codes.append(np.where(v.codes >= 0, lookup[v.codes], -1))
        else:
            codes.append(pd.Categorical(_strings(v), categories=categories).codes.astype(np.int64))
    return pd.Categorical.from_codes(
        np.concatenate(codes), categories=categories, ordered=bool(ordered)
    )


# --- other per-cell elements --------------------------------------------------------------------
def concat_rows(
    values: list[Any], where: str, names: pd.Index, perm: np.ndarray | None
) -> Any | None:
    """Concatenate (then permute) a small per-cell element; None (with a warning) if it can't.

    ``names`` are the output's cell names in input order (the index of a dataframe).
    """
    if len(values) == 1:
        return take(values[0], perm)
    if all(isinstance(v, pd.DataFrame) for v in values):
        if any(list(v.columns) != list(values[0].columns) for v in values):
            return _drop(where, "its columns differ between inputs")
        out: Any = pd.concat(values, ignore_index=True)
        out.index = names
    elif all(isinstance(v, np.ndarray) for v in values):
        if len({v.shape[1:] for v in values}) > 1:
            return _drop(where, "its shapes differ between inputs")
        out = np.concatenate(values)
    else:
        return _drop(where, "only dataframes and arrays are concatenated")
    return take(out, perm)


def _drop(where: str, why: str) -> Any:
    warnings.warn(f"{where} is not converted: {why}", UserWarning, stacklevel=6)
    return None
