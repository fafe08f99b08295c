"""``PoissonAE``: a compact example model trained straight from atlasloader's loader.

It shows (and tests) the setup pattern without scvi-tools: a Poisson autoencoder on log1p
counts with a batch-conditioned decoder, registered with :class:`~atlasloader.model.SCVI`'s
``setup_anndata`` arguments. To train scvi-tools' own models use :mod:`atlasloader.scvi`.
"""

from __future__ import annotations

from typing import Any

from ..constants import REGISTRY_KEYS
from .scvi import SCVI


class PoissonAE(SCVI):
    """Example model: ``PoissonAE.setup_anndata(adata, ...)`` then ``PoissonAE(adata).train()``.

    Examples
    --------
    >>> PoissonAE.setup_anndata(adata, batch_key="batch")  # doctest: +SKIP
    >>> PoissonAE(adata).train(max_epochs=2)  # doctest: +SKIP
    """

    def __init__(self, adata: Any, n_latent: int = 10, n_hidden: int = 128) -> None:
        super().__init__(adata)
        self.n_latent = n_latent
        self.n_hidden = n_hidden
        self.module: Any = None
        self.history: list[float] = []

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
