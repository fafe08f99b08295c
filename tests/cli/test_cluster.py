"""Scheduler choice and dask progress (:mod:`atlasloader.cluster`), and the heavy commands on a
real ``dask.distributed`` cluster with worker processes, compared with dask's threads."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import anndata as ad
import dask
import dask.array as da
import numpy as np
import pytest

from atlasloader.cluster import ENV_VAR, ClusterError, active_client, dask_progress, scheduler
from atlasloader.errors import InvalidArgumentError
from atlasloader.store import records
from atlasloader.store.open import open_root


def _registry_without_uuid(path: Path) -> dict:
    meta = records.read_meta(open_root(path, mode="r"))
    regs = meta["registries"]
    for payload in regs.values():
        payload["registry"].pop("_scvi_uuid", None)
    states = {spec: (rec["registry_key"], rec["state"]) for spec, rec in meta["fields"].items()}
    return {"registries": regs, "fields": states}


def _column(path: Path, key: str) -> np.ndarray:
    return np.asarray(ad.read_zarr(path).obs[key])


# --- the library -----------------------------------------------------------------------------
def test_default_is_dask_threads(monkeypatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    before = dask.config.get("scheduler", None)
    with scheduler() as client:
        assert client is None
        assert active_client() is None
    assert dask.config.get("scheduler", None) == before


def test_environment_variable_names_the_cluster(monkeypatch, dask_cluster) -> None:
    monkeypatch.setenv(ENV_VAR, dask_cluster.scheduler_address)
    with scheduler() as client:
        assert client is not None
        assert active_client() is client
        assert da.arange(10, chunks=2).sum().compute() == 45
    assert active_client() is None


def test_address_and_workers_exclude_each_other() -> None:
    with pytest.raises(InvalidArgumentError, match="not both"), scheduler("tcp://h:1", 2):
        pass
    with pytest.raises(InvalidArgumentError, match="positive"), scheduler(workers=0):
        pass


def test_unreachable_scheduler_is_a_cluster_error() -> None:
    t0 = time.perf_counter()
    with (
        pytest.raises(ClusterError, match=r"tcp://127\.0\.0\.1:1"),
        scheduler("tcp://127.0.0.1:1", timeout=1),
    ):
        pass
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ClusterError, match="unknown address scheme"), scheduler("nope://x"):
        pass
    # A failed connection leaves no half-made default client behind: dask still computes on
    # threads afterwards (distributed registers Client(set_as_default=True) before
    # connecting, and every later compute would wait on it forever).
    assert active_client() is None
    assert da.arange(10, chunks=5).sum().compute(scheduler=None) == 45


def test_scheduler_file(tmp_path, dask_cluster) -> None:
    path = tmp_path / "scheduler.json"
    path.write_text(json.dumps({"address": dask_cluster.scheduler_address}))
    with scheduler(str(path)) as client:
        assert client.scheduler.address == dask_cluster.scheduler_address


def test_progress_counts_local_tasks(capsys) -> None:
    x = da.ones(100, chunks=10)
    with dask_progress(True, "summing"):
        assert x.sum().compute() == 100
        assert (x * 2).sum().compute() == 200
    err = capsys.readouterr().err
    line = [text for text in err.splitlines() if "summing" in text][-1]
    done, total = map(int, line.split("tasks")[0].split()[-1].split("/"))
    assert done == total > 20


def test_progress_disabled_or_idle_prints_nothing(capsys) -> None:
    with dask_progress(False):
        da.ones(10, chunks=5).sum().compute()
    with dask_progress(True, "idle"):
        pass
    assert "idle" not in capsys.readouterr().err


def test_progress_on_a_distributed_cluster(capsys, distributed_client) -> None:
    def slow(block: np.ndarray) -> np.ndarray:
        time.sleep(0.1)
        return block

    x = da.ones(40, chunks=4).map_blocks(slow)
    with dask_progress(True, "on the cluster"):
        assert x.sum().compute() == 40
    err = capsys.readouterr().err
    assert "on the cluster" in err
    line = [text for text in err.splitlines() if "on the cluster" in text][-1]
    done, total = map(int, line.split("tasks")[0].split()[-1].split("/"))
    assert done == total > 0


# --- the commands on a cluster ---------------------------------------------------------------
SETUP = ("--batch-key", "batch", "--labels-key", "labels", "--categorical-covariate-keys",
         "labels", "--continuous-covariate-keys", "n_counts", "-q")  # fmt: skip


def test_setup_on_local_workers_equals_threads(cli, copy, tmp_path) -> None:
    threads = copy("atlas")
    workers = tmp_path / "workers.zarr"
    shutil.copytree(threads, workers)
    assert cli("setup", threads, *SETUP).code == 0
    result = cli("setup", workers, *SETUP, "--workers", "2")
    assert result.code == 0, result.err
    assert _registry_without_uuid(workers) == _registry_without_uuid(threads)
    for key in ("_scvi_batch", "_scvi_labels"):
        np.testing.assert_array_equal(_column(workers, key), _column(threads, key))


def test_setup_and_transfer_on_an_existing_cluster(cli, copy, tmp_path, dask_cluster) -> None:
    threads = copy("atlas")
    remote = tmp_path / "remote.zarr"
    shutil.copytree(threads, remote)
    address = dask_cluster.scheduler_address
    assert cli("setup", threads, *SETUP).code == 0
    result = cli("setup", remote, *SETUP[:-1], "--scheduler", address)
    assert result.code == 0, result.err
    assert f"running on the dask cluster at {address} (2 workers)" in result.err
    assert _registry_without_uuid(remote) == _registry_without_uuid(threads)

    query = copy("query")
    transfer = cli(
        "transfer", query, "--reference", remote, "--extend-categories", "--scheduler", address
    )
    assert transfer.code == 0, transfer.err
    registry = records.load_registries(open_root(query, mode="r"))["SCVI"]["registry"]
    mapping = registry["field_registries"]["batch"]["state_registry"]["categorical_mapping"]
    assert mapping["__ndarray__"] == [f"batch_{i}" for i in range(5)]


def test_environment_variable_reaches_the_commands(cli, copy, monkeypatch, dask_cluster) -> None:
    store = copy("atlas")
    monkeypatch.setenv(ENV_VAR, dask_cluster.scheduler_address)
    result = cli("setup", store, "--batch-key", "batch")
    assert result.code == 0, result.err
    assert f"dask cluster at {dask_cluster.scheduler_address}" in result.err


def test_unreachable_scheduler_exits_3(cli, copy) -> None:
    result = cli("validate", copy("atlas"), "--scheduler", "nonsense://nowhere")
    assert result.code == 3
    assert result.err.count("\n") == 1
    assert "cannot connect to the dask scheduler at 'nonsense://nowhere'" in result.err


def test_convert_on_an_existing_cluster_equals_threads(cli, inputs, tmp_path, dask_cluster):
    threads, remote = tmp_path / "threads.zarr", tmp_path / "remote.zarr"
    assert cli("convert", inputs["a"], threads, "-q").code == 0
    result = cli("convert", inputs["a"], remote, "--scheduler", dask_cluster.scheduler_address)
    assert result.code == 0, result.err
    a, b = ad.read_zarr(threads), ad.read_zarr(remote)
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    assert a.obs.equals(b.obs)


def test_convert_many_on_local_workers_equals_threads(cli, inputs, tmp_path) -> None:
    threads, workers = tmp_path / "threads.zarr", tmp_path / "workers.zarr"
    args = (inputs["a"], inputs["b"])
    assert cli("convert", *args, threads, "--shuffle", "-q").code == 0
    result = cli("convert", *args, workers, "--shuffle", "--workers", "2", "-q")
    assert result.code == 0, result.err
    a, b = ad.read_zarr(threads), ad.read_zarr(workers)
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    assert a.obs.equals(b.obs)


def test_validate_on_a_cluster_finds_bad_chunks(cli, copy, dask_cluster) -> None:
    store = copy("atlas")
    chunk = store / "X" / "data" / "c" / "2"
    chunk.write_bytes(b"\x00" * 16 + chunk.read_bytes()[16:])
    result = cli("validate", store, "--scheduler", dask_cluster.scheduler_address)
    assert result.code == 1
    assert "X/data/c/2: chunk (2,) cannot be decoded" in result.out
