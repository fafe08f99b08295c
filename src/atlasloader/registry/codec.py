"""JSON encoding of state registries (numpy arrays, numpy scalars, nested mappings).

No pickle: arrays become ``{"__ndarray__": [...], "dtype": "..."}`` so a registry written by one
version of numpy/pandas reads back on another.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidDataError

_ND = "__ndarray__"


def to_jsonable(value: Any) -> Any:
    """Turn a state-registry value into plain JSON types."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OUST":
            items = [to_jsonable(v) for v in value.tolist()]
            return {_ND: items, "dtype": "object"}
        if value.dtype.kind not in "biuf":
            raise InvalidDataError(
                f"cannot persist an array of dtype {value.dtype} in a registry; "
                "use numbers or strings"
            )
        return {_ND: value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
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
        if _ND in value:
            dtype = value["dtype"]
            if dtype == "object":
                return np.array([from_jsonable(v) for v in value[_ND]], dtype=object)
            return np.asarray(value[_ND], dtype=np.dtype(dtype))
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value
