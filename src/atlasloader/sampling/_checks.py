"""Argument checks, read-only views and the ``int64`` array type the sampling modules share.

The room's entry points validate their integer arguments with these, so a bad argument fails
with an :class:`~atlasloader.errors.InvalidArgumentError` that names it.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InvalidArgumentError

IntArray = npt.NDArray[np.int64]


def _check_int(name: str, value: Any, *, min_value: int) -> int:
    """Return ``value`` as an ``int`` or raise :class:`InvalidArgumentError`."""
    # bool is an int subclass; ``batch_size=True`` is a bug, not a batch of one.
    if isinstance(value, bool | np.bool_):
        msg = f"{name} must be an integer >= {min_value}; got the boolean {value!r}"
        raise InvalidArgumentError(msg)
    try:
        ivalue = operator.index(value)
    except TypeError:
        msg = f"{name} must be an integer >= {min_value}; got {value!r} ({type(value).__name__})"
        raise InvalidArgumentError(msg) from None
    if ivalue < min_value:
        msg = f"{name} must be an integer >= {min_value}; got {ivalue}"
        raise InvalidArgumentError(msg)
    return ivalue


def _check_member(name: str, value: Any, count_name: str, count: int) -> int:
    """Validate an index ``0 <= value < count`` (``rank < world_size``, ``worker < ...``)."""
    ivalue = _check_int(name, value, min_value=0)
    if ivalue >= count:
        msg = f"{name} must be in [0, {count_name}) = [0, {count}); got {name}={ivalue}"
        raise InvalidArgumentError(msg)
    return ivalue


def _readonly(a: np.ndarray) -> np.ndarray:
    # A read-only *view* keeps frozen dataclasses honest without copying (or freezing) an
    # array the caller still owns.
    v = a.view()
    v.flags.writeable = False
    return v
