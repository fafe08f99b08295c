"""Faults while loading from a real Zarr store: a killed worker, Ctrl-C, a damaged chunk.

Hangs are the failure these tests look for, so every iteration that could hang runs in a
subprocess (:data:`CHILD`) with a hard timeout: a hang fails the test instead of stalling CI.
The child iterates epochs of a registered store forever, consuming slowly, and reports on its
stdout when it has batches in hand (``READY``) and what ended it (one JSON line, with the wall
clock time it was raised). The test then kills a worker or sends SIGINT and measures, from the
signal, when the error was raised and when the process was gone.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import psutil
import pytest
import zarr

from atlasloader import AnnDataLoader
from atlasloader.errors import CorruptChunkError

from .conftest import N_OBS, ROW_CHUNK, Case, cell_ids, make_data

# A worker killed mid-epoch must surface within this many seconds (torch checks its workers
# every 5 s at worst); Ctrl-C must end the process within EXIT_BOUND.
DEATH_BOUND = 10.0
EXIT_BOUND = 2.0
HARD_TIMEOUT = 60.0  # the child is killed (and the test fails) past this: a hang

CHILD = r"""
import json, signal, sys, time, warnings
# As run from a terminal: a shell's background job (nohup, `&` in a script) starts with SIGINT
# ignored, and Python then never raises KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)
import atlasloader
from atlasloader import AnnDataLoader, AnnDataManager
from atlasloader.fields import CategoricalObsField, LayerField, NumericalObsField

path, workers = sys.argv[1], int(sys.argv[2])
manager = AnnDataManager(fields=[
    LayerField("x", None, is_count_data=True),
    CategoricalObsField("batch", "batch"),
    NumericalObsField("cell_id", "cell_id"),
])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    manager.register_fields(atlasloader.read_lazy(path))
loader = AnnDataLoader(
    manager, batch_size=8, shuffle=True, reads_per_buffer=2, prefetch=2, num_threads=2,
    num_workers=workers, multiprocessing_context="fork" if workers else None,
)
n = 0
try:
    while True:
        for batch in loader:
            n += 1
            if n == 5:
                print("READY", flush=True)
            time.sleep(0.005)
except BaseException as e:
    report = {"t": time.time(), "type": type(e).__name__, "msg": str(e), "batches": n}
    print(json.dumps(report), flush=True)
    raise
"""


class Child:
    """The :data:`CHILD` loop over ``store`` in its own session, its stdout read by a thread."""

    def __init__(self, store: Path, num_workers: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(store), str(num_workers)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: a Ctrl-C can reach all of it
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + HARD_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line == "READY":
                return
            if line is None:
                pytest.fail(f"the child ended before loading a batch:\n{self.stderr()}")
        self.kill()
        pytest.fail("the child loaded no batch within the hard timeout")

    def wait_exit(self) -> float:
        """Block until the child exits (failing the test past the hard timeout); monotonic end."""
        try:
            self.proc.wait(timeout=HARD_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the child hung: still running {HARD_TIMEOUT:.0f} s after the fault")
        return time.monotonic()

    def report(self) -> dict[str, Any]:
        """The JSON line the child printed when its loop was ended."""
        while (line := self.lines.get(timeout=HARD_TIMEOUT)) is not None:
            if line.startswith("{"):
                return dict(json.loads(line))
        pytest.fail(f"the child reported no error:\n{self.stderr()}")

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read() if self.proc.poll() is not None else ""

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def child() -> Iterator[Any]:
    """``child(store, num_workers)`` starts a :class:`Child`; whatever is left is killed."""
    started: list[Child] = []

    def start(store: Path, num_workers: int) -> Child:
        started.append(Child(store, num_workers))
        return started[-1]

    yield start
    for c in started:
        c.kill()


def _alive(procs: list[psutil.Process], grace: float = 0.0) -> list[int]:
    """Pids of ``procs`` still running (zombies count as gone) after up to ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


# --- a worker process killed mid-epoch ----------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("victim", [0, 1])
def test_killed_worker_raises_naming_it_and_never_hangs(build, child, victim: int) -> None:
    built = build(Case("zarr3", "csr", "float32"))
    c = child(built.path, 2)
    c.wait_ready()
    workers = c.workers()
    assert len(workers) == 2, [p.name() for p in workers]
    target = sorted(workers, key=lambda p: p.pid)[victim]
    t0 = time.time()
    os.kill(target.pid, signal.SIGKILL)
    c.wait_exit()
    report = c.report()
    raised_after = report["t"] - t0
    assert raised_after < DEATH_BOUND, f"the error came {raised_after:.1f} s after the SIGKILL"
    assert c.proc.returncode != 0
    # torch's SIGCHLD handler raises "DataLoader worker (pid 123) is killed by signal" wherever
    # the main thread happens to be (the consumer's own code too); a kill while a batch is in
    # transit surfaces instead as that transfer's error (ConnectionResetError), which the
    # loader turns into WorkerDiedError naming the worker. Either way the pid is named.
    if report["type"] == "WorkerDiedError":
        assert re.search(rf"worker pid {target.pid} \(exit code -9\)", report["msg"]), report
    else:
        assert report["type"] == "RuntimeError", report
        assert re.search(rf"worker \(pid(\(s\))? ([\d, ]*\b)?{target.pid}\b", report["msg"]), report
    print(f"SIGKILL of worker {victim} -> error in {raised_after:.2f} s: {report['msg']}")
    # The surviving worker does not outlive the loader for long (torch's workers watch their
    # parent every 5 s).
    assert not _alive(workers, grace=DEATH_BOUND)


# --- Ctrl-C during iteration --------------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("to_group", [False, True], ids=["process", "group"])
@pytest.mark.parametrize("num_workers", [0, 2], ids=["threads", "workers"])
def test_ctrl_c_stops_everything_and_exits_fast(
    build, child, num_workers: int, to_group: bool
) -> None:
    # ``group`` is a terminal's Ctrl-C (every process of the foreground group, workers
    # included), ``process`` a ``kill -INT`` of the main process alone.
    built = build(Case("zarr2", "dense", "float32"))
    c = child(built.path, num_workers)
    c.wait_ready()
    workers = c.workers()
    assert len(workers) == num_workers
    t0 = time.monotonic()
    if to_group:
        os.killpg(c.proc.pid, signal.SIGINT)
    else:
        os.kill(c.proc.pid, signal.SIGINT)
    took = c.wait_exit() - t0
    report = c.report()
    assert report["type"] == "KeyboardInterrupt", report
    assert c.proc.returncode in (-signal.SIGINT, 128 + signal.SIGINT, 1)
    target = "group" if to_group else "process"
    print(f"SIGINT ({num_workers} workers, to the {target}) -> exit in {took:.2f} s")
    assert took < EXIT_BOUND, f"the process exited {took:.2f} s after SIGINT"
    assert not _alive(workers), "worker processes outlived the loader"


# --- a damaged chunk mid-epoch ------------------------------------------------------------------
def _garble(path: Path, start: int = 0, size: int | None = None) -> None:
    """Overwrite ``size`` bytes of ``path`` from ``start`` (all of it by default) with noise."""
    data = bytearray(path.read_bytes())
    size = len(data) - start if size is None else size
    noise = (os.urandom(16) + b"not a compressed chunk") * (size // 38 + 1)
    data[start : start + size] = noise[:size]
    path.write_bytes(bytes(data))


def _shard_x(store: Path, rows_per_shard: int) -> None:
    """Rewrite dense ``X`` of ``store`` (Zarr v3) in shards of ``ROW_CHUNK``-row inner chunks."""
    adata = ad.read_zarr(store)
    group = zarr.open_group(store, mode="r+", use_consolidated=False)
    del group["X"]
    chunks = (ROW_CHUNK, adata.n_vars)
    ad.io.write_elem(
        group,
        "X",
        np.asarray(adata.X),
        dataset_kwargs={"chunks": chunks, "shards": (rows_per_shard, adata.n_vars)},
    )
    zarr.consolidate_metadata(store)


def _inner_chunk_bytes(shard: Path, n_inner: int, inner: int) -> tuple[int, int]:
    """Offset and length of inner chunk ``inner`` from the index at the end of a shard file."""
    raw = shard.read_bytes()
    index = np.frombuffer(raw[-(16 * n_inner + 4) : -4], dtype="<u8").reshape(n_inner, 2)
    return int(index[inner, 0]), int(index[inner, 1])


N_CHUNKS = N_OBS // ROW_CHUNK
LAST_CSR_CHUNK = 7  # conftest writes CSR data in chunks of 500 values: 8 chunks at N_OBS


def _damage(built: Any, layout: str) -> tuple[str, str]:
    """Damage one chunk near the end of ``X``; returns (array name, chunk words in the error)."""
    store: Path = built.path
    if layout == "zarr2-dense":
        _garble(store / "X" / f"{N_CHUNKS - 1}.0")
        return "/X", f"chunk {N_CHUNKS - 1}"
    if layout == "zarr2-csr":
        assert (store / "X" / "data" / str(LAST_CSR_CHUNK)).is_file()
        assert not (store / "X" / "data" / str(LAST_CSR_CHUNK + 1)).exists()
        _garble(store / "X" / "data" / str(LAST_CSR_CHUNK))
        return "/X/data", f"chunk {LAST_CSR_CHUNK}"
    # zarr3 sharded: two inner chunks per shard; garble the last inner chunk's bytes and keep
    # the shard index intact, so the shard opens and that chunk fails to decode.
    _shard_x(store, 2 * ROW_CHUNK)
    shard = store / "X" / "c" / str(N_CHUNKS // 2 - 1) / "0"
    offset, length = _inner_chunk_bytes(shard, 2, 1)
    _garble(shard, offset, length)
    return "/X", f"chunk {N_CHUNKS - 1}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("layout", ["zarr2-dense", "zarr2-csr", "zarr3-sharded"])
def test_corrupt_chunk_mid_epoch_names_store_array_and_chunk(
    build, layout: str, num_workers: int
) -> None:
    fmt = "csr" if layout == "zarr2-csr" else "dense"
    built = build(Case(layout[:5], fmt, "float32"))
    array, chunk = _damage(built, layout)
    adl = AnnDataLoader(
        built.manager,
        batch_size=10,
        shuffle=False,
        reads_per_buffer=1,
        rows_per_read=ROW_CHUNK,
        num_workers=num_workers,
        multiprocessing_context="fork" if num_workers else None,
    )
    got: list[dict[str, Any]] = []
    with pytest.raises(CorruptChunkError) as err:
        got.extend(adl)
    msg = str(err.value)
    assert str(built.path) in msg
    assert repr(array) in msg or f"{array}" in msg
    assert chunk in msg
    # Mid-epoch: the cells before the damaged chunk arrived (in order, each once) first.
    ids = cell_ids(got)
    assert len(ids) > 0
    assert len(np.unique(ids)) == len(ids)
    if num_workers == 0:
        np.testing.assert_array_equal(ids, np.arange(len(ids)))
    if fmt == "dense":  # no row of the damaged (last) chunk was yielded
        assert ids.max() < N_OBS - ROW_CHUNK


def test_damage_helpers_hit_the_chunk_they_name(build) -> None:
    # The sharded layout really has 2 inner chunks per shard, and the index read back is sane.
    built = build(Case("zarr3", "dense", "float32"))
    _shard_x(built.path, 2 * ROW_CHUNK)
    x = zarr.open_array(built.path / "X")
    assert x.shards == (2 * ROW_CHUNK, x.shape[1])
    shard = built.path / "X" / "c" / "0" / "0"
    offsets = [_inner_chunk_bytes(shard, 2, i) for i in range(2)]
    assert all(off >= 0 and off + n <= shard.stat().st_size for off, n in offsets)
    np.testing.assert_array_equal(x[:], np.asarray(make_data().X))
