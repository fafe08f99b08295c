"""Distributed training: Lightning's DDP strategy on two CPU processes, and late sharding.

Each DDP rank must train on a disjoint shard of the training cells, the shards together must
cover every training cell exactly once per epoch, and the shards must be re-dealt each epoch.
Lightning builds the data loaders before it initialises the process group, so the loader
takes its rank and world size when iteration starts: a loader built before
``init_process_group`` must still shard.

Padding: with ``drop_last=False`` (the default), when the training cells do not divide evenly
by the world size each rank is padded to ``ceil(n / world_size)`` cells by wrapping around to
the start of the epoch's shuffled stream (torch ``DistributedSampler`` semantics), so every
rank runs the same number of batches (unequal counts hang DDP) and ``n % world_size`` cells
are trained on twice per epoch; the union over ranks is still every cell. ``drop_last=True``
instead drops the stream tail down to ``n // world_size`` cells per rank.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lightning")

import torch.multiprocessing as mp
from _ddp_train import flat, register, shard_worker

from atlasloader import AnnDataLoader
from atlasloader.data import make_atlas_store

SCRIPT = Path(__file__).with_name("_ddp_train.py")
N_CELLS, N_GENES, BATCH = 2000, 50, 100
THREADS_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "PYTHONWARNINGS": "ignore",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 cells in 16-row chunks, registered once (the ranks reuse the registration)."""
    path = tmp_path_factory.mktemp("ddp") / "atlas.zarr"
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_lightning_ddp_ranks_train_disjoint_shards_covering_every_cell(
    store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    env = {
        **os.environ,
        **THREADS_ENV,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK", "RANK"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(store), str(out), "2", str(BATCH)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in records] == [0, 1]
    assert all(r["world_size"] == 2 for r in records)
    train = np.asarray(records[0]["train_idx"])
    assert train.size == 1800  # divides evenly by 2 ranks and by the batch size: no padding
    np.testing.assert_array_equal(records[1]["train_idx"], train)  # the same split everywhere

    shards: dict[int, list[np.ndarray]] = {}
    for r, rec in enumerate(records):
        assert sorted(rec["epochs"]) == ["0", "1"]
        assert rec["lengths"] == 9  # 900 cells per rank, 100 per batch
        assert rec["epoch_end"] == 1
        shards[r] = [flat(rec["epochs"][str(e)]) for e in range(2)]
        for ids in shards[r]:
            assert ids.size == 900
            assert np.unique(ids).size == 900  # no cell twice on one rank
    for e in range(2):
        a, b = shards[0][e], shards[1][e]
        assert np.intersect1d(a, b).size == 0, f"epoch {e}: the ranks' shards overlap"
        union = np.concatenate([a, b])
        np.testing.assert_array_equal(np.sort(union), train)  # every cell exactly once
    for r in range(2):
        assert set(shards[r][0]) != set(shards[r][1]), f"rank {r} got the same shard twice"
        assert not np.array_equal(shards[r][0], shards[r][1])


def test_loader_built_before_the_process_group_shards_once_it_exists(
    store: Path, tmp_path: Path
) -> None:
    manager = register(store, mode="r")
    even = AnnDataLoader(
        manager, batch_size=BATCH, shuffle=True, seed=4, load_indices=True, num_threads=1
    )
    # 1001 cells: 2 ranks are padded to 501 each (one cell twice per epoch).
    odd_idx = np.r_[np.arange(0, 2000, 2), 1999]  # 1001 cells
    odd = AnnDataLoader(
        manager,
        indices=odd_idx,
        batch_size=BATCH,
        shuffle=True,
        seed=4,
        load_indices=True,
        num_threads=1,
    )
    assert (even.sampler.rank, even.sampler.world_size) == (0, 1)
    assert len(even) == N_CELLS // BATCH  # unsharded before the group exists
    mp.start_processes(
        shard_worker,
        args=(2, _free_port(), [even, odd], str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    records = [json.loads((tmp_path / f"shard{r}.json").read_text()) for r in range(2)]

    # Even: halves of all 2,000 cells, disjoint, re-dealt in the second epoch.
    halves = [[np.asarray(e) for e in rec[0]["epochs"]] for rec in records]
    assert [rec[0]["len"] for rec in records] == [10, 10]
    for e in range(2):
        a, b = halves[0][e], halves[1][e]
        assert a.size == b.size == N_CELLS // 2
        assert np.intersect1d(a, b).size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), np.arange(N_CELLS))
    assert set(halves[0][0]) != set(halves[0][1])

    # Odd: each rank padded to ceil(1001 / 2) = 501 cells; together every cell, one twice.
    for e in range(2):
        a, b = (np.asarray(rec[1]["epochs"][e]) for rec in records)
        assert a.size == b.size == 501
        assert np.unique(a).size == np.unique(b).size == 501
        assert np.intersect1d(a, b).size == 1
        np.testing.assert_array_equal(np.unique(np.concatenate([a, b])), odd_idx)
