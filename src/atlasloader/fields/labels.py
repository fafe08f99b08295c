"""``LabelsWithUnlabeledObsField``: labels whose unlabeled category is encoded last."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import InvalidTypeError
from ..store.backing import MemoryBacking
from ._codes import categories_of, present_values
from .categorical import CategoricalObsField


class LabelsWithUnlabeledObsField(CategoricalObsField):
    """Categorical labels where ``unlabeled_category`` always takes the final code.

    Parameters
    ----------
    registry_key
        Key to register the field under.
    obs_key
        Source obs column.
    unlabeled_category
        The value marking unlabeled cells.

    Examples
    --------
    >>> LabelsWithUnlabeledObsField("labels", "cell_type", "Unknown").registry_key
    'labels'
    """

    UNLABELED_CATEGORY = "unlabeled_category"

    def __init__(
        self, registry_key: str, obs_key: str | None, unlabeled_category: str | int | float
    ) -> None:
        super().__init__(registry_key, obs_key)
        self._unlabeled_category = unlabeled_category

    def _remap(self, adata: Any, mapping: np.ndarray) -> dict:
        mapping = np.asarray(mapping).copy()
        present = present_values(self.backing(adata), self.attr_name, self._original_attr_key)
        if self._unlabeled_category in set(present.tolist()):
            i = int(np.flatnonzero(mapping == self._unlabeled_category)[0])
            mapping[i], mapping[-1] = mapping[-1], mapping[i]
        elif self._unlabeled_category not in set(mapping.tolist()):
            mapping = np.asarray([*list(mapping), self._unlabeled_category])
        mapping = self._encode_into(adata, mapping)
        return {
            self.CATEGORICAL_MAPPING_KEY: mapping,
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
            self.UNLABELED_CATEGORY: self._unlabeled_category,
        }

    def register_field(self, adata: Any) -> dict:
        # Compute the mapping first and encode once: on a store each encode is a write.
        self.validate_field(adata)
        mapping = categories_of(self.backing(adata), self.attr_name, self._original_attr_key)
        return self._remap(adata, mapping)

    def transfer_field(
        self,
        state_registry: dict,
        adata_target: Any,
        extend_categories: bool = False,
        allow_missing_labels: bool = False,
        **kwargs: Any,
    ) -> dict:
        # extend_categories is accepted and ignored: query labels never extend the reference.
        b = self.backing(adata_target)
        if allow_missing_labels and not b.has(self.attr_name, self._original_attr_key):
            if not isinstance(b, MemoryBacking):
                msg = (
                    f"labels column {self._original_attr_key!r} is missing from the store; "
                    "filling it in is only supported in memory (the user's store is not "
                    "changed): add the column before converting the store"
                )
                raise InvalidTypeError(msg)
            warnings.warn(
                f"Missing labels key {self._original_attr_key}. Filling in with "
                f"unlabeled category {self._unlabeled_category}.",
                UserWarning,
                stacklevel=2,
            )
            b.write_obs(self._original_attr_key, self._unlabeled_category)
        # Query labels never extend the reference's categories.
        self.validate_field(adata_target)
        mapping = np.asarray(state_registry[self.CATEGORICAL_MAPPING_KEY]).copy()
        mapping = self.extended_mapping(mapping, adata_target, extend_categories=False)
        return self._remap(adata_target, mapping)
