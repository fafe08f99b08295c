"""``StringUnsField``: a string stored in ``adata.uns``."""

from __future__ import annotations

from typing import Any

from .. import constants as C
from ..errors import InvalidArgumentError, InvalidDataError
from .base import BaseAnnDataField
from .numerical import raise_missing


class StringUnsField(BaseAnnDataField):
    """Field for a string in ``adata.uns[uns_key]``; nothing is written.

    Examples
    --------
    >>> StringUnsField("minify_type", None, required=False).is_empty
    True
    """

    _attr_name = C.ADATA_ATTRS.UNS

    def __init__(self, registry_key: str, uns_key: str | None, required: bool = True) -> None:
        if required and uns_key is None:
            msg = "`uns_key` cannot be `None` if `required=True`. Please provide an `uns_key`."
            raise InvalidArgumentError(msg)
        self._registry_key = registry_key
        self._attr_key = uns_key
        self._is_empty = uns_key is None

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
        value = b.uns_value(key)
        if not isinstance(value, str):
            msg = f"adata.uns['{key}'] must be a string, got {type(value).__name__}: {value!r}"
            raise InvalidDataError(msg)

    def register_field(self, adata: Any) -> dict:
        self.validate_field(adata)
        return {}

    def transfer_field(self, state_registry: dict, adata_target: Any, **kwargs: Any) -> dict:
        return self.register_field(adata_target)

    def get_summary_stats(self, state_registry: dict) -> dict:
        return {}

    def view_state_registry(self, state_registry: dict) -> None:
        return None
