"""Code the Lightning tests run in other processes, and the model they all train.

``python _ddp_train.py STORE OUT_DIR [EPOCHS BATCH_SIZE]`` trains :class:`Recorder` with
Lightning's ``"ddp"`` strategy on two CPU processes (gloo). The strategy re-launches this
script once for rank 1, so it has to be a standalone script, not a function of the test.
Each rank writes ``OUT_DIR/rank{r}.json``: ``{"rank", "world_size", "train_idx",
"epoch_end", "lengths", "epochs": {epoch: [ind_x of each trained batch, in order]}}``. The test
registered the store already; each rank opens it read-only and reuses that registration (two
ranks persisting encodings into one store at once would race).

:func:`shard_worker` is the body of the processes ``test_ddp.py`` spawns itself to check that a
loader built before ``torch.distributed`` was initialised shards once it is.

This folder has no ``__init__.py``, unlike the other test folders: as a package named
``lightning`` (pytest puts ``tests/`` on ``sys.path``) it would shadow the real ``lightning``.
Without it pytest imports these modules by their file names, from this folder.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

import atlasloader
from atlasloader.fields import CategoricalObsField, LayerField

QUIET_TRAINER = {
    "accelerator": "cpu",
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "logger": False,
}


def register(path: str | os.PathLike[str], mode: str = "r+") -> atlasloader.AnnDataManager:
    """A manager over the store at ``path`` with ``X`` and ``obs["batch"]`` registered."""
    manager = atlasloader.AnnDataManager(
        fields=[LayerField("X", None), CategoricalObsField("batch", "batch")]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manager.register_fields(atlasloader.read_lazy(path, mode=mode))
    return manager


def flat(batches: list[list[int]]) -> np.ndarray:
    """Cell ids of a list of batches, concatenated in order."""
    return np.asarray([i for b in batches for i in b], dtype=np.int64)


class Recorder(pl.LightningModule):
    """A linear layer on ``log1p(X)``; records the ``ind_x`` of every batch it trains on.

    ``seen[epoch]`` and ``validated[epoch]`` hold one list of cell ids per batch, in order;
    ``sanity`` the batches of Lightning's sanity check (before the first epoch).
    """

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(n_genes, 1)
        self.seen: dict[int, list[list[int]]] = {}
        self.validated: dict[int, list[list[int]]] = {}
        self.sanity: list[list[int]] = []

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear(torch.log1p(batch["X"])).pow(2).mean()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        ids = batch["ind_x"].reshape(-1).tolist()
        self.seen.setdefault(int(self.current_epoch), []).append(ids)
        return self._loss(batch)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        ids = batch["ind_x"].reshape(-1).tolist()
        if self.trainer.sanity_checking:
            self.sanity.append(ids)
        else:
            self.validated.setdefault(int(self.current_epoch), []).append(ids)
        self.log("val_loss", self._loss(batch), batch_size=len(ids))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def make_datamodule(manager: Any, batch_size: int) -> atlasloader.lightning.DataModule:
    """90 % training cells, 10 % validation cells, ``ind_x`` in every batch."""
    return atlasloader.lightning.DataModule(
        manager,
        train_size=0.9,
        validation_size=0.1,
        batch_size=batch_size,
        seed=0,
        load_indices=True,
        num_threads=1,
    )


def train_ddp(store: str, out_dir: str, epochs: int, batch_size: int) -> None:
    torch.set_num_threads(1)
    manager = register(store, mode="r")
    dm = make_datamodule(manager, batch_size)
    module = Recorder(int(manager.adata.n_vars))
    trainer = pl.Trainer(
        devices=2,
        strategy="ddp",
        max_epochs=epochs,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **QUIET_TRAINER,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=dm)
    record = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "train_idx": dm.train_idx.tolist(),
        "epoch_end": dm.train_loader.epoch,
        "lengths": len(dm.train_loader),
        "epochs": {str(e): batches for e, batches in module.seen.items()},
    }
    (Path(out_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def shard_worker(rank: int, world_size: int, port: int, loaders: list[Any], out_dir: str) -> None:
    """Join a gloo group, then iterate each loader (built before the group) for two epochs."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        record = []
        for loader in loaders:
            epochs = []
            for _ in range(2):
                epochs.append(flat([b["ind_x"].reshape(-1).tolist() for b in loader]))
            record.append({"len": len(loader), "epochs": [e.tolist() for e in epochs]})
        dist.barrier()
    finally:
        dist.destroy_process_group()
    (Path(out_dir) / f"shard{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    args = sys.argv[1:]
    train_ddp(
        args[0],
        args[1],
        int(args[2]) if len(args) > 2 else 2,
        int(args[3]) if len(args) > 3 else 100,
    )
