"""Sampler state: validation, epochs, resuming (in one process and across DataLoader workers)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlasloader.errors import InvalidArgumentError
from atlasloader.sampling import (
    Batcher,
    Buffer,
    BufferSampler,
    ChunkShuffleSampler,
    SequentialSampler,
)
from atlasloader.sampling.shards import _resume_point

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def sampler_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    n_obs = draw(st.integers(0, 250))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        indices: Any = np.arange(n_obs)
    else:  # a boolean mask, as a user selecting cells would pass it
        indices = rng.random(n_obs) < draw(st.floats(0.1, 1.0))
    world_size = draw(st.integers(1, 3))
    return {
        "indices": indices,
        "n_obs": n_obs,
        "batch_size": draw(st.integers(1, 24)),
        "read_rows": draw(st.integers(1, 10)),
        "reads_per_buffer": draw(st.integers(1, 4)),
        "shuffle": draw(st.booleans()),
        "drop_last": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31)),
        "world_size": world_size,
        "rank": draw(st.integers(0, world_size - 1)),
    }


def _worker_batches(s: BufferSampler, worker: int, num_workers: int) -> list[np.ndarray]:
    """What one DataLoader worker process would emit (its own copy of the sampler)."""
    batcher: Batcher[np.ndarray] = Batcher(s.batch_size, s.drop_last)
    buffers = s.sample(worker=worker, num_workers=num_workers)
    return list(batcher.rebatch(b.cell_ids for b in buffers))


def _dataloader(make: Any, state: dict[str, int], num_workers: int) -> list[np.ndarray]:
    """Emulate ``torch.utils.data.DataLoader`` (IterableDataset, in_order=True): round-robin
    over the workers, skipping exhausted ones; each worker restores ``state`` itself."""
    streams: list[Iterator[np.ndarray]] = []
    for w in range(num_workers):
        s = make()
        s.load_state_dict(state)
        streams.append(iter(_worker_batches(s, w, num_workers)))
    out: list[np.ndarray] = []
    active = list(range(num_workers))
    while active:
        for w in list(active):
            try:
                out.append(next(streams[w]))
            except StopIteration:
                active.remove(w)
    return out


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------------------------------
# resume
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(kw=sampler_kwargs(), epoch=st.integers(0, 3), data=st.data())
def test_resume_after_k_batches_yields_exactly_the_rest(
    kw: dict[str, Any], epoch: int, data: st.DataObject
) -> None:
    a = ChunkShuffleSampler(**kw)
    a.set_epoch(epoch)
    full = list(a.batches())
    assert len(full) == len(a)
    assert a.batches_yielded == len(full)  # a finished epoch stays recorded as finished
    k = data.draw(st.integers(0, len(full)), label="k")
    a.set_epoch(epoch + 1)
    it = a.batches(epoch)  # set_epoch(epoch) again: count restarts
    head = [next(it) for _ in range(k)]
    state = pickle.loads(pickle.dumps(a.state_dict()))
    assert state == {"epoch": epoch, "seed": kw["seed"], "batches_yielded": k}
    assert all(type(v) is int for v in state.values())

    b = ChunkShuffleSampler(**{**kw, "seed": 0})  # the seed comes from the state
    b.load_state_dict(state)
    b.set_epoch(epoch)  # as Lightning does after loading a checkpoint: must keep the count
    rest = list(b.batches())
    if k < len(full):
        assert _same(head + rest, full)
    else:  # a finished epoch is served again from its start
        assert _same(rest, full)


@SETTINGS
@given(
    kw=sampler_kwargs(),
    num_workers=st.integers(1, 4),
    data=st.data(),
)
def test_resume_across_dataloader_workers(
    kw: dict[str, Any], num_workers: int, data: st.DataObject
) -> None:
    def make() -> ChunkShuffleSampler:
        return ChunkShuffleSampler(**kw)

    fresh = {"epoch": 2, "seed": kw["seed"], "batches_yielded": 0}
    full = _dataloader(make, fresh, num_workers)
    assert len(full) == make().num_batches(num_workers)
    k = data.draw(st.integers(0, len(full)), label="k")
    rest = _dataloader(make, {**fresh, "batches_yielded": k}, num_workers)
    if k < len(full):
        assert _same(rest, full[k:])  # same cells, same order
    else:
        assert _same(rest, full)  # a finished epoch is served again
    # Workers together emit the rank's cells (sharding is independent of num_workers).
    if not kw["drop_last"]:
        one = np.concatenate([*_dataloader(make, fresh, 1), np.empty(0, dtype=np.int64)])
        got = np.concatenate([*full, np.empty(0, dtype=np.int64)])
        assert np.array_equal(np.sort(got), np.sort(one))


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 6), min_size=1, max_size=5), data=st.data())
def test_resume_point_matches_round_robin(counts: list[int], data: st.DataObject) -> None:
    nw = len(counts)
    order = [(w, r) for r in range(max(counts)) for w in range(nw) if r < counts[w]]
    done = data.draw(st.integers(0, len(order)))
    skips, start = _resume_point(done, counts)
    assert skips == [sum(1 for w2, _ in order[:done] if w2 == w) for w in range(nw)]
    # Restarting the round-robin at worker 0, with roles rotated by ``start``, continues it.
    rotated = [(w + start) % nw for w in range(nw)]
    resumed = [
        (rotated[i], skips[rotated[i]] + m)
        for m in range(max(counts))
        for i in range(nw)
        if skips[rotated[i]] + m < counts[rotated[i]]
    ]
    assert resumed == order[done:]


def test_resume_skips_reading_consumed_rows() -> None:
    s = ChunkShuffleSampler(np.arange(1000), 100, 10, 5, seed=3)
    s.advance(7)
    buffers = list(s.sample())
    assert sum(b.n_rows for b in buffers) == 300
    assert buffers[0].stream_offset == 700


def test_set_epoch_and_advance() -> None:
    s = ChunkShuffleSampler(np.arange(100), 10, 5, 2, seed=1)
    s.advance(3)
    s.set_epoch(0)
    assert s.batches_yielded == 3
    s.set_epoch(1)
    assert (s.epoch, s.batches_yielded) == (1, 0)
    it = s.batches()
    next(it)
    next(it)
    assert s.state_dict() == {"epoch": 1, "seed": 1, "batches_yielded": 2}


def test_other_epoch_ignores_resume_state() -> None:
    s = ChunkShuffleSampler(np.arange(100), 10, 5, 2, seed=1)
    s.advance(4)
    assert sum(b.n_rows for b in s.sample(epoch=1)) == 100
    assert sum(b.n_rows for b in s.sample(epoch=0)) == 60


# ------------------------------------------------------------------------------------------
# epochs, order
# ------------------------------------------------------------------------------------------


def test_shuffled_epochs_cover_all_cells_in_new_orders() -> None:
    s = ChunkShuffleSampler(np.arange(500), 32, 8, 4, seed=7)
    epochs = [np.concatenate(list(s.batches(e))) for e in range(3)]
    for e in epochs:
        assert np.array_equal(np.sort(e), np.arange(500))
    assert not np.array_equal(epochs[0], epochs[1])
    again = ChunkShuffleSampler(np.arange(500), 32, 8, 4, seed=7)
    assert np.array_equal(np.concatenate(list(again.batches(1))), epochs[1])


def test_subset_selection_from_mask_and_unsorted_ids() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random(300) < 0.3
    a = ChunkShuffleSampler(mask, 16, 8, 2, seed=0)
    ids = np.flatnonzero(mask)
    b = ChunkShuffleSampler(np.concatenate([ids[::-1], ids[:5]]), 16, 8, 2, seed=0, n_obs=300)
    assert np.array_equal(a.indices, ids)
    assert np.array_equal(b.indices, ids)
    got = np.concatenate(list(a.batches()))
    assert np.array_equal(np.sort(got), ids)
    assert _same(list(a.batches()), list(b.batches()))


def test_sequential_sampler_in_order() -> None:
    s = SequentialSampler(np.arange(3, 50), 8, read_rows=4, reads_per_buffer=3)
    batches = list(s.batches())
    assert np.array_equal(np.concatenate(batches), np.arange(3, 50))
    assert [b.shape[0] for b in batches] == [8] * 5 + [7]
    assert not s.shuffle
    ranks = [
        np.concatenate(
            list(SequentialSampler(None, 4, 4, 1, rank=r, world_size=3, n_obs=10).batches())
        )
        for r in range(3)
    ]
    # torch DistributedSampler padding: 10 cells -> 3 x 4, wrapping around to cells 0, 1.
    assert [r.tolist() for r in ranks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]


def test_buffers_describe_reads() -> None:
    s = ChunkShuffleSampler(None, 64, 16, 8, seed=0, n_obs=1000)
    buffers = list(s.sample())
    assert all(isinstance(b, Buffer) for b in buffers)
    assert [b.n_rows for b in buffers] == [128] * 7 + [104]
    for b in buffers:
        assert np.all(b.runs[:, 0] // 16 == (b.runs[:, 1] - 1) // 16)
    assert "ChunkShuffleSampler(n_cells=1000" in repr(s)


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, r"batch_size.*>= 1.*got 0"),
        ({"read_rows": -4}, r"read_rows.*>= 1.*got -4"),
        ({"reads_per_buffer": 0}, r"reads_per_buffer.*>= 1.*got 0"),
        ({"rank": 1, "world_size": 1}, r"rank must be in \[0, world_size\).*rank=1"),
        ({"rank": -1, "world_size": 2}, r"rank.*got -1"),
        ({"world_size": 0}, r"world_size.*got 0"),
        ({"seed": -5}, r"seed.*got -5"),
        ({"indices": np.array([1, 10])}, r"\[0, n_obs\) = \[0, 10\).*10"),
        ({"indices": np.array([-1, 3])}, r"negative id -1"),
        ({"indices": np.ones(9, dtype=bool)}, r"n_obs=10.*length 9"),
        ({"indices": np.ones((2, 5), dtype=np.int64)}, r"1-D.*\(2, 5\)"),
        ({"indices": np.array([1.0, 2.0])}, r"integer.*float64"),
    ],
)
def test_constructor_validation(kwargs: dict[str, Any], match: str) -> None:
    base: dict[str, Any] = {
        "indices": np.arange(10),
        "batch_size": 4,
        "read_rows": 2,
        "reads_per_buffer": 2,
        "n_obs": 10,
    }
    base.update(kwargs)
    with pytest.raises(InvalidArgumentError, match=match):
        ChunkShuffleSampler(**base)


def test_sample_validates_eagerly() -> None:
    s = ChunkShuffleSampler(np.arange(10), 4, 2, 2)
    with pytest.raises(InvalidArgumentError, match=r"worker.*\[0, 2\).*worker=2"):
        s.sample(worker=2, num_workers=2)  # no next(): raised at the call
    with pytest.raises(InvalidArgumentError, match=r"num_workers.*got 0"):
        s.sample(num_workers=0)
    with pytest.raises(InvalidArgumentError, match=r"epoch.*got -1"):
        s.sample(epoch=-1)
    with pytest.raises(InvalidArgumentError, match=r"epoch.*got -1"):
        s.batches(epoch=-1)


def test_load_state_dict_validation() -> None:
    s = ChunkShuffleSampler(np.arange(10), 4, 2, 2)
    with pytest.raises(InvalidArgumentError, match=r"missing \['batches_yielded'\]"):
        s.load_state_dict({"epoch": 0, "seed": 0})
    with pytest.raises(InvalidArgumentError, match=r"batches_yielded.*got -1"):
        s.load_state_dict({"epoch": 0, "seed": 0, "batches_yielded": -1})


def test_buffer_sampler_is_abstract() -> None:
    with pytest.raises(TypeError):
        BufferSampler(batch_size=1, drop_last=False, seed=0, rank=0, world_size=1)  # type: ignore[abstract]
