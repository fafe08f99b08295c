"""One obs column of the inputs, read in row windows, and the output column they unite into.

An :class:`InputColumn` reads rows ``a:b`` of one input's column as ``anndata.io.read_elem``
would return them whole (a numpy array, object strings, a ``pd.Categorical`` with all its
categories, a nullable pandas array), reading only those rows. :func:`plan_column` decides
from the inputs' encodings, before any row is read, what the output column is (the rules are
listed in :mod:`.obs`); the resulting :class:`Output` creates the stored arrays and turns each
input's window into them. Only categories are read whole, plus, for a string column that
becomes a categorical, its distinct values (window by window).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import InvalidDataError
from .source import is_array, node_encoding
from .windows import Parts, spans

if TYPE_CHECKING:
    from .source import Source

# Encodings read window by window; any other (e.g. nullable strings) is read whole.
_WINDOWED = {"array", "string-array", "categorical", "nullable-integer", "nullable-boolean"}
_ARRAY_ATTRS = {"encoding-type": "array", "encoding-version": "0.2.0"}
_ELEM_KWARGS = {"shards": None}


def strings(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    return arr.astype(object) if arr.dtype.kind != "O" else arr


class InputColumn:
    """Rows of one input's obs column (or index), read as ``read_elem`` reads them.

    An encoding that is not read in windows is read whole once (only a single input's
    column can have one: see :func:`plan_column`).
    """

    def __init__(self, source: Source, key: str) -> None:
        path = f"obs/{key}"
        node = source.node(path)
        enc = node_encoding(node) or ("array" if is_array(node) else "dict")
        self.node, self.encoding, self.h5 = node, enc, source.kind == "h5ad"
        self.windowed = enc in _WINDOWED and (is_array(node) == (enc in ("array", "string-array")))
        self._whole: Any = None if self.windowed else source.read_elem(path)
        self._dtype: Any = None
        if enc == "categorical" and self.windowed:
            from ..store.elements import read_elem

            empty = np.zeros(0, dtype=node["codes"].dtype)
            ordered = bool(node.attrs.get("ordered", False))
            cats = read_elem(node["categories"])
            self._dtype = pd.Categorical.from_codes(empty, categories=cats, ordered=ordered).dtype
        self.sample = self.read(0, 0)  # no rows: the kind and dtype of the column

    def read(self, a: int, b: int) -> Any:
        if self._whole is not None:
            return self._whole[a:b]
        node = self.node
        if self.encoding == "categorical":
            return pd.Categorical.from_codes(np.asarray(node["codes"][a:b]), dtype=self._dtype)
        if self.encoding in ("nullable-integer", "nullable-boolean"):
            values, mask = np.asarray(node["values"][a:b]), np.asarray(node["mask"][a:b])
            if self.encoding == "nullable-integer":
                return pd.arrays.IntegerArray(values, mask=mask)
            return pd.arrays.BooleanArray(values, mask=mask)
        if self.encoding == "string-array" and self.h5:
            return np.asarray(node.asstr()[a:b])
        return np.asarray(node[a:b])

    def unique_strings(self, n: int) -> list[Any]:
        """The distinct non-missing values, in order of first appearance (window by window)."""
        seen: dict[Any, None] = {}
        for a, b in spans(n):
            s = strings(self.read(a, b))
            seen.update(dict.fromkeys(pd.unique(s[pd.notna(s)])))
        return list(seen)


# --- the output column --------------------------------------------------------------------------
@dataclass(frozen=True)
class Output:
    """What an output column stores, and how one input's window becomes it.

    ``encoding`` is anndata's: ``"array"`` (``dtype``), ``"string-array"``, ``"categorical"``
    (``categories``, ``ordered``; codes in the dtype pandas gives that many categories) or
    ``"nullable-integer"``/``"nullable-boolean"`` (values in ``dtype``). ``cast`` says how
    input values become an array: ``"asis"``, ``"astype"`` or ``"float"`` (through pandas'
    nullable Float64: missing values become NaN); ``nullable`` is the pandas dtype inputs are
    converted to (``None``: already nullable, as stored).
    """

    encoding: str
    dtype: np.dtype | None = None
    categories: pd.Index | None = None
    ordered: bool = False
    cast: str = "asis"
    nullable: str | None = None

    def create(self, group: Any, key: str, n: int) -> list[Any]:
        """Create the column's arrays (as anndata's ``write_elem`` would); return them."""
        if self.encoding == "array":
            return [create_array(group, key, n, self.dtype)]
        if self.encoding == "string-array":
            return [create_array(group, key, n, None)]
        from ..store.elements import write_elem

        g = group.create_group(key)
        if self.encoding == "categorical":
            assert self.categories is not None
            g.attrs["ordered"] = bool(self.ordered)
            codes = create_array(g, "codes", n, self.codes_dtype)
            write_elem(g, "categories", self.categories.to_numpy(), dataset_kwargs=_ELEM_KWARGS)
            g.attrs.update({"encoding-type": "categorical", "encoding-version": "0.2.0"})
            return [codes]
        arrays = [create_array(g, "values", n, self.dtype), create_array(g, "mask", n, bool)]
        g.attrs.update({"encoding-type": self.encoding, "encoding-version": "0.1.0"})
        return arrays

    @property
    def codes_dtype(self) -> np.dtype:
        empty = np.zeros(0, dtype=np.int64)
        return pd.Categorical.from_codes(empty, categories=self.categories).codes.dtype

    def convert(self, values: Any, n: int) -> Parts:
        """The stored arrays for ``n`` rows of one input (``values``; None if missing)."""
        enc = self.encoding
        if enc == "categorical":
            return (self._codes(values, n).astype(self.codes_dtype, copy=False),)
        if enc == "string-array":
            return (strings(values),)
        if enc == "array":
            assert self.dtype is not None
            if values is None:
                return (np.full(n, np.nan, self.dtype),)
            if self.cast == "float":
                arr = pd.array(values, dtype="Float64")
                return (arr.to_numpy(dtype=np.float64, na_value=np.nan),)
            return (np.asarray(values, dtype=self.dtype),)
        assert self.dtype is not None
        if values is None:
            return np.zeros(n, dtype=self.dtype), np.ones(n, dtype=bool)
        arr = values if self.nullable is None else pd.array(values, dtype=self.nullable)
        return arr.to_numpy(na_value=0, dtype=self.dtype), np.asarray(arr.isna(), dtype=bool)

    def _codes(self, values: Any, n: int) -> np.ndarray:
        assert self.categories is not None
        if values is None:
            return np.full(n, -1, dtype=np.int64)
        if isinstance(values, pd.Categorical):
            if values.categories.equals(self.categories):
                return np.asarray(values.codes)
            lookup = self.categories.get_indexer(values.categories)
            return np.where(values.codes >= 0, lookup[values.codes], -1)
        return np.asarray(self.categories.get_indexer(strings(values)), dtype=np.int64)


def create_array(group: Any, key: str, n: int, dtype: Any) -> Any:
    """A 1-D array of ``n`` rows as anndata's ``write_elem`` creates it (``dtype=None``: str)."""
    if dtype is None:
        from zarr.core.dtype import VariableLengthUTF8

        kwargs: dict[str, Any] = {"filters": None, "fill_value": None}
        if group.metadata.zarr_format == 2:
            from numcodecs import VLenUTF8

            kwargs = {"filters": [VLenUTF8()], "fill_value": ""}
        arr = group.create_array(key, shape=(n,), dtype=VariableLengthUTF8(), **kwargs,
                                 **_ELEM_KWARGS)  # fmt: skip
        arr.attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})
        return arr
    arr = group.create_array(key, shape=(n,), dtype=np.dtype(dtype), **_ELEM_KWARGS)
    arr.attrs.update(_ARRAY_ATTRS)
    return arr


# --- uniting the inputs' columns ----------------------------------------------------------------
def kind(values: Any) -> str:
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


def single(column: InputColumn) -> Output | None:
    """The output of a single input's column: the same encoding (None: copy it whole)."""
    sample = column.sample
    k = kind(sample)
    if not column.windowed:
        return None
    if k == "category":
        return Output("categorical", categories=sample.categories, ordered=sample.ordered)
    if k == "nullable":
        enc = "nullable-boolean" if sample.dtype == "boolean" else "nullable-integer"
        return Output(enc, dtype=np.dtype(sample.dtype.numpy_dtype))
    if k == "string":
        return Output("string-array")
    if k in ("number", "bool"):
        return Output("array", dtype=np.asarray(sample).dtype)
    return None


def plan_column(
    col: str, columns: list[InputColumn | None], sizes: list[int], paths: list[str]
) -> Output:
    """The output column uniting several inputs' columns (None where an input lacks it)."""
    present = [c.sample for c in columns if c is not None]
    kinds = {kind(v) for v in present}
    missing = len(present) < len(columns)
    if any(c is not None and not c.windowed for c in columns):
        _conflict(col, columns, paths, unsupported=True)
    if "category" in kinds or (kinds == {"string"} and missing):
        if not kinds <= {"category", "string"}:
            _conflict(col, columns, paths)
        return _categorical(columns, sizes)
    if kinds == {"string"}:
        return Output("string-array")
    if kinds <= {"number", "bool"}:
        dtypes = [np.asarray(v).dtype for v in present]
        if not missing:
            return Output("array", dtype=np.result_type(*dtypes), cast="astype")
        if kinds == {"bool"}:
            return Output("nullable-boolean", dtype=np.dtype(bool), nullable="boolean")
        dtype = np.result_type(np.float64, *dtypes)
        return Output("array", dtype=dtype, cast="astype")
    if kinds <= {"number", "bool", "nullable"}:
        dtypes = [np.dtype(getattr(v.dtype, "numpy_dtype", v.dtype)) for v in present]
        if all(d.kind == "b" for d in dtypes):
            return Output("nullable-boolean", dtype=np.dtype(bool), nullable="boolean")
        if all(d.kind in "biu" for d in dtypes):
            return Output("nullable-integer", dtype=np.dtype(np.int64), nullable="Int64")
        # anndata stores no nullable floats: NaN marks the missing values.
        return Output("array", dtype=np.dtype(np.float64), cast="float")
    _conflict(col, columns, paths)
    raise AssertionError  # pragma: no cover


def _conflict(
    col: str, columns: list[InputColumn | None], paths: list[str], unsupported: bool = False
) -> None:
    if unsupported:
        found = ", ".join(
            f"{c.encoding!r} in {p!r}" for c, p in zip(columns, paths) if c is not None
        )
        msg = (
            f"adata.obs[{col!r}] cannot be concatenated: it is stored with encodings {found}, "
            "and only numbers, booleans, strings, categoricals and nullable integers/booleans "
            "are concatenated. Convert it to one of those in every input, or drop it"
        )
        raise InvalidDataError(msg)
    found = ", ".join(
        f"{_describe(c.sample)} in {p!r}" for c, p in zip(columns, paths) if c is not None
    )
    msg = (
        f"adata.obs[{col!r}] cannot be concatenated: it is {found}. Give it one type in every "
        "input (all numbers, or all strings/categories), or rename it in some inputs"
    )
    raise InvalidDataError(msg)


def _categorical(columns: list[InputColumn | None], sizes: list[int]) -> Output:
    cats = [c.sample for c in columns if c is not None and isinstance(c.sample, pd.Categorical)]
    texts = [
        (c, n) for c, n in zip(columns, sizes)
        if c is not None and not isinstance(c.sample, pd.Categorical)
    ]  # fmt: skip
    first = cats[0].categories if cats else None
    ordered = (
        not texts
        and first is not None
        and all(c.ordered and c.categories.equals(first) for c in cats)
    )
    if ordered and first is not None:
        return Output("categorical", categories=first, ordered=True)
    from natsort import natsorted

    # Insertion order matters where natural sorting ties: categories first, then strings.
    union: dict[Any, None] = {}
    for c in cats:
        union.update(dict.fromkeys(c.categories))
    for column, n in texts:
        union.update(dict.fromkeys(column.unique_strings(n)))
    categories = pd.Index(natsorted(union), dtype=object if not cats else None)
    return Output("categorical", categories=categories, ordered=False)
