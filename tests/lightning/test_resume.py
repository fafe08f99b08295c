"""Epochs and mid-epoch resumption under a real Lightning ``Trainer`` (one process).

Lightning fetches one batch ahead of the training step, restores the data module's
``state_dict`` (and, since ``TrainLoader`` is stateful, the combined loader's) from the
checkpoint, and selects each epoch with ``sampler.set_epoch``. A run resumed from a checkpoint
taken after step ``k`` must train on exactly the cells of that epoch not trained on before the
checkpoint (none repeated, none skipped), in the order the uninterrupted run used, then go on
with full, differently shuffled epochs.

Checkpoints are taken after training steps (``every_n_train_steps``) and at the end of
validations run mid-epoch (``val_check_interval``), including both right after an epoch's last
batch. Lightning 2.6 does not fetch ahead of a loader with a ``len`` (its
``_PrefetchDataFetcher`` prefetches only unsized ones), so here the loader's own count already
equals the trained batches; ``TrainLoader``'s count is what keeps that true where Lightning
does fetch ahead.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("lightning")

import lightning.pytorch as pl
from _ddp_train import QUIET_TRAINER, Recorder, flat, make_datamodule, register
from lightning.pytorch.callbacks import ModelCheckpoint

from atlasloader import AnnDataLoader
from atlasloader.data import make_atlas_store

N_CELLS, N_GENES, BATCH = 2000, 50, 100
N_TRAIN, N_VAL = 1800, 200
BATCHES = N_TRAIN // BATCH  # 18 training batches per epoch
EPOCHS = 3
EVERY = 6  # step checkpoints after steps 6, 12, 18 (the last batch of epoch 0), 24, ...
VAL_EVERY = 9  # validation (and a checkpoint at its end) after batches 9 and 18 of each epoch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "atlas.zarr"
    make_atlas_store(
        path,
        n_cells=N_CELLS,
        n_genes=N_GENES,
        n_batches=2,
        n_labels=2,
        nnz_per_cell=10,
        seed=0,
        chunk_rows=16,
    )
    register(path)
    return path


def fit(store: Path, ckpt_path: str | None = None, **trainer_kwargs: Any) -> tuple:
    """A fresh data module, module and Trainer; ``fit`` for ``EPOCHS`` epochs."""
    dm = make_datamodule(register(store, mode="r"), BATCH)
    module = Recorder(N_GENES)
    trainer = pl.Trainer(
        max_epochs=EPOCHS, val_check_interval=VAL_EVERY, **QUIET_TRAINER, **trainer_kwargs
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return dm, module, trainer


@pytest.fixture(scope="module")
def uninterrupted(store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three epochs, checkpointed every ``EVERY`` steps and at the end of every validation."""
    steps, vals = tmp_path_factory.mktemp("step_ckpts"), tmp_path_factory.mktemp("val_ckpts")
    callbacks = [
        ModelCheckpoint(dirpath=steps, every_n_train_steps=EVERY, save_top_k=-1),
        ModelCheckpoint(dirpath=vals, save_top_k=-1, save_on_train_epoch_end=False),
    ]
    dm, module, trainer = fit(store, callbacks=callbacks)
    return {"dm": dm, "module": module, "trainer": trainer, "steps": steps, "vals": vals}


def test_each_epoch_is_a_new_order_of_every_training_cell(uninterrupted: dict) -> None:
    dm, module = uninterrupted["dm"], uninterrupted["module"]
    assert (dm.n_train, dm.n_val) == (N_TRAIN, N_VAL)
    assert sorted(module.seen) == list(range(EPOCHS))
    orders = [flat(module.seen[e]) for e in range(EPOCHS)]
    for ids in orders:
        np.testing.assert_array_equal(np.sort(ids), dm.train_idx)
    assert len({tuple(o.tolist()) for o in orders}) == EPOCHS
    assert dm.train_loader.epoch == EPOCHS - 1
    # Epoch e is the loader's epoch e (seed, e): the order a plain loader gives for it.
    plain = AnnDataLoader(
        dm.adata_managers[0],
        indices=dm.train_idx,
        batch_size=BATCH,
        shuffle=True,
        seed=0,
        load_indices=True,
    )
    for e in range(EPOCHS):
        plain.set_epoch(e)
        np.testing.assert_array_equal(
            np.concatenate([b["ind_x"].reshape(-1).numpy() for b in plain]), orders[e]
        )


def test_the_validation_loader_serves_lightning_validation(uninterrupted: dict) -> None:
    dm, module, trainer = (uninterrupted[k] for k in ("dm", "module", "trainer"))
    assert isinstance(trainer.val_dataloaders, AnnDataLoader)
    assert trainer.num_val_batches == [N_VAL // BATCH]
    # Sanity check: the first two validation batches, counted as no training progress.
    np.testing.assert_array_equal(flat(module.sanity), dm.val_idx)
    for e in range(EPOCHS):
        # Two validations per epoch (after batches 9 and 18), each over every validation
        # cell in store order.
        ids = flat(module.validated[e])
        np.testing.assert_array_equal(ids, np.tile(dm.val_idx, 2))
    assert "val_loss" in trainer.callback_metrics


CHECKPOINTS = [
    ("steps", 6),  # mid epoch 0
    ("steps", 18),  # after the last batch of epoch 0
    ("steps", 24),  # mid epoch 1
    ("vals", 9),  # at the end of a validation in the middle of epoch 0
    ("vals", 18),  # at the end of the validation after the last batch of epoch 0
    ("vals", 27),  # at the end of a validation in the middle of epoch 1
]


@pytest.mark.parametrize(("kind", "step"), CHECKPOINTS, ids=[f"{k}-{s}" for k, s in CHECKPOINTS])
def test_resumed_run_trains_exactly_the_cells_not_yet_trained(
    store: Path, uninterrupted: dict, kind: str, step: int
) -> None:
    ref = uninterrupted["module"].seen
    (ckpt,) = uninterrupted[kind].glob(f"*-step={step}.ckpt")
    dm, module, _ = fit(store, ckpt_path=str(ckpt), enable_checkpointing=False)
    # Step 18 (18 batches done) is the end of epoch 0: the resumed run starts epoch 1 afresh.
    epoch, done = divmod(step, BATCHES)
    train = dm.train_idx
    assert sorted(module.seen) == list(range(epoch, EPOCHS))
    if done:
        before = flat(ref[epoch][:done])  # trained in that epoch before the checkpoint
        after = flat(module.seen[epoch])
        assert after.size == train.size - before.size
        assert np.unique(after).size == after.size, "a cell was trained twice after resuming"
        assert np.intersect1d(after, before).size == 0, "cells trained before were repeated"
        np.testing.assert_array_equal(np.sort(np.concatenate([before, after])), train)
        # ... in the order the uninterrupted run trained them.
        np.testing.assert_array_equal(after, flat(ref[epoch][done:]))
    for e in range(epoch + 1 if done else epoch, EPOCHS):
        ids = flat(module.seen[e])
        np.testing.assert_array_equal(np.sort(ids), train)  # a full epoch
        assert not np.array_equal(ids, flat(ref[e - 1]))  # reshuffled
        np.testing.assert_array_equal(ids, flat(ref[e]))  # the uninterrupted run's order
    assert dm.train_loader.epoch == EPOCHS - 1
