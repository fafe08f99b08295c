"""Epochs as training loops drive them: stopping at ``len()``, ``sampler.set_epoch``, indices.

Lightning (so scvi-tools' ``train``) stops after ``len(loader)`` batches without asking for
one more, and selects each epoch through ``loader.sampler.set_epoch(e)``; a plain loop with
``islice(loader, len(loader))`` stops the same way. Each must still see a new order each
epoch, and an epoch chosen from outside must be the one served.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from atlasloader import AnnDataLoader

from .conftest import CORE_CASES, Case, cell_ids


def _islice_epoch(loader: AnnDataLoader) -> np.ndarray:
    return cell_ids(list(itertools.islice(loader, len(loader))))


@pytest.mark.parametrize("case", CORE_CASES, ids=lambda c: c.id)
def test_stopping_at_len_still_moves_to_the_next_epoch(build, case: Case) -> None:
    built = build(case)
    loader = AnnDataLoader(built.manager, batch_size=64, shuffle=True, seed=3)
    orders = [_islice_epoch(loader) for _ in range(3)]
    assert loader.epoch == 2
    for ids in orders:
        np.testing.assert_array_equal(np.sort(ids), np.arange(built.n_obs))
    assert len({tuple(o.tolist()) for o in orders}) == 3
    # The same orders as a loader iterated to exhaustion, epoch by epoch.
    full = AnnDataLoader(built.manager, batch_size=64, shuffle=True, seed=3)
    for epoch, ids in enumerate(orders):
        full.set_epoch(epoch)
        np.testing.assert_array_equal(cell_ids(list(full)), ids)


def test_an_epoch_set_on_the_sampler_is_served(build) -> None:
    built = build(CORE_CASES[2])
    reference = AnnDataLoader(built.manager, batch_size=50, shuffle=True, seed=1)
    wanted = {}
    for e in (0, 1, 5):
        reference.set_epoch(e)
        wanted[e] = cell_ids(list(reference))
    loader = AnnDataLoader(built.manager, batch_size=50, shuffle=True, seed=1)
    # What Lightning does each epoch: sampler.set_epoch(e), then iterate len(loader) batches.
    for e in (0, 1, 5):
        loader.sampler.set_epoch(e)
        np.testing.assert_array_equal(_islice_epoch(loader), wanted[e])
        assert loader.epoch == e


def test_lightning_sees_no_shuffling_sampler_attributes(build) -> None:
    """Lightning's ``_is_dataloader_shuffled`` reads ``batch_sampler``: it must exist."""
    from lightning.pytorch.utilities.data import _is_dataloader_shuffled

    loader = AnnDataLoader(build(CORE_CASES[0]).manager, batch_size=10)
    assert loader.batch_sampler is None
    assert _is_dataloader_shuffled(loader) is False


@pytest.mark.parametrize("shuffle", [False, True])
def test_load_indices_gives_each_cell_its_id(build, shuffle: bool) -> None:
    built = build(CORE_CASES[2])
    loader = AnnDataLoader(
        built.manager, batch_size=37, shuffle=shuffle, load_indices=True, indices=np.arange(7, 300)
    )
    batches = list(loader)
    for b in batches:
        assert b["ind_x"].dtype.is_floating_point is False
        assert tuple(b["ind_x"].shape) == (len(b["x"]), 1)
        # The id is the cell's own: the registered cell_id column says which cell a row is.
        np.testing.assert_array_equal(b["ind_x"].numpy().ravel(), b["cell_id"].numpy().ravel())
    np.testing.assert_array_equal(np.sort(cell_ids(batches, "ind_x")), np.arange(7, 300))


def test_rank_and_world_size_given_explicitly_shard_without_torch_distributed(build) -> None:
    built = build(CORE_CASES[2])
    shards = [
        cell_ids(list(AnnDataLoader(built.manager, batch_size=40, rank=r, world_size=2)))
        for r in (0, 1)
    ]
    assert not set(shards[0]) & set(shards[1])
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(built.n_obs))
