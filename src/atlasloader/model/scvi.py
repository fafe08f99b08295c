"""``SCVI``: scvi-tools' ``SCVI.setup_anndata`` registration, for stores and AnnData in memory.

This class registers data exactly as ``scvi.model.SCVI.setup_anndata`` does (same fields,
setup arguments and printed tables; ``model_name`` "SCVI", so ``scvi.model.SCVI`` accepts the
registry). It is not a model: train scvi-tools' own ``scvi.model.SCVI`` from a store with
:class:`atlasloader.scvi.DataModule`, or the small example model
:class:`atlasloader.model.PoissonAE` without scvi-tools.
"""

from __future__ import annotations

from typing import Any

from ..constants import REGISTRY_KEYS
from ..fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
    NumericalObsField,
)
from ..manager import AnnDataManager
from .base import SetupMixin


class SCVI(SetupMixin):
    """Registration with ``SCVI.setup_anndata(adata, ...)``; ``SCVI(adata)`` holds its registry.

    Examples
    --------
    >>> SCVI.setup_anndata(adata, layer="raw_counts", batch_key="batch")  # doctest: +SKIP
    >>> model = SCVI(adata)  # doctest: +SKIP
    >>> model.view_anndata_setup()  # doctest: +SKIP
    >>> scvi.model.SCVI(registry=model.registry)  # doctest: +SKIP
    """

    @property
    def registry(self) -> dict:
        """The registry, as ``scvi.model.SCVI(registry=...)`` takes it."""
        return self.adata_manager.registry

    @classmethod
    def setup_anndata(
        cls,
        adata: Any,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        size_factor_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        var_subset: str | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Register ``adata`` (in memory or a store from ``read_lazy``) for this model.

        ``var_subset`` (an atlasloader addition) trains on some genes only: a boolean ``var``
        column such as ``"highly_variable"`` or a list of genes (see ``LayerField``).
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if var_subset is None:  # the seed's setup args exactly, unless the addition is used
            setup_method_args["setup_args"].pop("var_subset")
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True, var_subset=var_subset),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, required=False),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)
