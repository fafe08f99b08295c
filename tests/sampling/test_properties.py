"""Properties of whole DDP runs: every rank x every DataLoader worker, several epochs, resumed.

``test_plan`` checks one epoch plan and ``test_sampler`` one rank's resume; here the samplers of
all ranks run together as a DDP job would (each rank a ``DataLoader`` over ``num_workers``
workers, emulated round-robin as torch interleaves them), the main process counts batches with
``set_epoch``/``advance`` as :class:`~atlasloader.AnnDataLoader` does, and the job is stopped
after a random number of steps and resumed from the pickled state. The last test runs the
same maths through the real :class:`~atlasloader.AnnDataLoader` on an in-memory AnnData.
"""

from __future__ import annotations

import pickle
import warnings
from collections import Counter
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlasloader import AnnDataLoader, AnnDataManager
from atlasloader.fields import LayerField, NumericalObsField
from atlasloader.sampling import ChunkShuffleSampler

from .test_sampler import _dataloader, _same

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def jobs(draw: st.DrawFn) -> dict[str, Any]:
    """A selection of cells and the sampler arguments shared by every rank of a DDP job."""
    n_obs = draw(st.integers(0, 200))
    kind = draw(st.sampled_from(["all", "mask", "ids"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    indices: Any = None
    if kind == "mask":
        indices = rng.random(n_obs) < draw(st.floats(0.05, 1.0))
    elif kind == "ids":  # unsorted, with repeats: a set of cells all the same
        indices = rng.integers(0, max(n_obs, 1), size=draw(st.integers(0, n_obs)))
    return {
        "indices": indices,
        "n_obs": n_obs,
        "batch_size": draw(st.integers(1, 20)),
        "read_rows": draw(st.integers(1, 9)),
        "reads_per_buffer": draw(st.integers(1, 4)),
        "shuffle": draw(st.booleans()),
        "drop_last": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31)),
        "world_size": draw(st.integers(1, 4)),
    }


def _selection(job: dict[str, Any]) -> np.ndarray:
    idx = job["indices"]
    if idx is None:
        return np.arange(job["n_obs"], dtype=np.int64)
    idx = np.asarray(idx)
    return np.flatnonzero(idx) if idx.dtype == bool else np.unique(idx).astype(np.int64)


def _cat(batches: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([*batches, np.empty(0, dtype=np.int64)])


def _fresh(epoch: int, seed: int) -> dict[str, int]:
    return {"epoch": epoch, "seed": seed, "batches_yielded": 0}


@SETTINGS
@given(job=jobs(), num_workers=st.integers(1, 3), epochs=st.integers(1, 3), data=st.data())
def test_ddp_job_covers_each_epoch_and_resumes_at_any_step(
    job: dict[str, Any], num_workers: int, epochs: int, data: st.DataObject
) -> None:
    ws, nw, bs, seed = job["world_size"], num_workers, job["batch_size"], job["seed"]
    sel = _selection(job)
    n = sel.shape[0]

    def make(rank: int, seed: int = seed) -> ChunkShuffleSampler:
        return ChunkShuffleSampler(**{**job, "seed": seed}, rank=rank)

    # Uninterrupted: each rank's batches of each epoch, in the order its DataLoader emits them.
    runs = [
        [_dataloader(lambda r=r: make(r), _fresh(e, seed), nw) for e in range(epochs)]
        for r in range(ws)
    ]
    per_epoch = make(0).num_batches(nw)
    for e in range(epochs):
        # Every rank runs the promised number of steps (a rank with fewer would hang DDP).
        assert all(len(runs[r][e]) == per_epoch for r in range(ws))
        assert all(make(r).num_batches(nw) == per_epoch for r in range(ws))
        cells = _cat([b for r in range(ws) for b in runs[r][e]])
        counts = Counter(cells.tolist())
        assert set(counts) <= set(sel.tolist())
        if job["drop_last"]:
            # Disjoint across ranks and workers; only whole batches; the tail dropped is at
            # most the ranks' remainder plus each worker's partial batch.
            assert all(c == 1 for c in counts.values())
            assert all(b.shape[0] == bs for r in range(ws) for b in runs[r][e])
            assert cells.shape[0] >= (n // ws) * ws - ws * nw * (bs - 1)
        else:
            # The union is the whole selection; ranks are padded to equal shards by wrapping
            # around (torch's DistributedSampler), the only cells seen twice.
            assert set(counts) == set(sel.tolist())
            assert cells.shape[0] == ws * -(-n // ws)
            if n % ws == 0:
                assert all(c == 1 for c in counts.values())

    # Stop every rank after the same number of steps (DDP runs in lockstep), as the loader
    # counts them: set_epoch at each epoch's start, advance once per batch handed over.
    step = data.draw(st.integers(0, epochs * per_epoch), label="step")
    for r in range(ws):
        main = make(r)
        done = 0
        for e in range(epochs):
            if done == step:
                break
            main.set_epoch(e)
            take = min(per_epoch, step - done)
            main.advance(take)
            done += take
        state = pickle.loads(pickle.dumps(main.state_dict()))
        assert state["seed"] == seed

        # Resume: a fresh job (another seed given: the state's wins) yields exactly the rest.
        full = [b for ep in runs[r] for b in ep]
        rest: list[np.ndarray] = []
        first = state["epoch"]
        if step and state["batches_yielded"] < per_epoch:
            rest += _dataloader(lambda r=r: make(r, seed=0), state, nw)
            first += 1
        elif step:  # stopped right after an epoch's last batch: go on with the next
            first += 1
        for e in range(first, epochs):
            rest += _dataloader(lambda r=r: make(r, seed=0), _fresh(e, state["seed"]), nw)
        assert _same(rest, full[step:]), (r, state)


def _adata(n_obs: int, seed: int) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    x = rng.poisson(2.0, size=(n_obs, 4)).astype(np.float32)
    obs = pd.DataFrame(
        {"cell_id": np.arange(n_obs, dtype=np.int64)},
        index=pd.Index([f"c{i}" for i in range(n_obs)]),
    )
    return ad.AnnData(x, obs=obs)


def _ids(batches: list[dict[str, Any]]) -> list[list[int]]:
    return [b["cell_id"].numpy().ravel().astype(int).tolist() for b in batches]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_obs=st.integers(1, 120),
    batch_size=st.integers(1, 16),
    world_size=st.integers(1, 3),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    reads_per_buffer=st.integers(1, 3),
    seed=st.integers(0, 2**31),
    subset=st.booleans(),
    data=st.data(),
)
def test_loader_ranks_cover_the_selection_and_resume_after_k(
    n_obs: int,
    batch_size: int,
    world_size: int,
    drop_last: bool,
    shuffle: bool,
    reads_per_buffer: int,
    seed: int,
    subset: bool,
    data: st.DataObject,
) -> None:
    adata = _adata(n_obs, seed)
    manager = AnnDataManager(
        fields=[LayerField("x", None), NumericalObsField("cell_id", "cell_id")]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        manager.register_fields(adata)
    sel = np.arange(n_obs)
    if subset:
        sel = np.flatnonzero(np.random.default_rng(seed).random(n_obs) < 0.6)

    def loader(rank: int) -> AnnDataLoader:
        return AnnDataLoader(
            manager,
            indices=sel,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            rows_per_read=4,
            reads_per_buffer=reads_per_buffer,
            seed=seed,
            rank=rank,
            world_size=world_size,
            num_threads=1,
        )

    full = [_ids(list(loader(r))) for r in range(world_size)]
    lengths = {len(loader(r)) for r in range(world_size)}
    assert lengths == {len(f) for f in full}
    assert len(lengths) == 1  # equal steps per rank
    seen = Counter(c for f in full for b in f for c in b)
    if drop_last or sel.size % world_size == 0:
        assert all(v == 1 for v in seen.values())  # disjoint shards
    if not drop_last:
        assert set(seen) == set(sel.tolist())  # union = the selection
    # Rows match their cells.
    first = next(iter(loader(0)), None)
    if first is not None:
        rows = first["cell_id"].numpy().ravel().astype(int)
        np.testing.assert_array_equal(first["x"].numpy(), adata.X[rows])

    n_batches = lengths.pop()
    k = data.draw(st.integers(0, n_batches), label="k")
    rank = data.draw(st.integers(0, world_size - 1), label="rank")
    interrupted = loader(rank)
    it = iter(interrupted)
    head = _ids([next(it) for _ in range(k)])
    state = pickle.loads(pickle.dumps(interrupted.state_dict()))
    del it
    resumed = loader(rank)
    resumed.load_state_dict(state)
    rest = _ids(list(resumed))
    assert head == full[rank][:k]
    if k < n_batches:
        assert rest == full[rank][k:]
    else:  # the epoch had ended: resuming starts the next one
        nxt = loader(rank)
        nxt.set_epoch(1)
        assert rest == _ids(list(nxt))
