"""``LayerField``: ``X`` or a layer; never loads the matrix of a store."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp

from .. import constants as C
from ..errors import ShapeMismatchError
from .base import BaseAnnDataField


def is_nonnegative_integer(data: Any) -> bool:
    """Whether a sample of a matrix holds only non-negative integers (counts)."""
    values = data.data if sp.issparse(data) else np.asarray(data)
    if values.size == 0:
        return True
    if values.dtype.kind in "iub":
        return bool((values >= 0).all()) if values.dtype.kind == "i" else True
    return bool((values >= 0).all() and np.all(np.mod(values, 1) == 0))


class LayerField(BaseAnnDataField):
    """Field for ``adata.X`` (``layer=None``) or ``adata.layers[layer]``.

    Parameters
    ----------
    registry_key
        Key to register the field under in the data registry.
    layer
        Layer key, or None for ``X``.
    is_count_data
        Warn (as scvi-tools) when a sample of the data holds negative or non-integer values.
        On stores only a few row blocks are read for this check.

    Examples
    --------
    >>> LayerField("X", layer=None, is_count_data=True)
    LayerField(registry_key='X', attr_key=None)
    """

    N_OBS_KEY = "n_obs"
    N_CELLS_KEY = "n_cells"
    N_VARS_KEY = "n_vars"
    COLUMN_NAMES_KEY = "column_names"

    def __init__(
        self,
        registry_key: str,
        layer: str | None,
        is_count_data: bool = True,
        correct_data_format: bool = True,
        check_fragment_counts: bool = False,
    ) -> None:
        self._registry_key = registry_key
        self._attr_name = C.ADATA_ATTRS.X if layer is None else C.ADATA_ATTRS.LAYERS
        self._attr_key = layer
        self.is_count_data = is_count_data
        self.correct_data_format = correct_data_format
        self.check_fragment_counts = check_fragment_counts
        self.count_stat_key = (
            self.N_VARS_KEY if registry_key in (C.REGISTRY_KEYS.X_KEY, "x") else f"n_{registry_key}"
        )

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
        return False

    def _where(self) -> str:
        return "adata.X" if self.attr_key is None else f"adata.layers[{self.attr_key}]"

    def validate_field(self, adata: Any) -> None:
        b = self.backing(adata)
        b.require(self.attr_name, self.attr_key)
        if self.is_count_data and not is_nonnegative_integer(
            b.matrix_sample(self.attr_name, self.attr_key)
        ):
            warnings.warn(
                f"{self._where()} does not contain unnormalized count data. "
                "Are you sure this is what you want?",
                UserWarning,
                stacklevel=3,
            )

    def register_field(self, adata: Any) -> dict:
        self.validate_field(adata)
        b = self.backing(adata)
        return {
            self.N_OBS_KEY: b.n_obs,
            self.N_VARS_KEY: b.n_vars,
            self.COLUMN_NAMES_KEY: b.var_names,
        }

    def transfer_field(self, state_registry: dict, adata_target: Any, **kwargs: Any) -> dict:
        n_vars = state_registry[self.N_VARS_KEY]
        target_n_vars = self.backing(adata_target).n_vars
        if target_n_vars != n_vars:
            msg = (
                "Number of vars in `adata_target` not the same as source. "
                f"Expected: {n_vars} Received: {target_n_vars}"
            )
            raise ShapeMismatchError(msg)
        return self.register_field(adata_target)

    def get_summary_stats(self, state_registry: dict) -> dict:
        stats = {}
        if self.count_stat_key == self.N_VARS_KEY:
            stats[self.N_CELLS_KEY] = state_registry[self.N_OBS_KEY]
        stats[self.count_stat_key] = state_registry[self.N_VARS_KEY]
        return stats

    def view_state_registry(self, state_registry: dict) -> None:
        return None

    def input_locations(self) -> list[tuple[str, str | None]]:
        return [(self.attr_name, self.attr_key), ("var", None)]
