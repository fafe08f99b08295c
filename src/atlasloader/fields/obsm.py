"""``ObsmField``: an ``obsm`` matrix (e.g. protein counts) used as is."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .. import constants as C
from ..errors import ShapeMismatchError
from .base import BaseAnnDataField
from .layer import is_nonnegative_integer
from .numerical import raise_missing


class ObsmField(BaseAnnDataField):
    """Field for ``adata.obsm[attr_key]``.

    Parameters
    ----------
    registry_key
        Key to register the field under.
    attr_key
        The obsm key.
    colnames_uns_key
        ``adata.uns`` key holding column names; else a DataFrame's columns, else 0..k-1.
    is_count_data
        Warn when a sample holds negative or non-integer values.

    Examples
    --------
    >>> ObsmField("proteins", "protein_expression", colnames_uns_key="protein_names").attr_key
    'protein_expression'
    """

    COLUMN_NAMES_KEY = "column_names"
    _attr_name = C.ADATA_ATTRS.OBSM

    def __init__(
        self,
        registry_key: str,
        attr_key: str,
        colnames_uns_key: str | None = None,
        is_count_data: bool = False,
        correct_data_format: bool = True,
    ) -> None:
        self._registry_key = registry_key
        self._attr_key = attr_key
        self.colnames_uns_key = colnames_uns_key
        self.is_count_data = is_count_data
        self.correct_data_format = correct_data_format
        self.count_stat_key = f"n_{registry_key}"

    @property
    def registry_key(self) -> str:
        return self._registry_key

    @property
    def attr_name(self) -> str:
        return self._attr_name

    @property
    def attr_key(self) -> str:
        return self._attr_key

    @property
    def is_empty(self) -> bool:
        return False

    def input_locations(self) -> list[tuple[str, str | None]]:
        locs: list[tuple[str, str | None]] = [(self.attr_name, self.attr_key)]
        if self.colnames_uns_key is not None:
            locs.append(("uns", self.colnames_uns_key))
        return locs

    def validate_field(self, adata: Any) -> None:
        b = self.backing(adata)
        if not b.has(self.attr_name, self.attr_key):
            raise_missing(self.attr_name, self.attr_key, b.keys(self.attr_name))
        if self.is_count_data and not is_nonnegative_integer(
            b.matrix_sample(self.attr_name, self.attr_key)
        ):
            warnings.warn(
                f"adata.{self.attr_name}['{self.attr_key}'] does not contain "
                "unnormalized count data. Are you sure this is what you want?",
                UserWarning,
                stacklevel=3,
            )

    def _column_names(self, adata: Any) -> Any:
        b = self.backing(adata)
        frame_cols = b.frame_columns(self.attr_name, self.attr_key)
        if self.colnames_uns_key is None and frame_cols is not None:
            return list(frame_cols)
        if self.colnames_uns_key is not None:
            names = np.asarray(b.uns_value(self.colnames_uns_key))
            # '<U..' in memory, StringDType from a store, object after the JSON round trip:
            # one dtype, so the state is the same on both backings and when reused.
            return names.astype(object) if names.dtype.kind in "UST" else names
        return np.arange(b.matrix_shape(self.attr_name, self.attr_key)[1])

    def register_field(self, adata: Any) -> dict:
        self.validate_field(adata)
        return {self.COLUMN_NAMES_KEY: self._column_names(adata)}

    def transfer_field(self, state_registry: dict, adata_target: Any, **kwargs: Any) -> dict:
        self.validate_field(adata_target)
        b = self.backing(adata_target)
        source_cols = state_registry[self.COLUMN_NAMES_KEY]
        n_target = b.matrix_shape(self.attr_name, self.attr_key)[1]
        where = f"adata.{self.attr_name}['{self.attr_key}']"
        if len(source_cols) != n_target:
            msg = (
                f"Target {where} has {n_target} columns which does not match the source "
                f"{where} column count of {len(source_cols)}."
            )
            raise ShapeMismatchError(msg)
        frame_cols = b.frame_columns(self.attr_name, self.attr_key)
        if frame_cols is not None and list(source_cols) != list(frame_cols):
            msg = f"Target {where} column names do not match the source {where} column names."
            raise ShapeMismatchError(msg)
        cols = state_registry[self.COLUMN_NAMES_KEY]
        return {self.COLUMN_NAMES_KEY: cols.copy() if hasattr(cols, "copy") else list(cols)}

    def get_summary_stats(self, state_registry: dict) -> dict:
        return {self.count_stat_key: len(state_registry[self.COLUMN_NAMES_KEY])}

    def view_state_registry(self, state_registry: dict) -> None:
        return None
