"""A compact example model with scvi-tools' ``SCVI.setup_anndata`` signature.

It exists to show (and test) the setup pattern and to give ``atlasloader demo`` something to
train: a small Poisson autoencoder with batch-aware decoder, not scvi-tools' variational SCVI.
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
    """Example model: ``SCVI.setup_anndata(adata, ...)`` then ``SCVI(adata).train()``.

    Examples
    --------
    >>> SCVI.setup_anndata(adata, layer="raw_counts", batch_key="batch")  # doctest: +SKIP
    >>> model = SCVI(adata)  # doctest: +SKIP
    >>> model.view_anndata_setup()  # doctest: +SKIP
    """

    def __init__(self, adata: Any, n_latent: int = 10, n_hidden: int = 128) -> None:
        super().__init__(adata)
        self.n_latent = n_latent
        self.n_hidden = n_hidden
        self.module: Any = None
        self.history: list[float] = []

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

    def _build(self) -> Any:
        from torch import nn

        n_vars = int(self.summary_stats["n_vars"])
        n_batch = int(self.summary_stats.get("n_batch", 1))
        return _PoissonAE(n_vars, n_batch, self.n_hidden, self.n_latent, nn)

    def train(
        self,
        max_epochs: int = 5,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
        **loader_kwargs: Any,
    ) -> list[float]:
        """Train on shuffled minibatches; returns the mean loss per epoch."""
        import torch

        from ..loading import AnnDataLoader

        torch.manual_seed(seed)
        if self.module is None:
            self.module = self._build()
        opt = torch.optim.Adam(self.module.parameters(), lr=lr)
        loader = AnnDataLoader(
            self.adata_manager,
            shuffle=True,
            batch_size=batch_size,
            seed=seed,
            data_and_attributes=[REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.BATCH_KEY],
            **loader_kwargs,
        )
        for epoch in range(max_epochs):
            loader.set_epoch(epoch)
            total, n = 0.0, 0
            for batch in loader:
                loss = self.module.loss(batch[REGISTRY_KEYS.X_KEY], batch[REGISTRY_KEYS.BATCH_KEY])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(batch[REGISTRY_KEYS.X_KEY])
                n += len(batch[REGISTRY_KEYS.X_KEY])
            self.history.append(total / max(n, 1))
        return self.history


class _PoissonAE:
    """Encoder on log1p counts, batch-conditioned softmax decoder, Poisson likelihood."""

    def __new__(cls, n_vars: int, n_batch: int, n_hidden: int, n_latent: int, nn: Any) -> Any:
        import torch

        class Module(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.n_batch = n_batch
                self.encoder = nn.Sequential(
                    nn.Linear(n_vars, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_latent)
                )
                self.decoder = nn.Linear(n_latent + n_batch, n_vars)

            def loss(self, x: Any, batch: Any) -> Any:
                x = x.to_dense() if x.is_sparse_csr else x
                lib = x.sum(1, keepdim=True).clamp(min=1.0)
                z = self.encoder(torch.log1p(x))
                onehot = nn.functional.one_hot(batch.long().view(-1), self.n_batch).float()
                rate = torch.softmax(self.decoder(torch.cat([z, onehot], 1)), -1) * lib
                return nn.functional.poisson_nll_loss(rate, x, log_input=False, reduction="mean")

        return Module()
