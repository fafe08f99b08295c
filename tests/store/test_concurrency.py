"""Several processes on one store: writers take turns (the store's write lock), readers never
see half state and never write. Real processes on real stores; nothing is mocked."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import atlasloader
from atlasloader import AnnDataLoader, AnnDataManager, read_lazy
from atlasloader.data import make_atlas_store
from atlasloader.errors import StoreLockedError
from atlasloader.fields import CategoricalObsField, LayerField
from atlasloader.store import records
from atlasloader.store.lock import write_lock


def fields_for(setup: str) -> list[object]:
    if setup == "batch":
        return [LayerField("X", None, is_count_data=True), CategoricalObsField("batch", "batch")]
    return [LayerField("X", None), CategoricalObsField("labels", "labels")]


REGISTER = textwrap.dedent(
    """
    import sys, time
    from atlasloader import AnnDataManager, read_lazy
    from atlasloader.fields import CategoricalObsField, LayerField
    path, setup, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if setup == "batch":
        fields = [LayerField("X", None, is_count_data=True), CategoricalObsField("batch", "batch")]
    else:
        fields = [LayerField("X", None), CategoricalObsField("labels", "labels")]
    while time.time() < start:
        time.sleep(0.001)
    m = AnnDataManager(fields=fields, setup_method_args={"model_name": sys.argv[4]})
    m.register_fields(read_lazy(path, mode="r+"))
    print(sorted(m.summary_stats.items()))
    """
)

HOLD = textwrap.dedent(
    """
    import sys, time
    from atlasloader.store.lock import write_lock
    with write_lock(sys.argv[1], "a test holding the lock"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def _store(tmp_path: Path, name: str = "atlas.zarr", n_cells: int = 3_000) -> str:
    return make_atlas_store(
        tmp_path / name, n_cells=n_cells, n_genes=40, nnz_per_cell=8, n_batches=4, n_labels=3
    )


def _snapshot(path: str) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def _codes(path: str, column: str) -> np.ndarray:
    return np.asarray(ad.read_zarr(path).obs[column])


def _clean_codes(tmp_path: Path, setup: str, column: str) -> np.ndarray:
    path = _store(tmp_path, f"clean-{setup}.zarr")
    AnnDataManager(fields=fields_for(setup)).register_fields(read_lazy(path, mode="r+"))
    return _codes(path, column)


def _race(path: str, setups: list[str]) -> list[subprocess.CompletedProcess[str]]:
    start = time.time() + 3.0  # both past their imports, then released together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER, path, s, str(start), f"model_{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, s in enumerate(setups)
    ]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


@pytest.mark.parametrize("setups", [["batch", "batch"], ["batch", "labels"]])
def test_two_processes_registering_one_store_both_land(tmp_path: Path, setups: list[str]) -> None:
    path = _store(tmp_path)
    results = _race(path, setups)
    for r in results:
        assert r.returncode == 0, r.stderr
    meta = records.read_meta(atlasloader.read_lazy(path).group)
    # Every field record and both registries are there: none overwrote the other's.
    keys = sorted(rec["registry_key"] for rec in meta["fields"].values())
    want = {"batch": ["X", "batch"], "labels": ["X", "labels"]}
    assert sorted(set(keys)) == sorted({k for s in setups for k in want[s]})
    assert set(meta["registries"]) == {"model_0", "model_1"}
    for setup, column in (("batch", "_scvi_batch"), ("labels", "_scvi_labels")):
        if setup in setups:
            np.testing.assert_array_equal(
                _codes(path, column), _clean_codes(tmp_path, setup, column)
            )
    # And a registration afterwards reuses them (read-only: nothing to write).
    for setup in setups:
        m = AnnDataManager(fields=fields_for(setup))
        m.register_fields(read_lazy(path, mode="r"))


def test_a_writer_waits_then_times_out_naming_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _store(tmp_path)
    before = _snapshot(path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, path, "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("ATLASLOADER_LOCK_TIMEOUT", "0.5")
        m = AnnDataManager(fields=[CategoricalObsField("batch", "batch")])
        with pytest.raises(StoreLockedError, match=rf"written by process {holder.pid} "):
            m.register_fields(read_lazy(path, mode="r+"))
        with pytest.raises(StoreLockedError, match="ATLASLOADER_LOCK_TIMEOUT"):
            atlasloader.preprocess.preprocess(path)
    finally:
        holder.kill()
        holder.wait()
    assert _snapshot(path) == before  # nothing was written while waiting


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    path = _store(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, path, "60"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    t0 = time.monotonic()
    with write_lock(path, "after the kill"):
        waited = time.monotonic() - t0
    assert waited < 1.0
    assert ad.read_zarr(path).shape == (3_000, 40)


def test_the_lock_is_reentrant_in_a_process(tmp_path: Path) -> None:
    path = _store(tmp_path)
    with write_lock(path, "outer"), write_lock(path, "inner"):
        m = AnnDataManager(fields=[CategoricalObsField("batch", "batch")])
        m.register_fields(read_lazy(path, mode="r+"))  # takes it a third time
    assert "_scvi_batch" in ad.read_zarr(path).obs


LOAD = textwrap.dedent(
    """
    import sys, hashlib
    import numpy as np
    from atlasloader import AnnDataLoader, AnnDataManager, read_lazy
    from atlasloader.fields import CategoricalObsField, LayerField
    m = AnnDataManager(fields=[LayerField("X", None), CategoricalObsField("batch", "batch")])
    m.register_fields(read_lazy(sys.argv[1], mode="r"))
    h = hashlib.sha256()
    n = 0
    for b in AnnDataLoader(m, batch_size=128, shuffle=True, seed=int(sys.argv[2])):
        h.update(np.ascontiguousarray(b["X"].numpy()).tobytes())
        h.update(np.ascontiguousarray(b["batch"].numpy()).tobytes())
        n += len(b["X"])
    print(n, h.hexdigest())
    """
)


def test_eight_readers_load_one_store_at_once_without_writing(tmp_path: Path) -> None:
    path = _store(tmp_path)
    AnnDataManager(
        fields=[LayerField("X", None), CategoricalObsField("batch", "batch")]
    ).register_fields(read_lazy(path, mode="r+"))
    before = _snapshot(path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOAD, path, str(i % 2)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        outs.append(out.split())
    assert all(o[0] == "3000" for o in outs)
    # Same seed, same batches, in every process (the DDP ranks' shared view).
    assert len({o[1] for o in outs[::2]}) == 1
    assert len({o[1] for o in outs[1::2]}) == 1
    assert _snapshot(path) == before  # no process wrote anything


PREPROCESS = textwrap.dedent(
    """
    import sys
    from atlasloader.preprocess import preprocess
    for i in range(int(sys.argv[2])):
        preprocess(sys.argv[1], n_top_genes=10, overwrite=True, size_factors=i % 2 == 0)
    print("done")
    """
)


def test_a_loader_iterating_while_another_process_preprocesses(tmp_path: Path) -> None:
    path = _store(tmp_path)
    manager = AnnDataManager(fields=[LayerField("X", None), CategoricalObsField("batch", "batch")])
    manager.register_fields(read_lazy(path, mode="r+"))

    def epoch() -> list[tuple[np.ndarray, np.ndarray]]:
        loader = AnnDataLoader(manager, batch_size=100, shuffle=True, seed=3)
        return [(b["X"].numpy().copy(), b["batch"].numpy().copy()) for b in loader]

    clean = epoch()
    writer = subprocess.Popen(
        [sys.executable, "-c", PREPROCESS, path, "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    epochs = 0
    try:
        while writer.poll() is None or epochs == 0:
            got = epoch()
            epochs += 1
            assert len(got) == len(clean)
            for (x, b), (cx, cb) in zip(got, clean):
                np.testing.assert_array_equal(x, cx)
                np.testing.assert_array_equal(b, cb)
            ad.read_zarr(path)  # opens at any moment of the other process's writes
    finally:
        _out, err = writer.communicate(timeout=240)
    assert writer.returncode == 0, err
    assert epochs >= 1
    assert "highly_variable" in ad.read_zarr(path).var
