"""``AnnDataLoader`` on in-memory AnnData and on Zarr stores (format 2 and 3, dense and CSR).

The first section replays the seed tutorial's AnnDataLoader section; the rest checks the loader's
guarantees (each cell once per epoch, reshuffling, determinism, exact resumption, sharding) and
its errors, identifying cells through a registered ``cell_id`` obs column.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from atlasloader import AnnDataLoader, AnnDataManager
from atlasloader.errors import (
    AtlasLoaderError,
    CorruptChunkError,
    InvalidArgumentError,
    MissingKeyError,
    NotRegisteredError,
)
from atlasloader.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalObsField,
)

from .conftest import ALL_CASES, CORE_CASES, N_OBS, N_VARS, ROW_CHUNK, Case, cell_ids

ids_of = [c.id for c in ALL_CASES]
core_ids = [c.id for c in CORE_CASES]
STORE_CASES = [c for c in ALL_CASES if c.on_disk]


def epoch_ids(loader: AnnDataLoader) -> np.ndarray:
    return cell_ids(list(loader))


# --- the seed tutorial's AnnDataLoader section -------------------------------------------------
@pytest.mark.parametrize("case", ALL_CASES, ids=ids_of)
def test_first_batch_is_first_rows(build, case: Case) -> None:
    built = build(case)
    adl = AnnDataLoader(built.manager, shuffle=False, batch_size=10)
    data_batch = next(iter(adl))

    assert list(data_batch) == list(built.manager.data_registry.keys())
    assert data_batch["x"].dtype == torch.float32
    assert data_batch["x"].shape == (10, N_VARS)
    assert data_batch["batch"].shape == (10, 1)
    np.testing.assert_array_equal(data_batch["x"].numpy(), built.x[:10].astype(np.float32))
    np.testing.assert_array_equal(data_batch["batch"].numpy().ravel(), built.batch_codes[:10])
    np.testing.assert_array_equal(data_batch["cell_id"].numpy().ravel(), np.arange(10))


@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
def test_data_and_attributes_dict_sets_dtypes_and_keys(build, case: Case) -> None:
    built = build(case)
    data_and_attributes = {"x": np.int64, "batch": np.float32}
    adl = AnnDataLoader(
        built.manager, shuffle=False, batch_size=10, data_and_attributes=data_and_attributes
    )
    data_batch = next(iter(adl))
    assert set(data_batch) == {"x", "batch"}
    assert data_batch["x"].dtype == torch.int64
    assert data_batch["batch"].dtype == torch.float32
    np.testing.assert_array_equal(data_batch["x"].numpy(), built.x[:10].astype(np.int64))

    only_x = AnnDataLoader(
        built.manager, shuffle=False, batch_size=10, data_and_attributes={"x": float}
    )
    batch = next(iter(only_x))
    assert list(batch) == ["x"]
    assert batch["x"].dtype == torch.float64
    np.testing.assert_array_equal(batch["x"].numpy(), built.x[:10].astype(np.float64))


@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
def test_data_and_attributes_list_loads_float32(build, case: Case) -> None:
    built = build(case)
    adl = AnnDataLoader(
        built.manager, shuffle=False, batch_size=7, data_and_attributes=["cell_id", "batch"]
    )
    batch = next(iter(adl))
    assert set(batch) == {"cell_id", "batch"}
    assert all(t.dtype == torch.float32 for t in batch.values())
    np.testing.assert_array_equal(batch["cell_id"].numpy().ravel(), np.arange(7))


@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
@pytest.mark.parametrize(
    ("batch_size", "drop_last", "expected"),
    [
        (32, False, 13),
        (32, True, 12),
        (40, False, 10),
        (40, True, 10),
        (500, False, 1),
        (500, True, 0),
    ],
)
def test_len_is_batches_per_epoch(
    build, case: Case, batch_size: int, drop_last: bool, expected: int
) -> None:
    built = build(case)
    adl = AnnDataLoader(built.manager, batch_size=batch_size, shuffle=True, drop_last=drop_last)
    assert len(adl) == expected
    batches = list(adl)
    assert len(batches) == expected
    sizes = [len(b["x"]) for b in batches]
    if drop_last:
        assert all(s == batch_size for s in sizes)
    else:
        assert sizes[:-1] == [batch_size] * (expected - 1)
        assert sum(sizes) == N_OBS


def test_seed_linear_regression_loop_runs(build) -> None:
    """The seed's toy training loop (labels regressed on X) on the data of both backings."""
    losses = {}
    for case in (Case("memory", "dense", "float32"), Case("zarr3", "csr", "float32")):
        built = build(
            case,
            fields=[
                LayerField("x", None, is_count_data=True),
                CategoricalObsField("labels", "batch"),
            ],
        )
        torch.manual_seed(0)
        model = torch.nn.Linear(N_VARS, 1)
        loss_fn = torch.nn.MSELoss(reduction="sum")
        optim = torch.optim.Adam(model.parameters(), lr=0.05)
        # The seed passes drop_last=3; as in current scvi-tools it acts as drop_last=True.
        loader = AnnDataLoader(built.manager, batch_size=128, shuffle=True, drop_last=3)
        assert len(loader) == N_OBS // 128
        history = []
        for _ in range(5):
            for data in loader:
                pred = model(data["x"]).squeeze(-1)
                loss = loss_fn(pred, data["labels"].squeeze())
                optim.zero_grad()
                loss.backward()
                optim.step()
            history.append(loss.item())
        assert all(np.isfinite(history))
        losses[case.backing] = history
    # Same data, same seed, same order: both backings train identically.
    np.testing.assert_allclose(losses["memory"], losses["zarr3"], rtol=1e-4)


# --- contents -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ALL_CASES, ids=ids_of)
def test_batches_hold_the_rows_of_their_cells(build, case: Case) -> None:
    built = build(case)
    adl = AnnDataLoader(built.manager, batch_size=24, shuffle=True, seed=5)
    n = 0
    for batch in adl:
        ids = batch["cell_id"].numpy().ravel().astype(np.int64)
        np.testing.assert_array_equal(batch["x"].numpy(), built.x[ids].astype(np.float32))
        np.testing.assert_array_equal(batch["batch"].numpy().ravel(), built.batch_codes[ids])
        n += len(ids)
    assert n == N_OBS


@pytest.mark.parametrize("case", ALL_CASES, ids=ids_of)
def test_batches_kept_by_the_consumer_are_never_overwritten(build, case: Case) -> None:
    # Output arrays are recycled once dropped; batches still held must keep their contents
    # through two whole epochs of later batches.
    built = build(case)
    adl = AnnDataLoader(built.manager, batch_size=16, shuffle=True, seed=2)
    kept = list(adl)
    for _ in adl:
        pass
    for batch in kept:
        ids = batch["cell_id"].numpy().ravel().astype(np.int64)
        np.testing.assert_array_equal(batch["x"].numpy(), built.x[ids].astype(np.float32))


@pytest.mark.parametrize("case", [c for c in ALL_CASES if c.fmt == "csr"], ids=lambda c: c.id)
def test_sparse_true_yields_csr_tensors(build, case: Case) -> None:
    built = build(case)
    adl = AnnDataLoader(built.manager, batch_size=32, shuffle=True, sparse=True, seed=1)
    seen = 0
    for batch in adl:
        x = batch["x"]
        assert x.layout == torch.sparse_csr
        assert x.dtype == torch.float32
        ids = batch["cell_id"].numpy().ravel().astype(np.int64)
        assert tuple(x.shape) == (len(ids), N_VARS)
        np.testing.assert_array_equal(x.to_dense().numpy(), built.x[ids].astype(np.float32))
        # Dense keys are unaffected by sparse=True.
        assert batch["cell_id"].layout == torch.strided
        seen += len(ids)
    assert seen == N_OBS


@pytest.mark.parametrize("case", [c for c in CORE_CASES if c.fmt == "dense"], ids=lambda c: c.id)
def test_sparse_true_on_dense_x_stays_dense(build, case: Case) -> None:
    built = build(case)
    batch = next(iter(AnnDataLoader(built.manager, batch_size=8, sparse=True)))
    assert batch["x"].layout == torch.strided
    np.testing.assert_array_equal(batch["x"].numpy(), built.x[:8].astype(np.float32))


@pytest.mark.parametrize(
    "case",
    [
        Case("memory", "csr", "float32"),
        Case("zarr3", "csr", "int32"),
        Case("zarr2", "dense", "float32"),
    ],
    ids=lambda c: c.id,
)
def test_device_cpu_densifies_sparse_on_device(build, case: Case) -> None:
    built = build(case)
    adl = AnnDataLoader(built.manager, batch_size=16, sparse=True, device="cpu")
    batch = next(iter(adl))
    for t in batch.values():
        assert t.device == torch.device("cpu")
        assert t.layout == torch.strided
    np.testing.assert_array_equal(batch["x"].numpy(), built.x[:16].astype(np.float32))


@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
def test_pin_memory_without_cuda_is_harmless(build, case: Case) -> None:
    built = build(case)
    adl = AnnDataLoader(built.manager, batch_size=50, shuffle=False, pin_memory=True)
    batches = list(adl)
    np.testing.assert_array_equal(cell_ids(batches), np.arange(N_OBS))
    np.testing.assert_array_equal(batches[0]["x"].numpy(), built.x[:50].astype(np.float32))
    if torch.cuda.is_available():  # pragma: no cover - only on a GPU machine
        assert batches[0]["x"].is_pinned()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sparse", [False, True])
def test_device_cuda(build, sparse: bool) -> None:  # pragma: no cover - only on a GPU machine
    built = build(Case("zarr3", "csr", "float32"))
    adl = AnnDataLoader(
        built.manager,
        batch_size=64,
        shuffle=True,
        sparse=sparse,
        pin_memory=True,
        device="cuda",
    )
    seen = []
    for batch in adl:
        assert batch["x"].is_cuda
        assert batch["x"].layout == torch.strided
        ids = batch["cell_id"].cpu().numpy().ravel().astype(np.int64)
        np.testing.assert_array_equal(batch["x"].cpu().numpy(), built.x[ids])
        seen.append(ids)
    assert sorted(np.concatenate(seen).tolist()) == list(range(N_OBS))


@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
def test_joint_categorical_field_has_one_column_per_key(build, case: Case) -> None:
    fields = [
        LayerField("x", None),
        NumericalObsField("cell_id", "cell_id"),
        CategoricalJointObsField("cat_covs", ["batch", "site"]),
    ]
    built = build(case, fields=fields)
    adl = AnnDataLoader(built.manager, batch_size=25, shuffle=True, seed=2)
    expected = np.stack(
        [built.reference.obs[k].cat.codes.to_numpy() for k in ("batch", "site")], axis=1
    )
    n = 0
    for batch in adl:
        covs = batch["cat_covs"]
        ids = batch["cell_id"].numpy().ravel().astype(np.int64)
        assert covs.shape == (len(ids), 2)
        np.testing.assert_array_equal(covs.numpy(), expected[ids])
        n += len(ids)
    assert n == N_OBS


# --- every cell once, order ---------------------------------------------------------------------
@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_cell_once_per_epoch(build, case: Case, drop_last: bool, shuffle: bool) -> None:
    built = build(case)
    batch_size = 48
    adl = AnnDataLoader(
        built.manager, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=3
    )
    for _ in range(2):
        ids = epoch_ids(adl)
        assert len(np.unique(ids)) == len(ids)
        if drop_last:
            assert len(ids) == N_OBS - N_OBS % batch_size
            assert set(ids) <= set(range(N_OBS))
        else:
            np.testing.assert_array_equal(np.sort(ids), np.arange(N_OBS))
        if not shuffle:
            np.testing.assert_array_equal(ids, np.arange(len(ids)))


@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
@pytest.mark.parametrize("drop_last", [False, True])
def test_indices_subset_each_once(build, case: Case, drop_last: bool) -> None:
    built = build(case)
    rng = np.random.default_rng(7)
    subset = rng.choice(N_OBS, size=173, replace=False)  # unsorted on purpose
    adl = AnnDataLoader(
        built.manager, indices=subset, batch_size=20, shuffle=True, drop_last=drop_last
    )
    assert len(adl) == (173 // 20 if drop_last else -(-173 // 20))
    ids = epoch_ids(adl)
    assert len(np.unique(ids)) == len(ids)
    assert set(ids) <= set(subset.tolist())
    if drop_last:
        assert len(ids) == 160
    else:
        np.testing.assert_array_equal(np.sort(ids), np.sort(subset))


@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
def test_boolean_mask_each_once_in_order(build, case: Case) -> None:
    built = build(case)
    mask = (np.arange(N_OBS) % 3 == 0) | (np.arange(N_OBS) > 350)
    shuffled = AnnDataLoader(built.manager, indices=mask, batch_size=16, shuffle=True)
    np.testing.assert_array_equal(np.sort(epoch_ids(shuffled)), np.flatnonzero(mask))
    ordered = AnnDataLoader(built.manager, indices=mask, batch_size=16, shuffle=False)
    batches = list(ordered)
    np.testing.assert_array_equal(cell_ids(batches), np.flatnonzero(mask))
    ids = cell_ids(batches)
    x = np.concatenate([b["x"].numpy() for b in batches])
    np.testing.assert_array_equal(x, built.x[ids].astype(np.float32))


@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
def test_shuffle_false_is_row_order(build, case: Case) -> None:
    built = build(case)
    adl = AnnDataLoader(built.manager, batch_size=33, shuffle=False)
    batches = list(adl)
    np.testing.assert_array_equal(cell_ids(batches), np.arange(N_OBS))
    x = np.concatenate([b["x"].numpy() for b in batches])
    np.testing.assert_array_equal(x, built.x.astype(np.float32))
    # And the same again next epoch (no shuffling ever).
    np.testing.assert_array_equal(epoch_ids(adl), np.arange(N_OBS))


@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
def test_new_order_each_epoch(build, case: Case) -> None:
    built = build(case)
    # Plain repeated iteration reshuffles ...
    adl = AnnDataLoader(built.manager, batch_size=32, shuffle=True, seed=0)
    plain = [epoch_ids(adl) for _ in range(3)]
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        assert not np.array_equal(plain[a], plain[b])
    # ... and so does set_epoch, reproducing what plain iteration gave for that epoch.
    other = AnnDataLoader(built.manager, batch_size=32, shuffle=True, seed=0)
    for epoch in (2, 0, 1):
        other.set_epoch(epoch)
        np.testing.assert_array_equal(epoch_ids(other), plain[epoch])
    # The shuffle is not merely "batches reordered": batch contents change too.
    first_batches = {frozenset(b["cell_id"].numpy().ravel().tolist()) for b in list(adl)[:3]}
    adl.set_epoch(7)
    later = {frozenset(b["cell_id"].numpy().ravel().tolist()) for b in list(adl)[:3]}
    assert first_batches.isdisjoint(later)


@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
def test_same_seed_same_order(build, case: Case) -> None:
    built = build(case)
    a = AnnDataLoader(built.manager, batch_size=32, shuffle=True, seed=11)
    b = AnnDataLoader(built.manager, batch_size=32, shuffle=True, seed=11)
    c = AnnDataLoader(built.manager, batch_size=32, shuffle=True, seed=12)
    first = epoch_ids(a)
    np.testing.assert_array_equal(first, epoch_ids(b))
    assert not np.array_equal(first, epoch_ids(c))
    assert not np.array_equal(first, np.arange(N_OBS))


def test_same_order_on_every_backing(build) -> None:
    """The order depends on seed and chunking only, not on the backing or X's format."""
    orders = set()
    for case in (
        Case("memory", "csr", "float32"),
        Case("zarr2", "csr", "int32"),
        Case("zarr3", "csr", "float32"),
    ):
        built = build(case)
        adl = AnnDataLoader(built.manager, batch_size=32, shuffle=True, seed=4)
        orders.add(tuple(epoch_ids(adl).tolist()))
    assert len(orders) == 1


# --- resumption ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
@pytest.mark.parametrize("k", [0, 1, 5, 12])
def test_resume_from_pickled_state(build, case: Case, k: int) -> None:
    built = build(case)

    def loader() -> AnnDataLoader:
        return AnnDataLoader(built.manager, batch_size=30, shuffle=True, seed=9, prefetch=3)

    reference = loader()
    reference.set_epoch(2)
    full = [b["cell_id"].numpy().ravel().tolist() for b in reference]
    assert len(full) == 14

    interrupted = loader()
    interrupted.set_epoch(2)
    it = iter(interrupted)
    head = [next(it)["cell_id"].numpy().ravel().tolist() for _ in range(k)]
    assert head == full[:k]
    state = pickle.loads(pickle.dumps(interrupted.state_dict()))
    del it

    resumed = loader()
    resumed.load_state_dict(state)
    rest = [b["cell_id"].numpy().ravel().tolist() for b in resumed]
    assert rest == full[k:]
    # The epoch after the resumed one is the uninterrupted run's next epoch.
    following = [b["cell_id"].numpy().ravel().tolist() for b in resumed]
    assert following == [b["cell_id"].numpy().ravel().tolist() for b in reference]


@pytest.mark.parametrize("case", CORE_CASES[:2], ids=core_ids[:2])
def test_resume_after_a_finished_epoch_starts_the_next(build, case: Case) -> None:
    built = build(case)
    run = AnnDataLoader(built.manager, batch_size=64, shuffle=True, seed=1)
    epoch0 = epoch_ids(run)
    state = pickle.loads(pickle.dumps(run.state_dict()))
    epoch1 = epoch_ids(run)
    assert not np.array_equal(epoch0, epoch1)

    resumed = AnnDataLoader(built.manager, batch_size=64, shuffle=True, seed=1)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(epoch_ids(resumed), epoch1)


def test_resume_then_set_epoch_of_checkpoint_still_resumes(build) -> None:
    """Lightning calls ``set_epoch(epoch)`` right after loading a checkpoint."""
    built = build(Case("zarr2", "dense", "int32"))
    run = AnnDataLoader(built.manager, batch_size=40, shuffle=True, seed=2)
    run.set_epoch(4)
    it = iter(run)
    head = [next(it)["cell_id"].numpy().ravel().tolist() for _ in range(3)]
    state = pickle.loads(pickle.dumps(run.state_dict()))
    assert state == {"epoch": 4, "seed": 2, "batches_yielded": 3}
    rest = [b["cell_id"].numpy().ravel().tolist() for b in it]

    resumed = AnnDataLoader(built.manager, batch_size=40, shuffle=True, seed=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(4)
    assert [b["cell_id"].numpy().ravel().tolist() for b in resumed] == rest
    assert len(head) + len(rest) == len(run) == 10


@pytest.mark.parametrize("shuffle", [False, True])
def test_peeking_consumes_nothing(build, shuffle: bool) -> None:
    """``next(iter(loader))`` (as in the seed) does not eat into the next full pass."""
    built = build(Case("zarr3", "dense", "float32"))
    adl = AnnDataLoader(built.manager, batch_size=10, shuffle=shuffle, seed=3)
    first = next(iter(adl))["cell_id"].numpy().ravel()
    again = next(iter(adl))["cell_id"].numpy().ravel()
    np.testing.assert_array_equal(first, again)
    if not shuffle:
        np.testing.assert_array_equal(first, np.arange(10))
    ids = epoch_ids(adl)
    np.testing.assert_array_equal(np.sort(ids), np.arange(N_OBS))
    np.testing.assert_array_equal(ids[:10], first)


def test_abandoned_iteration_restarts_the_epoch(build) -> None:
    built = build(Case("memory", "dense", "float32"))
    adl = AnnDataLoader(built.manager, batch_size=32, shuffle=True, seed=8)
    it = iter(adl)
    for _ in range(4):
        next(it)
    del it
    full = epoch_ids(adl)
    np.testing.assert_array_equal(np.sort(full), np.arange(N_OBS))
    fresh = AnnDataLoader(built.manager, batch_size=32, shuffle=True, seed=8)
    np.testing.assert_array_equal(full, epoch_ids(fresh))


def test_resume_keeps_seed_of_checkpoint(build) -> None:
    built = build(Case("zarr3", "dense", "float32"))
    run = AnnDataLoader(built.manager, batch_size=40, shuffle=True, seed=21)
    it = iter(run)
    next(it)
    state = run.state_dict()
    rest = [b["cell_id"].numpy().ravel().tolist() for b in it]
    # A loader built with another seed follows the checkpoint's seed once the state is loaded.
    resumed = AnnDataLoader(built.manager, batch_size=40, shuffle=True, seed=0)
    resumed.load_state_dict(state)
    assert [b["cell_id"].numpy().ravel().tolist() for b in resumed] == rest


# --- sharding -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_are_disjoint_and_cover_every_cell(build, case: Case, shuffle: bool) -> None:
    built = build(case)
    world = 4  # 400 cells: 100 per rank
    shards = []
    for rank in range(world):
        adl = AnnDataLoader(
            built.manager, batch_size=32, shuffle=shuffle, seed=5, rank=rank, world_size=world
        )
        assert len(adl) == 4
        ids = epoch_ids(adl)
        assert len(ids) == N_OBS // world
        shards.append(set(ids.tolist()))
    for i in range(world):
        for j in range(i + 1, world):
            assert shards[i].isdisjoint(shards[j])
    assert set().union(*shards) == set(range(N_OBS))


@pytest.mark.parametrize("case", CORE_CASES[:2], ids=core_ids[:2])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_of_indivisible_selection(build, case: Case, drop_last: bool) -> None:
    built = build(case)
    world = 3  # 400 = 3 * 133 + 1
    shards = []
    for rank in range(world):
        adl = AnnDataLoader(
            built.manager,
            batch_size=20,
            shuffle=True,
            seed=5,
            drop_last=drop_last,
            rank=rank,
            world_size=world,
        )
        ids = epoch_ids(adl)
        assert len(np.unique(ids)) == len(ids)
        shards.append(ids)
    sizes = {len(s) for s in shards}
    assert len(sizes) == 1  # every rank gets the same number of batches' worth of cells
    union = np.concatenate(shards)
    if drop_last:
        # torch's DistributedSampler: the tail is dropped, ranks stay disjoint.
        assert len(np.unique(union)) == len(union)
    else:
        # Padding by wrapping around: every cell at least once, at most world - 1 repeats.
        assert set(union.tolist()) == set(range(N_OBS))
        assert len(union) - N_OBS < world


# --- errors -------------------------------------------------------------------------------------
@pytest.fixture
def small(build):
    return build(Case("zarr3", "dense", "float32"))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_batch_size_must_be_positive(small, bad: int) -> None:
    with pytest.raises(InvalidArgumentError, match=rf"batch_size.*{bad}"):
        AnnDataLoader(small.manager, batch_size=bad)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"rows_per_read": 0}, "rows_per_read"),
        ({"rows_per_read": -2}, "rows_per_read"),
        ({"reads_per_buffer": 0}, "reads_per_buffer"),
        ({"prefetch": 0}, "prefetch"),
        ({"seed": -1}, "seed"),
    ],
)
def test_tuning_arguments_are_checked(small, kwargs: dict, name: str) -> None:
    (value,) = kwargs.values()
    with pytest.raises(InvalidArgumentError, match=rf"{name}.*{value}"):
        AnnDataLoader(small.manager, **kwargs)


@pytest.mark.parametrize("empty", [{}, []])
def test_data_and_attributes_selecting_nothing(small, empty) -> None:
    with pytest.raises(InvalidArgumentError, match="no keys"):
        AnnDataLoader(small.manager, data_and_attributes=empty)


def test_empty_selection_yields_no_batches(small) -> None:
    adl = AnnDataLoader(small.manager, indices=np.zeros(0, dtype=np.int64), batch_size=8)
    assert len(adl) == 0
    assert list(adl) == []


def test_unknown_data_and_attributes_key(small) -> None:
    with pytest.raises(MissingKeyError, match="not_a_key") as err:
        AnnDataLoader(small.manager, data_and_attributes={"x": np.float32, "not_a_key": float})
    assert isinstance(err.value, KeyError)
    assert "cell_id" in str(err.value)  # lists what is registered
    with pytest.raises(MissingKeyError, match="labels"):
        AnnDataLoader(small.manager, data_and_attributes=["labels"])


@pytest.mark.parametrize("bad", [N_OBS, -1, 10_000])
def test_indices_out_of_range(small, bad: int) -> None:
    with pytest.raises(InvalidArgumentError, match=rf"{bad}\b.*out of range"):
        AnnDataLoader(small.manager, indices=[0, 5, bad])


def test_boolean_mask_of_wrong_length(small) -> None:
    with pytest.raises(InvalidArgumentError, match=str(N_OBS)):
        AnnDataLoader(small.manager, indices=np.ones(N_OBS - 1, dtype=bool))


def test_bad_rank(small) -> None:
    with pytest.raises(InvalidArgumentError, match="rank"):
        AnnDataLoader(small.manager, rank=4, world_size=4)


def test_unknown_keyword_argument(small) -> None:
    with pytest.raises(InvalidArgumentError, match="workers"):
        AnnDataLoader(small.manager, workers=2)


def test_unregistered_manager(small) -> None:
    manager = AnnDataManager(fields=[LayerField("x", None)])
    with pytest.raises(NotRegisteredError, match="register_fields") as err:
        AnnDataLoader(manager)
    assert isinstance(err.value, AtlasLoaderError)


def test_errors_are_atlasloader_and_builtin(small) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        AnnDataLoader(small.manager, batch_size=0)
    with pytest.raises(AtlasLoaderError):
        AnnDataLoader(small.manager, indices=[N_OBS])


# --- damaged stores -----------------------------------------------------------------------------
def _garble(path: Path) -> None:
    with open(path, "wb") as f:
        f.write(os.urandom(64) + b"definitely not a compressed chunk" * 4)


def _store_with_bad_chunk(build, fmt: str, chunk: int) -> tuple[object, Path, Path]:
    built = build(Case("zarr3", fmt, "float32"))
    assert built.path is not None
    if fmt == "dense":
        target = built.path / "X" / "c" / str(chunk) / "0"
    else:
        target = built.path / "X" / "data" / "c" / str(chunk)
    assert target.is_file()
    _garble(target)
    return built, built.path, target


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_corrupt_chunk_raises_clear_error(build, fmt: str) -> None:
    built, store, _ = _store_with_bad_chunk(build, fmt, chunk=1)
    adl = AnnDataLoader(built.manager, batch_size=32, shuffle=True, prefetch=1)
    with pytest.raises(CorruptChunkError) as err:
        list(adl)
    assert isinstance(err.value, ValueError)
    assert isinstance(err.value, OSError)
    msg = str(err.value)
    assert str(store) in msg
    assert ("/X/data" if fmt == "csr" else "/X") in msg
    assert "chunk 1" in msg


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_corrupt_chunk_in_prefetch_thread_raises_not_hangs(build, fmt: str) -> None:
    # The last chunk is bad: the first buffers read fine, the failure happens in a prefetch
    # thread while earlier batches are being consumed.
    last = N_OBS // ROW_CHUNK - 1 if fmt == "dense" else 2
    built, _, _ = _store_with_bad_chunk(build, fmt, chunk=last)
    threads_before = threading.active_count()
    adl = AnnDataLoader(
        built.manager,
        batch_size=8,
        shuffle=False,
        prefetch=4,
        num_threads=2,
        reads_per_buffer=2,
    )
    got = []
    with pytest.raises(CorruptChunkError, match=f"chunk {last}"):
        got.extend(adl)  # keeps the batches that arrived before the error
    # Batches before the damaged chunk arrived, in order, with the right rows.
    assert got
    np.testing.assert_array_equal(cell_ids(got), np.arange(len(got) * 8))
    # No reader thread is left behind.
    deadline = time.monotonic() + 10
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= threads_before


def test_error_in_collate_thread_propagates(build) -> None:
    """A failure after reading (converting to an impossible dtype) also reaches the caller."""
    built = build(Case("zarr2", "dense", "float32"))
    adl = AnnDataLoader(
        built.manager, batch_size=8, data_and_attributes={"x": np.dtype("U3")}, prefetch=3
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((TypeError, ValueError)):
            list(adl)
