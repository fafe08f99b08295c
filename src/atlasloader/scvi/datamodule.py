"""``DataModule``: scvi-tools' models trained from atlasloader stores.

It meets scvi-tools' custom-datamodule contract (``model.train(datamodule=...)``, models built
with ``registry=``; scvi-tools 1.4, and 1.5 where it kept that contract):

- ``registry`` is the registry of scvi-tools' own ``setup_anndata`` (same fields, setup
  arguments and summary stats), built by atlasloader's fields on the lazy store, so persisted
  codes are reused and nothing is encoded per batch;
- ``n_vars``, ``n_batch``, ``n_labels``, ``n_continuous_cov``, ``n_cats_per_cov``, ``n_obs``,
  ``n_train``/``n_val`` and ``train_idx``/``val_idx``/``test_idx`` are what scvi-tools reads;
- batches are dicts keyed by registry key with scvi-tools' dtypes (``X`` float32,
  categoricals int64 ``(n, 1)``, continuous float32);
- for SCANVI, ``on_before_batch_transfer`` returns ``[batch, labelled rows of batch]``, the
  two-element form scvi-tools' semi-supervised training plan reads.

Everything is read through :class:`~atlasloader.AnnDataLoader`: the validation set is a random
set of cells, loaded chunk-aware like the training set, and memory stays bounded by the
loader's buffers whatever the store's size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import constants as C
from ..constants import REGISTRY_KEYS
from ..errors import InvalidArgumentError, MissingKeyError
from ..lightning.datamodule import DataModule as _BaseDataModule

_CATEGORICAL = (REGISTRY_KEYS.BATCH_KEY, REGISTRY_KEYS.LABELS_KEY, REGISTRY_KEYS.CAT_COVS_KEY)
# What scvi-tools' VAE modules read from every batch.
_REQUIRED = (REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.BATCH_KEY, REGISTRY_KEYS.LABELS_KEY)
AUTO = "auto"


def scvi_dtypes(manager: Any) -> dict[str, Any]:
    """scvi-tools' batch dtypes for the keys of ``manager``'s data registry."""
    return {key: np.int64 if key in _CATEGORICAL else np.float32 for key in manager.data_registry}


def scvi_registry(manager: Any) -> dict[str, Any]:
    """``manager``'s registry as scvi-tools' models take it (``registry=``).

    ``scvi_version`` names the installed scvi-tools (scvi-tools reads it to decide on
    backward-compatibility conversions) and ``setup_method_name`` is ``"setup_anndata"``: the
    registry is the one scvi-tools' own ``setup_anndata`` would have built.
    """
    registry = dict(manager.registry)
    try:
        import scvi

        registry[C.SCVI_VERSION_KEY] = scvi.__version__
    except ImportError:  # pragma: no cover - the registry is still usable to inspect
        pass
    registry["setup_method_name"] = "setup_anndata"
    return registry


def _open(store: Any) -> Any:
    from ..store.lazy import read_lazy

    if isinstance(store, str | os.PathLike):
        return read_lazy(store)
    return store  # a LazyAnnData or an in-memory AnnData


class DataModule(_BaseDataModule):
    """Train scvi-tools' models (SCVI, SCANVI, ...) from one or more atlasloader stores.

    Parameters
    ----------
    stores
        A store path or URL (``s3://...``), a :func:`~atlasloader.read_lazy` store, an
        in-memory AnnData, or a list of them loaded as one dataset (the first is registered,
        the others transferred onto it with ``extend_categories=True``).
    layer, batch_key, labels_key, size_factor_key
        See below and ``scvi.model.SCVI.setup_anndata``.
    categorical_covariate_keys, continuous_covariate_keys
        As in ``scvi.model.SCVI.setup_anndata``. ``size_factor_key="auto"`` (the default)
        takes library sizes from the store when ``var_subset`` trains on some genes only and
        ``atlasloader preprocess`` wrote ``obs['total_counts']``: the minibatch sum over the
        subset would undercount them. Otherwise, as scvi-tools, from the minibatch.
    var_subset
        Train on some genes only: a boolean var column (``"highly_variable"``) or gene names.
    unlabeled_category
        Set for SCANVI: register labels as ``scvi.model.SCANVI.setup_anndata`` does (the
        unlabeled category encoded last).
    train_size, validation_size, seed
        Random split of the cells (scvi-tools' ``DataSplitter`` sizes); ``seed`` also
        shuffles (epoch ``n`` uses ``(seed, n)``).
    batch_size
        Cells per minibatch.
    **loader_kwargs
        Passed to :class:`~atlasloader.AnnDataLoader` (``sparse=True`` ships CSR batches,
        densified on the device; ``num_workers``, ``rows_per_read``, ``pin_memory``...).

    Examples
    --------
    >>> dm = DataModule("atlas.zarr", batch_key="batch", var_subset="highly_variable")
    ... # doctest: +SKIP
    >>> model = scvi.model.SCVI(registry=dm.registry, n_latent=10)  # doctest: +SKIP
    >>> model.train(max_epochs=20, datamodule=dm)  # doctest: +SKIP
    >>> z = model.get_latent_representation(dataloader=dm.inference_dataloader())  # doctest: +SKIP
    """

    def __init__(
        self,
        stores: Any,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        size_factor_key: str | None = AUTO,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        var_subset: str | list[str] | None = None,
        *,
        unlabeled_category: str | int | float | None = None,
        train_size: float = 0.9,
        validation_size: float | None = None,
        batch_size: int = 128,
        seed: int = 0,
        **loader_kwargs: Any,
    ) -> None:
        from ..model import SCANVI, SCVI

        items = list(stores) if isinstance(stores, list | tuple) else [stores]
        if not items:
            raise InvalidArgumentError("stores is empty: give at least one store path or AnnData")
        adatas = [_open(s) for s in items]
        first = adatas[0]
        if size_factor_key == AUTO:
            size_factor_key = _auto_size_factor(first, var_subset)
        setup_args: dict[str, Any] = {
            "layer": layer,
            "batch_key": batch_key,
            "size_factor_key": size_factor_key,
            "categorical_covariate_keys": categorical_covariate_keys,
            "continuous_covariate_keys": continuous_covariate_keys,
            "var_subset": var_subset,
        }
        if unlabeled_category is not None:
            if labels_key is None:
                msg = (
                    "unlabeled_category is set (SCANVI) but labels_key is None: name the obs "
                    "column holding the labels, e.g. labels_key='cell_type'"
                )
                raise InvalidArgumentError(msg)
            setup: Any = SCANVI
            SCANVI.setup_anndata(first, labels_key, unlabeled_category, **setup_args)
        else:
            setup = SCVI
            SCVI.setup_anndata(first, labels_key=labels_key, **setup_args)
        manager = setup._get_most_recent_anndata_manager(first, required=True)
        managers = [manager]
        for other in adatas[1:]:
            managers.append(managers[-1].transfer_fields(other, extend_categories=True))
        self.unlabeled_category = unlabeled_category
        super().__init__(
            managers,
            train_size=train_size,
            validation_size=validation_size,
            batch_size=batch_size,
            data_and_attributes=scvi_dtypes(managers[-1]),
            seed=seed,
            **loader_kwargs,
        )

    @classmethod
    def from_manager(cls, adata_manager: Any, **kwargs: Any) -> _BaseDataModule:
        """A data module over managers registered elsewhere (e.g. by ``transfer_fields``).

        Checks the registry has what scvi-tools' modules read (``X``, ``batch``, ``labels``).
        """
        managers = adata_manager if isinstance(adata_manager, list | tuple) else [adata_manager]
        check_registry(managers[-1])
        dm = _BaseDataModule.__new__(cls)
        dm.unlabeled_category = (
            managers[-1].registry.get(C.SETUP_ARGS_KEY, {}).get("unlabeled_category")
        )
        _BaseDataModule.__init__(
            dm, list(managers), data_and_attributes=scvi_dtypes(managers[-1]), **kwargs
        )
        return dm

    def query(self, stores: Any, **kwargs: Any) -> _BaseDataModule:
        """A data module over query stores mapped onto this (reference) registry.

        Each query store is registered with ``transfer_fields(extend_categories=True)`` from
        this module's manager (new batches are appended to the mapping, as scvi-tools'
        ``load_query_data`` expects). Then::

            qdm = dm.query("query.zarr")
            q = scvi.model.SCVI.load_query_data(registry=qdm.registry, reference_model=model)
            q.train(max_epochs=10, datamodule=qdm, plan_kwargs={"weight_decay": 0.0})
        """
        items = list(stores) if isinstance(stores, list | tuple) else [stores]
        managers = [self.adata_manager]
        for other in items:
            managers.append(managers[-1].transfer_fields(_open(other), extend_categories=True))
        settings = {
            "batch_size": self.batch_size,
            "seed": self.seed,
            **self.loader_kwargs,
            **kwargs,
        }
        return type(self).from_manager(managers[1:], **settings)

    # --- what scvi-tools reads -----------------------------------------------------------------
    @property
    def adata_manager(self) -> Any:
        """The manager holding every category (the last store's)."""
        return self.adata_managers[-1]

    @property
    def registry(self) -> dict[str, Any]:
        """The registry for ``scvi.model.SCVI(registry=...)``."""
        return scvi_registry(self.adata_manager)

    @property
    def summary_stats(self) -> Any:
        return self.adata_manager.summary_stats

    @property
    def n_vars(self) -> int:
        return int(self.summary_stats["n_vars"])

    @property
    def n_batch(self) -> int:
        return int(self.summary_stats.get("n_batch", 1))

    @property
    def n_labels(self) -> int:
        return int(self.summary_stats.get("n_labels", 1))

    @property
    def n_continuous_cov(self) -> int:
        return int(self.summary_stats.get("n_extra_continuous_covs", 0))

    @property
    def n_cats_per_cov(self) -> tuple[int, ...] | None:
        key = REGISTRY_KEYS.CAT_COVS_KEY
        if key not in self.adata_manager.data_registry:
            return None
        return tuple(self.adata_manager.get_state_registry(key)["n_cats_per_key"])

    @property
    def labels(self) -> np.ndarray:
        """Every cell's original label (what SCANVI compares with its unlabeled category).

        Read from the persisted codes (a few bytes per cell), mapped through the registry.
        """
        parts = []
        for m in self.adata_managers:
            codes = np.asarray(_compute(m.get_from_registry(REGISTRY_KEYS.LABELS_KEY))).ravel()
            parts.append(codes)
        mapping = np.asarray(
            self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)["categorical_mapping"]
        )
        return mapping[np.concatenate(parts).astype(np.int64)]

    def _unlabeled_code(self) -> int | None:
        if self.unlabeled_category is None:
            return None
        mapping = list(
            self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)["categorical_mapping"]
        )
        return (
            mapping.index(self.unlabeled_category) if self.unlabeled_category in mapping else None
        )

    # --- batches --------------------------------------------------------------------------------
    def inference_dataloader(
        self, indices: Any = None, batch_size: int | None = None, **overrides: Any
    ) -> Any:
        """Every cell (or ``indices``) in store order: for ``get_latent_representation``.

        Batches are dense unless a ``device`` is given (scvi-tools' inference reads them
        without Lightning's hooks).
        """
        if "device" not in overrides and "device" not in self.loader_kwargs:
            overrides.setdefault("sparse", False)
        return super().inference_dataloader(indices, batch_size, **overrides)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        batch = super().on_before_batch_transfer(batch, dataloader_idx)
        code = self._unlabeled_code()
        if code is None or not isinstance(batch, dict):
            return batch
        labelled = (batch[REGISTRY_KEYS.LABELS_KEY].view(-1) != code).nonzero().view(-1)
        if labelled.numel() == 0:
            return batch  # no labelled cell in this batch: the unsupervised loss only
        sub = {k: _rows(v, labelled) for k, v in batch.items()}
        return [batch, sub]


def _rows(t: Any, rows: Any) -> Any:
    if getattr(t, "is_sparse_csr", False):
        t = t.to_dense()
    return t.index_select(0, rows)


def _compute(x: Any) -> Any:
    return x.compute() if hasattr(x, "compute") else x


def _auto_size_factor(adata: Any, var_subset: Any) -> str | None:
    if var_subset is None:
        return None
    from ..store.backing import backing_of

    has = backing_of(adata).has("obs", "total_counts")
    return "total_counts" if has else None


def check_registry(manager: Any, required: Sequence[str] = _REQUIRED) -> None:
    """Raise :class:`~atlasloader.errors.MissingKeyError` if a key scvi-tools reads is missing."""
    keys = list(manager.data_registry.keys())
    missing = [k for k in required if k not in keys]
    if missing:
        model = manager.registry.get(C.MODEL_NAME_KEY)
        msg = (
            f"the registry (made by {model!r}) has no {missing} key(s), which scvi-tools' "
            f"models read from every batch (it has {keys}). Register the store with "
            "atlasloader.model.SCVI.setup_anndata (or SCANVI's), or use "
            "atlasloader.scvi.DataModule(store, batch_key=..., labels_key=...)"
        )
        raise MissingKeyError(msg)


def scanvi_from_scvi_model(scvi_model: Any, datamodule: DataModule, **scanvi_kwargs: Any) -> Any:
    """``scvi.model.SCANVI.from_scvi_model`` for a model trained from a data module.

    scvi-tools 1.4.2's ``from_scvi_model`` builds the SCANVI model on the SCVI model's
    registry, which has no unlabeled category, whatever ``registry`` is given; this builds it
    on ``datamodule``'s SCANVI registry (``DataModule(..., unlabeled_category=...)``) with the
    SCVI model's architecture and copies its weights, as ``from_scvi_model`` does.
    """
    import scvi

    if datamodule.unlabeled_category is None:
        msg = (
            "the data module has no unlabeled_category: build it for SCANVI with "
            "atlasloader.scvi.DataModule(store, labels_key=..., unlabeled_category='Unknown')"
        )
        raise InvalidArgumentError(msg)
    scvi_model._check_if_trained(message="Passed in scvi model hasn't been trained yet.")
    init = scvi_model.init_params_
    params = {**init["non_kwargs"], **{k: v for d in init["kwargs"].values() for k, v in d.items()}}
    params.update(scanvi_kwargs)
    model = scvi.model.SCANVI(registry=datamodule.registry, datamodule=datamodule, **params)
    model.module.load_state_dict(scvi_model.module.state_dict(), strict=False)
    model.was_pretrained = True
    return model
