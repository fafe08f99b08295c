"""``LayerField``: ``X`` or a layer; never loads the matrix of a store."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import constants as C
from ..errors import InvalidArgumentError, InvalidDataError, InvalidTypeError, ShapeMismatchError
from ..store.genes import positions_of, subset_positions
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
    var_subset
        Register only some genes: the name of a boolean ``var`` column (e.g.
        ``"highly_variable"``, written by :func:`atlasloader.preprocess.preprocess`) or a list
        of gene names. The registry then holds the subset (``n_vars``, ``column_names`` and
        their ``column_indices`` in the data) and the loader yields only those columns, read
        from the full matrix: the store is not rewritten. A transferred query must contain
        every gene of the subset (found by name, in any order).

    Examples
    --------
    >>> LayerField("X", layer=None, is_count_data=True)
    LayerField(registry_key='X', attr_key=None)
    >>> LayerField("X", None, var_subset="highly_variable").var_subset
    'highly_variable'
    """

    N_OBS_KEY = "n_obs"
    N_CELLS_KEY = "n_cells"
    N_VARS_KEY = "n_vars"
    COLUMN_NAMES_KEY = "column_names"
    COLUMN_INDICES_KEY = "column_indices"
    VAR_SUBSET_KEY = "var_subset"

    def __init__(
        self,
        registry_key: str,
        layer: str | None,
        is_count_data: bool = True,
        correct_data_format: bool = True,
        check_fragment_counts: bool = False,
        var_subset: str | Sequence[str] | None = None,
    ) -> None:
        self._registry_key = registry_key
        self._attr_name = C.ADATA_ATTRS.X if layer is None else C.ADATA_ATTRS.LAYERS
        self._attr_key = layer
        self.is_count_data = is_count_data
        self.correct_data_format = correct_data_format
        self.check_fragment_counts = check_fragment_counts
        if var_subset is not None and not isinstance(var_subset, str):
            var_subset = [str(g) for g in var_subset]
            if not var_subset:
                raise InvalidArgumentError("var_subset lists no genes: pass None for all genes")
        self.var_subset = var_subset
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
        shape = tuple(b.matrix_shape(self.attr_name, self.attr_key))
        if shape[:2] != (b.n_obs, b.n_vars):
            msg = (
                f"{self._where()} has shape {shape}, but obs has {b.n_obs} rows and var "
                f"{b.n_vars}: the matrix and obs/var do not describe the same cells and genes; "
                "write the store again (anndata's write_zarr or atlasloader convert)"
            )
            raise ShapeMismatchError(msg)
        if b.n_obs == 0 or b.n_vars == 0:
            msg = (
                f"{self._where()} has {b.n_obs} cells and {b.n_vars} genes: there is nothing "
                "to register; check that the data was written (or subset) as intended"
            )
            raise InvalidDataError(msg)
        if not self.is_count_data:
            return
        sample = b.matrix_sample(self.attr_name, self.attr_key)
        values = sample.data if sp.issparse(sample) else np.asarray(sample)
        if values.dtype.kind not in "biuf":
            msg = (
                f"{self._where()} has dtype {values.dtype}, but a count matrix must hold "
                "numbers; write it again as integers or floats (e.g. X.astype('float32'))"
            )
            raise InvalidTypeError(msg)
        if not is_nonnegative_integer(sample):
            warnings.warn(
                f"{self._where()} does not contain unnormalized count data. "
                "Are you sure this is what you want?",
                UserWarning,
                stacklevel=3,
            )

    def register_field(self, adata: Any) -> dict:
        self.validate_field(adata)
        b = self.backing(adata)
        state = {
            self.N_OBS_KEY: b.n_obs,
            self.N_VARS_KEY: b.n_vars,
            self.COLUMN_NAMES_KEY: b.var_names,
        }
        if self.var_subset is not None:
            cols = self._subset_positions(adata, b.var_names)
            state |= self._subset_state(b.var_names, cols)
        return state

    def _subset_state(self, var_names: np.ndarray, cols: np.ndarray) -> dict:
        return {
            self.N_VARS_KEY: int(cols.size),
            self.COLUMN_NAMES_KEY: np.asarray(var_names)[cols],
            self.COLUMN_INDICES_KEY: cols.astype(np.int64),
            self.VAR_SUBSET_KEY: self.var_subset if isinstance(self.var_subset, str) else None,
        }

    def _subset_positions(self, adata: Any, var_names: np.ndarray) -> np.ndarray:
        var = adata.var if isinstance(self.var_subset, str) else pd.DataFrame(index=var_names)
        return subset_positions(var, self.var_subset or [], "adata")

    def transfer_field(self, state_registry: dict, adata_target: Any, **kwargs: Any) -> dict:
        if self.COLUMN_INDICES_KEY in state_registry:
            # The reference's genes, found by name in the query (which may hold more).
            self.validate_field(adata_target)
            b = self.backing(adata_target)
            genes = [str(g) for g in state_registry[self.COLUMN_NAMES_KEY]]
            cols = positions_of(genes, b.var_names, "adata_target")
            state: dict[str, Any] = {self.N_OBS_KEY: b.n_obs, self.N_VARS_KEY: b.n_vars}
            state |= self._subset_state(b.var_names, cols)
            state[self.VAR_SUBSET_KEY] = state_registry.get(self.VAR_SUBSET_KEY)
            return state
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
