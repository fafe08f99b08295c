"""``SCANVI``: the registration of scvi-tools' ``SCANVI.setup_anndata`` (with unlabeled cells).

Labels are encoded with the unlabeled category last, as scvi-tools does; SCVI sorts them. On a
store both encodings live in ``obs/_scvi_labels``: each registry checks the column's ownership
token before its codes are read, and re-registers when the other setup re-encoded it.
"""

from __future__ import annotations

from typing import Any

from ..constants import REGISTRY_KEYS
from ..fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LabelsWithUnlabeledObsField,
    LayerField,
    NumericalJointObsField,
    NumericalObsField,
)
from ..manager import AnnDataManager
from .base import SetupMixin


class SCANVI(SetupMixin):
    """Registration with ``SCANVI.setup_anndata(adata, labels_key, unlabeled_category, ...)``.

    Examples
    --------
    >>> SCANVI.setup_anndata(store, "cell_type", "Unknown", batch_key="batch")  # doctest: +SKIP
    >>> scvi.model.SCANVI(registry=SCANVI(store).registry, ...)  # doctest: +SKIP
    """

    @property
    def registry(self) -> dict:
        """The registry, as ``scvi.model.SCANVI(registry=...)`` takes it."""
        return self.adata_manager.registry

    @classmethod
    def setup_anndata(
        cls,
        adata: Any,
        labels_key: str,
        unlabeled_category: str | int | float,
        layer: str | None = None,
        batch_key: str | None = None,
        size_factor_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        var_subset: str | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Register ``adata`` (in memory or a store from ``read_lazy``) as scvi-tools' SCANVI."""
        setup_method_args = cls._get_setup_method_args(**locals())
        if var_subset is None:
            setup_method_args["setup_args"].pop("var_subset")
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True, var_subset=var_subset),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            LabelsWithUnlabeledObsField(REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category),
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, required=False),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)
