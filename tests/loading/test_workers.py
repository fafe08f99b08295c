"""``AnnDataLoader(num_workers=n)``: DataLoader worker processes, each reading its own share.

Worker processes start with ``fork`` here (fast); one test starts them with ``spawn`` to show
that the loader's state pickles. Cells are identified by the registered ``cell_id`` column.
"""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest

from atlasloader import AnnDataLoader
from atlasloader.errors import CorruptChunkError, InvalidArgumentError

from .conftest import CORE_CASES, N_OBS, Case, cell_ids
from .test_loader import _store_with_bad_chunk

core_ids = [c.id for c in CORE_CASES]
FORK = "fork"


def forked(manager: object, **kwargs: object) -> AnnDataLoader:
    """A shuffled loader with worker processes started by fork (defaults: 2 workers)."""
    opts: dict[str, object] = {"shuffle": True, "num_workers": 2, "multiprocessing_context": FORK}
    return AnnDataLoader(manager, **(opts | kwargs))  # type: ignore[arg-type]


def ids_per_batch(loader: AnnDataLoader) -> list[list[int]]:
    return [b["cell_id"].numpy().ravel().astype(int).tolist() for b in loader]


@pytest.mark.parametrize("case", CORE_CASES, ids=core_ids)
@pytest.mark.parametrize("drop_last", [False, True])
def test_workers_cover_every_cell_once(build, case: Case, drop_last: bool) -> None:
    built = build(case)
    adl = AnnDataLoader(
        built.manager,
        batch_size=32,
        shuffle=True,
        drop_last=drop_last,
        num_workers=2,
        multiprocessing_context=FORK,
        reads_per_buffer=3,
    )
    batches = list(adl)
    assert len(batches) == len(adl)
    ids = cell_ids(batches)
    assert len(np.unique(ids)) == len(ids)
    if drop_last:
        assert all(len(b["cell_id"]) == 32 for b in batches)
        assert len(ids) >= N_OBS - 2 * 32  # at most one partial batch dropped per worker
    else:
        np.testing.assert_array_equal(np.sort(ids), np.arange(N_OBS))
    # Contents are the rows of those cells.
    for b in batches:
        rows = b["cell_id"].numpy().ravel().astype(np.int64)
        np.testing.assert_array_equal(b["x"].numpy(), built.x[rows].astype(np.float32))


def test_workers_with_ranks_and_indices(build) -> None:
    built = build(Case("zarr3", "csr", "float32"))
    subset = np.arange(0, N_OBS, 3)
    seen = []
    for rank in range(2):
        adl = forked(built.manager, indices=subset, batch_size=16, rank=rank, world_size=2)
        seen.append(cell_ids(list(adl)))
    assert not set(seen[0]) & set(seen[1])
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), subset)


def test_workers_reshuffle_each_epoch_and_repeat_for_a_seed(build) -> None:
    built = build(Case("zarr2", "dense", "int32"))

    def loader() -> AnnDataLoader:
        return forked(built.manager, batch_size=20, seed=4)

    a = loader()
    first, second = ids_per_batch(a), ids_per_batch(a)
    assert first != second
    flat = [sorted(itertools.chain.from_iterable(ep)) for ep in (first, second)]
    assert flat[0] == flat[1] == list(range(N_OBS))
    assert ids_per_batch(loader()) == first


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")
@pytest.mark.parametrize("k", [1, 5, 12])
def test_workers_resume_mid_epoch_with_exactly_the_rest(build, k: int) -> None:
    built = build(Case("zarr3", "csr", "float32"))

    def loader() -> AnnDataLoader:
        return forked(built.manager, batch_size=24, seed=7, num_workers=3, reads_per_buffer=2)

    full = ids_per_batch(loader())
    interrupted = loader()
    it = iter(interrupted)
    head = [next(it)["cell_id"].numpy().ravel().astype(int).tolist() for _ in range(k)]
    assert head == full[:k]
    state = pickle.loads(pickle.dumps(interrupted.state_dict()))
    del it
    resumed = loader()
    resumed.load_state_dict(state)
    assert ids_per_batch(resumed) == full[k:]


def test_workers_started_with_spawn(build) -> None:
    # spawn pickles the dataset (fetchers over the Zarr store, sampler) into fresh interpreters.
    built = build(Case("zarr3", "csr", "float32"))
    adl = AnnDataLoader(
        built.manager, batch_size=100, shuffle=True, num_workers=2, multiprocessing_context="spawn"
    )
    ids = cell_ids(list(adl))
    np.testing.assert_array_equal(np.sort(ids), np.arange(N_OBS))


def test_a_failing_worker_raises_in_the_main_process(build) -> None:
    built, store, _ = _store_with_bad_chunk(build, "csr", chunk=1)
    adl = AnnDataLoader(
        built.manager, batch_size=32, shuffle=True, num_workers=2, multiprocessing_context=FORK
    )
    with pytest.raises(CorruptChunkError, match="chunk 1") as err:
        list(adl)
    assert str(store) in str(err.value)


@pytest.mark.parametrize("bad", [-1, 1.5])
def test_num_workers_is_checked(build, bad: object) -> None:
    built = build(Case("memory", "dense", "float32"))
    with pytest.raises(InvalidArgumentError, match="num_workers"):
        AnnDataLoader(built.manager, num_workers=bad)


class _TransferFails:
    """A worker iterator whose batch handover fails before its worker process has exited."""

    def __init__(self, workers: list[object], error: Exception) -> None:
        self._workers = workers
        self.error = error

    def __iter__(self) -> _TransferFails:
        return self

    def __next__(self) -> dict[str, object]:
        raise self.error


def _dies_late(delay: float) -> None:
    import os
    import signal
    import time

    time.sleep(delay)
    os.kill(os.getpid(), signal.SIGKILL)


def test_transfer_error_before_the_worker_is_reaped_still_names_it() -> None:
    # The kernel closes a killed worker's socket before the process can be reaped: the handover's
    # ConnectionResetError reaches the main process while the worker's exit code is still unknown.
    import multiprocessing as mp

    from atlasloader.errors import WorkerDiedError
    from atlasloader.loading.workers import _Guarded

    proc = mp.get_context(FORK).Process(target=_dies_late, args=(0.5,))
    proc.start()
    try:
        guarded = _Guarded(_TransferFails([proc], ConnectionResetError(104, "reset by peer")))
        with pytest.raises(WorkerDiedError, match=rf"pid {proc.pid} \(exit code -9\)"):
            next(iter(guarded))
    finally:
        proc.join(5)


def test_other_errors_with_every_worker_alive_are_raised_as_they_are() -> None:
    from atlasloader.loading.workers import _Guarded

    guarded = _Guarded(_TransferFails([], ValueError("a bug in a transform")))
    with pytest.raises(ValueError, match="a bug in a transform"):
        next(iter(guarded))
