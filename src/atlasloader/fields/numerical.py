"""``NumericalObsField``: a numeric obs column used as is (e.g. size factors)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .. import constants as C
from ..errors import InvalidArgumentError, InvalidDataError
from ..store.backing import MemoryBacking, ZarrBacking
from .base import BaseAnnDataField


class NumericalObsField(BaseAnnDataField):
    """Field for a numeric ``adata.obs`` column; nothing is written.

    Parameters
    ----------
    registry_key
        Key to register the field under.
    attr_key
        Source obs column (None with ``required=False`` makes an empty field).
    required
        Whether ``attr_key`` must be given.

    Examples
    --------
    >>> NumericalObsField("size_factor", None, required=False).is_empty
    True
    """

    _attr_name = C.ADATA_ATTRS.OBS

    def __init__(self, registry_key: str, attr_key: str | None, required: bool = True) -> None:
        if required and attr_key is None:
            msg = "`attr_key` cannot be `None` if `required=True`. Please provide an `attr_key`."
            raise InvalidArgumentError(msg)
        self._registry_key = registry_key
        self._attr_key = attr_key
        self._is_empty = attr_key is None

    @property
    def registry_key(self) -> str:
        return self._registry_key

    @property
    def attr_name(self) -> str:
        return self._attr_name

    @property
    def attr_key(self) -> str | None:
        return self._attr_key

    @property
    def is_empty(self) -> bool:
        return self._is_empty

    def validate_field(self, adata: Any) -> None:
        b = self.backing(adata)
        key = self.attr_key or ""
        if not b.has(self.attr_name, key):
            raise_missing(self.attr_name, key, b.keys(self.attr_name))
        check_numeric(b, self.attr_name, key)

    def register_field(self, adata: Any) -> dict:
        self.validate_field(adata)
        return {}

    def transfer_field(self, state_registry: dict, adata_target: Any, **kwargs: Any) -> dict:
        return self.register_field(adata_target)

    def get_summary_stats(self, state_registry: dict) -> dict:
        return {}

    def view_state_registry(self, state_registry: dict) -> None:
        return None


def raise_missing(attr_name: str, key: str, available: list[str]) -> None:
    from ..errors import MissingKeyError

    msg = (
        f"{key} not found in adata.{attr_name}. Available keys: {available}; "
        "pass one of them (keys are column names, never paths)"
    )
    raise MissingKeyError(msg)


def check_numeric(b: Any, attr_name: str, key: str) -> None:
    """Raise unless the column is numeric (dtype only: no data is read on stores)."""
    if isinstance(b, MemoryBacking):
        dtype = getattr(b.adata, attr_name)[key].dtype
        is_cat = str(dtype) == "category"
    else:
        assert isinstance(b, ZarrBacking)
        col = b.column(attr_name, key)
        dtype, is_cat = col.values.dtype, col.is_categorical
    if is_cat or not pd.api.types.is_numeric_dtype(dtype):
        msg = (
            f"adata.{attr_name}['{key}'] has dtype {dtype}, but a numerical field needs "
            "numbers; register it with a categorical field instead, or convert it"
        )
        raise InvalidDataError(msg)
