"""``CategoricalObsField``: an obs column encoded as integers in ``obs['_scvi_<key>']``."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import pandas as pd

from .. import constants as C
from ..errors import CategoryTransferError, InvalidArgumentError
from ..registry.display import categorical_mapping_table
from ..store.backing import MemoryBacking
from ._codes import encode, present_values
from .base import BaseAnnDataField


class CategoricalObsField(BaseAnnDataField):
    """Field for a categorical ``adata.obs`` column.

    The integer codes are stored in ``adata.obs['_scvi_<registry_key>']``; the user's own
    column is never changed. On a store the codes are computed with dask and persisted in the
    store (``obs/_scvi_<registry_key>``), so reopening does not recompute them.

    Parameters
    ----------
    registry_key
        Key to register the field under in the data registry.
    obs_key
        Source obs column. None means "all cells in one category" (a column of zeros).

    Examples
    --------
    >>> CategoricalObsField("batch", "batch")
    CategoricalObsField(registry_key='batch', attr_key='_scvi_batch')
    """

    CATEGORICAL_MAPPING_KEY = "categorical_mapping"
    ORIGINAL_ATTR_KEY = "original_key"
    _attr_name = C.ADATA_ATTRS.OBS

    def __init__(self, registry_key: str, obs_key: str | None) -> None:
        if not isinstance(registry_key, str) or not registry_key:
            raise InvalidArgumentError(
                f"registry_key must be a non-empty string, got {registry_key!r}"
            )
        self._registry_key = registry_key
        self.is_default = obs_key is None
        self._original_attr_key = obs_key or registry_key
        self._attr_key = f"_scvi_{registry_key}"
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
        return [] if self.is_default else [(self.attr_name, self._original_attr_key)]

    def output_locations(self) -> list[tuple[str, str | None]]:
        return [(self.attr_name, self.attr_key)]

    # --- default column -----------------------------------------------------------------------
    def _setup_default_attr(self, adata: Any) -> None:
        """All cells in category 0, as scvi-tools does when no key is given."""
        b = self.backing(adata)
        self._original_attr_key = self.attr_key
        if isinstance(b, MemoryBacking):
            b.write_obs(self.attr_key, np.zeros(b.n_obs, dtype=np.int64))

    def _default_state(self, adata: Any) -> dict:
        b = self.backing(adata)
        zeros = da.zeros(b.n_obs, dtype=np.int8, chunks=1 << 22)
        if isinstance(b, MemoryBacking):
            mapping, codes = encode(b, self.attr_name, self.attr_key)
            b.write_obs(self.attr_key, codes)
        else:
            mapping = np.asarray([0])
            b.write_obs(self.attr_key, zeros)
        return {self.CATEGORICAL_MAPPING_KEY: mapping, self.ORIGINAL_ATTR_KEY: self.attr_key}

    # --- contract -----------------------------------------------------------------------------
    def validate_field(self, adata: Any) -> None:
        if self.is_default:
            return
        self.backing(adata).require(self.attr_name, self._original_attr_key)

    def _encode_into(self, adata: Any, mapping: np.ndarray | None) -> np.ndarray:
        b = self.backing(adata)
        mapping, codes = encode(b, self.attr_name, self._original_attr_key, mapping)
        b.write_obs(self.attr_key, codes)
        return mapping

    def register_field(self, adata: Any) -> dict:
        if self.is_default:
            self._setup_default_attr(adata)
            return self._default_state(adata)
        self.validate_field(adata)
        mapping = self._encode_into(adata, None)
        return {
            self.CATEGORICAL_MAPPING_KEY: mapping,
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
        }

    def extended_mapping(
        self, mapping: np.ndarray, adata_target: Any, extend_categories: bool
    ) -> np.ndarray:
        """The reference mapping with the target's new categories appended (or an error)."""
        present = present_values(
            self.backing(adata_target), self.attr_name, self._original_attr_key
        )
        missing = pd.Index(present).difference(pd.Index(mapping)).to_numpy()
        if len(missing) and not extend_categories:
            msg = (
                f"Category {missing[0]} not found in source registry. "
                "Cannot transfer setup without `extend_categories = True`."
            )
            raise CategoryTransferError(msg)
        return np.concatenate([mapping, missing])

    def transfer_field(
        self,
        state_registry: dict,
        adata_target: Any,
        extend_categories: bool = False,
        **kwargs: Any,
    ) -> dict:
        if self.is_default:
            self._setup_default_attr(adata_target)
            return self._default_state(adata_target)
        self.validate_field(adata_target)
        mapping = np.asarray(state_registry[self.CATEGORICAL_MAPPING_KEY]).copy()
        mapping = self.extended_mapping(mapping, adata_target, extend_categories)
        new_mapping = self._encode_into(adata_target, mapping)
        return {
            self.CATEGORICAL_MAPPING_KEY: new_mapping,
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
        }

    def get_summary_stats(self, state_registry: dict) -> dict:
        mapping = state_registry[self.CATEGORICAL_MAPPING_KEY]
        return {self.count_stat_key: len(np.unique(mapping))}

    def view_state_registry(self, state_registry: dict) -> Any:
        source = f"adata.{self.attr_name}['{state_registry[self.ORIGINAL_ATTR_KEY]}']"
        return categorical_mapping_table(
            self.registry_key, [(source, state_registry[self.CATEGORICAL_MAPPING_KEY])]
        )
