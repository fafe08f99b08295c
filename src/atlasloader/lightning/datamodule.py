"""``DataModule``: a ``LightningDataModule`` over atlasloader's loader, for any model.

Train, validation and test sets are given as cell indices (or split at random from the
store, see :func:`random_split`); each set is read chunk-aware by its own
:class:`~atlasloader.AnnDataLoader`, so a validation set of random cells costs no more than
the training set. Lightning selects each epoch's order through ``loader.sampler.set_epoch``,
every DDP rank reads a disjoint shard re-dealt each epoch (rank and world size are taken when
iteration starts, after Lightning initialised the process group), and the data module's
``state_dict`` (saved in every checkpoint) resumes a run mid-epoch with exactly the cells not
yet trained on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .loader import TrainLoader

try:  # Lightning is an optional dependency (extra "scvi" or "lightning")
    from lightning.pytorch import LightningDataModule
except ImportError:  # pragma: no cover - exercised only without lightning
    from ..errors import MissingDependencyError

    class LightningDataModule:  # type: ignore[no-redef]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            msg = (
                "atlasloader's Lightning data modules need lightning: "
                "pip install 'atlasloader[scvi]' (or pip install lightning)"
            )
            raise MissingDependencyError(msg)


def random_split(
    n_obs: int,
    train_size: float = 0.9,
    validation_size: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted train, validation and test cell ids: a random partition of ``range(n_obs)``.

    Sizes follow scvi-tools' ``DataSplitter``: ``ceil(train_size * n)`` training cells,
    ``floor(validation_size * n)`` validation cells (default: all the rest), the rest test.

    Examples
    --------
    >>> tr, va, te = random_split(10, 0.8, seed=0)
    >>> len(tr), len(va), len(te), sorted([*tr, *va, *te]) == list(range(10))
    (8, 2, 0, True)
    """
    if not 0.0 < float(train_size) <= 1.0:
        raise InvalidArgumentError(f"train_size must be in (0, 1], got {train_size!r}")
    if validation_size is not None and not 0.0 <= float(validation_size) <= 1.0:
        raise InvalidArgumentError(f"validation_size must be in [0, 1], got {validation_size!r}")
    if validation_size is not None and float(train_size) + float(validation_size) > 1.0 + 1e-9:
        msg = f"train_size + validation_size must be <= 1, got {train_size} + {validation_size}"
        raise InvalidArgumentError(msg)
    n_train = math.ceil(float(train_size) * n_obs)
    n_val = (
        n_obs - n_train
        if validation_size is None
        else min(n_obs - n_train, math.floor(float(validation_size) * n_obs))
    )
    if n_train == 0:
        raise InvalidArgumentError(f"train_size={train_size} leaves no training cells of {n_obs}")
    perm = np.random.default_rng(seed).permutation(n_obs)
    parts = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    return tuple(np.sort(p).astype(np.int64) for p in parts)  # type: ignore[return-value]


class DataModule(LightningDataModule):
    """Lightning data module over registered atlasloader managers.

    Parameters
    ----------
    adata_manager
        A registered :class:`~atlasloader.AnnDataManager`, or a list of them (several stores
        as one dataset, see :class:`~atlasloader.AnnDataLoader`).
    train_indices, validation_indices, test_indices
        Cell ids of each set. ``train_indices=None`` splits all cells at random with
        ``train_size``, ``validation_size`` and ``seed`` (:func:`random_split`).
    batch_size
        Cells per minibatch.
    data_and_attributes
        ``{registry key: dtype}`` of what each batch holds (default: every key, float32).
    seed
        Seed of the split and of the shuffling (epoch ``n`` uses ``(seed, n)``).
    drop_last
        Drop each epoch's incomplete last training batch.
    **loader_kwargs
        Passed to every :class:`~atlasloader.AnnDataLoader` (``sparse``, ``num_workers``,
        ``rows_per_read``, ``pin_memory``...).

    Examples
    --------
    >>> dm = DataModule(manager, batch_size=512)  # doctest: +SKIP
    >>> trainer.fit(my_lightning_module, datamodule=dm)  # doctest: +SKIP
    """

    def __init__(
        self,
        adata_manager: Any,
        train_indices: Any = None,
        validation_indices: Any = None,
        test_indices: Any = None,
        *,
        train_size: float = 0.9,
        validation_size: float | None = None,
        batch_size: int = 128,
        data_and_attributes: Mapping[str, Any] | Sequence[str] | None = None,
        seed: int = 0,
        drop_last: bool = False,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__()
        self.adata_managers = (
            list(adata_manager) if isinstance(adata_manager, list | tuple) else [adata_manager]
        )
        self.n_obs = sum(int(m.adata.n_obs) for m in self.adata_managers)
        if train_indices is None:
            train_indices, validation_indices, test_indices = random_split(
                self.n_obs, train_size, validation_size, seed
            )
        self.train_idx = _ids(train_indices)
        self.val_idx = _ids(validation_indices)
        self.test_idx = _ids(test_indices)
        self.n_train, self.n_val = int(self.train_idx.size), int(self.val_idx.size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.data_and_attributes = data_and_attributes
        self.loader_kwargs = dict(loader_kwargs)
        self._train: TrainLoader | None = None
        self._pending_state: dict[str, Any] | None = None

    # --- loaders -------------------------------------------------------------------------------
    def make_loader(self, indices: Any, shuffle: bool, **overrides: Any) -> Any:
        """An :class:`~atlasloader.AnnDataLoader` over ``indices`` with this module's settings."""
        from ..loading import AnnDataLoader

        kwargs = {
            "batch_size": self.batch_size,
            "seed": self.seed,
            "data_and_attributes": self.data_and_attributes,
            **self.loader_kwargs,
            **overrides,
        }
        manager = self.adata_managers if len(self.adata_managers) > 1 else self.adata_managers[0]
        return AnnDataLoader(manager, indices=indices, shuffle=shuffle, **kwargs)

    @property
    def train_loader(self) -> TrainLoader:
        """The training loader (one object for the whole fit, so its state is kept)."""
        if self._train is None:
            self._train = TrainLoader(
                self.make_loader(self.train_idx, shuffle=True, drop_last=self.drop_last)
            )
            if self._pending_state is not None:
                self._train.load_state_dict(self._pending_state)
                self._pending_state = None
        return self._train

    def train_dataloader(self) -> TrainLoader:
        return self.train_loader

    def val_dataloader(self) -> Any:
        return self.make_loader(self.val_idx, shuffle=False) if self.n_val else []

    def test_dataloader(self) -> Any:
        return self.make_loader(self.test_idx, shuffle=False) if self.test_idx.size else []

    def predict_dataloader(self) -> Any:
        return self.inference_dataloader()

    def inference_dataloader(
        self, indices: Any = None, batch_size: int | None = None, **overrides: Any
    ) -> Any:
        """Every cell (or ``indices``) in store order, on this process only (not sharded)."""
        overrides.setdefault("rank", 0)
        overrides.setdefault("world_size", 1)
        return self.make_loader(
            None if indices is None else _ids(indices),
            shuffle=False,
            batch_size=batch_size or self.batch_size,
            **overrides,
        )

    # --- Lightning hooks -----------------------------------------------------------------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training and self._train is not None:
            # Called for the batch about to be trained on, after Lightning's one-ahead fetch.
            self._train.consumed(1)
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Sparse CSR batches travel as their three arrays and are densified on the device.
        return _densify(batch)

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position: ``{"epoch", "seed", "batches_yielded"}``."""
        if self._train is None:
            return dict(self._pending_state or {})
        return self._train.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if not state_dict:
            return
        if self._train is None:
            self._pending_state = dict(state_dict)
        else:
            self._train.load_state_dict(state_dict)


def _densify(batch: Any) -> Any:
    if isinstance(batch, dict):
        return {k: _densify(v) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_densify(v) for v in batch)
    if getattr(batch, "is_sparse_csr", False):
        return batch.to_dense()
    return batch


def _ids(indices: Any) -> np.ndarray:
    if indices is None:
        return np.zeros(0, dtype=np.int64)
    arr = np.asarray(indices)
    if arr.dtype == bool:
        return np.flatnonzero(arr).astype(np.int64)
    return np.unique(arr.astype(np.int64))
