"""Joint obs fields: several obs columns gathered into one ``obsm['_scvi_<key>']`` matrix."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import pandas as pd

from .. import constants as C
from ..registry.display import categorical_mapping_table, source_locations_table
from ..store.backing import MemoryBacking, ZarrBacking
from ._codes import categories_of, code_dtype, encode, present_values
from .base import BaseAnnDataField
from .numerical import check_numeric, raise_missing


class _JointObsField(BaseAnnDataField):
    _attr_name = C.ADATA_ATTRS.OBSM
    source_attr_name = C.ADATA_ATTRS.OBS

    def __init__(self, registry_key: str, attr_keys: list[str] | None, required: bool = True):
        self._registry_key = registry_key
        self._attr_key = f"_scvi_{registry_key}"
        self._attr_keys = list(attr_keys) if attr_keys is not None else []
        self._required = required
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
    def attr_keys(self) -> list[str]:
        """The obs columns that make up this joint field."""
        return self._attr_keys

    @property
    def required(self) -> bool:
        return self._required

    @property
    def is_empty(self) -> bool:
        return len(self._attr_keys) == 0

    def input_locations(self) -> list[tuple[str, str | None]]:
        return [(self.source_attr_name, k) for k in self._attr_keys]

    def output_locations(self) -> list[tuple[str, str | None]]:
        return [] if self.is_empty else [(self.attr_name, self.attr_key)]

    def validate_field(self, adata: Any) -> None:
        b = self.backing(adata)
        available = b.keys(self.source_attr_name)
        for key in self._attr_keys:
            if key not in available:
                raise_missing(self.source_attr_name, key, available)

    def get_summary_stats(self, state_registry: dict) -> dict:
        return {self.count_stat_key: len(self._attr_keys)}


class NumericalJointObsField(_JointObsField):
    """Numeric obs columns (continuous covariates) as one ``obsm`` matrix.

    Examples
    --------
    >>> NumericalJointObsField("extra_continuous_covs", ["age"]).attr_key
    '_scvi_extra_continuous_covs'
    """

    COLUMNS_KEY = "columns"

    def register_field(self, adata: Any) -> dict:
        self.validate_field(adata)
        b = self.backing(adata)
        for key in self._attr_keys:
            check_numeric(b, self.source_attr_name, key)
        if isinstance(b, MemoryBacking):
            frame = b.adata.obs[self._attr_keys].copy()
            b.write_obsm(self.attr_key, frame, self._attr_keys)
        else:
            assert isinstance(b, ZarrBacking)
            cols = [b.column(self.source_attr_name, k).values for k in self._attr_keys]
            dtype = np.result_type(*[c.dtype for c in cols], np.float32)
            b.write_obsm(
                self.attr_key, da.stack([c.astype(dtype) for c in cols], axis=1), self._attr_keys
            )
        return {self.COLUMNS_KEY: np.asarray(self._attr_keys, dtype=object)}

    def transfer_field(self, state_registry: dict, adata_target: Any, **kwargs: Any) -> dict:
        return self.register_field(adata_target)

    def view_state_registry(self, state_registry: dict) -> Any:
        if self.is_empty:
            return None
        return source_locations_table(
            self.registry_key,
            [f"adata.{self.source_attr_name}['{k}']" for k in state_registry[self.COLUMNS_KEY]],
        )


class CategoricalJointObsField(_JointObsField):
    """Categorical obs columns (categorical covariates), each encoded, as one ``obsm`` matrix.

    Examples
    --------
    >>> CategoricalJointObsField("extra_categorical_covs", ["donor", "assay"]).attr_keys
    ['donor', 'assay']
    """

    MAPPINGS_KEY = "mappings"
    FIELD_KEYS_KEY = "field_keys"
    N_CATS_PER_KEY = "n_cats_per_key"

    def _encode_all(self, adata: Any, category_dict: dict[str, np.ndarray] | None) -> dict:
        b = self.backing(adata)
        mappings: dict[str, np.ndarray] = {}
        codes: dict[str, Any] = {}
        for key in self._attr_keys:
            given = None if category_dict is None else np.asarray(category_dict[key])
            mappings[key], codes[key] = encode(b, self.source_attr_name, key, given)
        if isinstance(b, MemoryBacking):
            frame = pd.DataFrame(
                {k: np.asarray(codes[k]) for k in self._attr_keys}, index=b.adata.obs_names
            )
            b.write_obsm(self.attr_key, frame, self._attr_keys)
        else:
            dtype = code_dtype(max(len(m) for m in mappings.values()))
            stacked = da.stack([codes[k].astype(dtype) for k in self._attr_keys], axis=1)
            b.write_obsm(self.attr_key, stacked, self._attr_keys)
        return {
            self.MAPPINGS_KEY: mappings,
            self.FIELD_KEYS_KEY: list(self._attr_keys),
            self.N_CATS_PER_KEY: [len(mappings[k]) for k in self._attr_keys],
        }

    def register_field(self, adata: Any) -> dict:
        self.validate_field(adata)
        return self._encode_all(adata, None)

    def transfer_field(
        self,
        state_registry: dict,
        adata_target: Any,
        extend_categories: bool = False,
        **kwargs: Any,
    ) -> dict:
        if self.is_empty:
            return {}
        self.validate_field(adata_target)
        b = self.backing(adata_target)
        source = {k: np.asarray(v) for k, v in state_registry[self.MAPPINGS_KEY].items()}
        if extend_categories:
            for key, mapping in source.items():
                present = present_values(b, self.source_attr_name, key)
                new = pd.Index(present).difference(pd.Index(mapping)).to_numpy()
                source[key] = np.concatenate([mapping, new])
        return self._encode_all(adata_target, source)

    def view_state_registry(self, state_registry: dict) -> Any:
        if self.is_empty:
            return None
        rows = [
            (f"adata.{self.source_attr_name}['{k}']", m)
            for k, m in state_registry[self.MAPPINGS_KEY].items()
        ]
        return categorical_mapping_table(self.registry_key, rows, blank_after=True)


__all__ = ["CategoricalJointObsField", "NumericalJointObsField", "categories_of"]
