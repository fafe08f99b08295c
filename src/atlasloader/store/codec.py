"""JSON encoding of state registries (numpy arrays, numpy scalars, nested mappings).

No pickle: arrays become ``{"__ndarray__": [...], "dtype": "..."}`` so a registry written by one
version of numpy/pandas reads back on another.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidDataError

_ND = "__ndarray__"
# A mapping that itself has one of the marker keys (an obs column named "__ndarray__") is
# wrapped as {"__dict__": {...}} so it cannot be mistaken for an encoded array.
_DICT = "__dict__"


def to_jsonable(value: Any) -> Any:
    """Turn a state-registry value into plain JSON types."""
    if isinstance(value, np.ndarray):
        # Values are stored flat; arrays that are not 1-D also store their shape (nested lists
        # lose it for empty dimensions, and a 0-d string array is not a list at all).
        shape = {} if value.ndim == 1 else {"shape": list(value.shape)}
        if value.dtype.kind in "OUST":
            items = [to_jsonable(v) for v in value.ravel().tolist()]
            return {_ND: items, "dtype": "object", **shape}
        if value.dtype.kind not in "biuf":
            raise InvalidDataError(
                f"cannot persist an array of dtype {value.dtype} in a registry; "
                "use numbers or strings"
            )
        return {_ND: value.ravel().tolist(), "dtype": value.dtype.str, **shape}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        out = {str(k): to_jsonable(v) for k, v in value.items()}
        return {_DICT: out} if (_ND in out or _DICT in out) else out
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise InvalidDataError(
        f"cannot persist a value of type {type(value).__name__} in a registry: {value!r}"
    )


def from_jsonable(value: Any) -> Any:
    """Inverse of :func:`to_jsonable`."""
    if isinstance(value, dict):
        if _DICT in value and len(value) == 1:
            return {k: from_jsonable(v) for k, v in value[_DICT].items()}
        if _ND in value:
            dtype = value["dtype"]
            if dtype == "object":
                items = [from_jsonable(v) for v in value[_ND]]
                arr = np.empty(len(items), dtype=object)
                for i, item in enumerate(items):  # items may be lists: keep them as elements
                    arr[i] = item
            else:
                arr = np.asarray(value[_ND], dtype=np.dtype(dtype))
            return arr.reshape(value["shape"]) if "shape" in value else arr
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value
