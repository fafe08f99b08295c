"""glibc allocator tuning (:mod:`atlasloader.loading.allocator`), checked in fresh processes.

mallopt settings are process-wide and applied once, so every behavioural check runs in its own
subprocess with a clean environment. The effect is observed, not assumed: after a 24 MiB
``mmap``-ed block is freed, glibc's dynamic rule serves the next 20 MiB block from the heap;
with the thresholds fixed it gets its own ``mmap`` (``mallinfo2().hblkhd`` grows).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atlasloader.loading.allocator import (
    ENV_OPT_OUT,
    MAX_THRESHOLD,
    MIN_THRESHOLD,
    USER_MALLOC_ENV,
    mmap_threshold_for,
    skip_reason,
)

MIB = 1 << 20


def _glibc_with_mallinfo2() -> bool:
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION") or ""
        return version.startswith("glibc") and hasattr(ctypes.CDLL(None), "mallinfo2")
    except (AttributeError, ValueError, OSError):
        return False


needs_glibc = pytest.mark.skipif(
    not _glibc_with_mallinfo2(), reason="glibc's malloc (2.33 or later, for mallinfo2) only"
)

# What each subprocess reports: the tuning and whether a 20 MiB block got its own mmap after a
# 24 MiB mmap-ed block was freed (glibc's dynamic threshold would have risen to 24 MiB).
PROBE = r"""
import ctypes, json
import numpy as np
from atlasloader.loading import allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

first = allocator.tune_allocator(512 * 2000 * 4)
again = allocator.tune_allocator(512 * 2000 * 4)
smaller = allocator.tune_allocator(128 * 2000 * 4)
block = np.ones(24 << 20, np.uint8)
del block
before = libc.mallinfo2().hblkhd
block = np.ones(20 << 20, np.uint8)
mmapped = libc.mallinfo2().hblkhd - before >= 20 << 20
del block
larger = allocator.tune_allocator(512 * 5000 * 4)
print(json.dumps({
    "first": first.to_dict(), "same": first is again is smaller, "larger": larger.to_dict(),
    "mmapped": bool(mmapped), "trimmed": allocator.release_free_memory(),
}))
"""

CLEAN = (ENV_OPT_OUT, *USER_MALLOC_ENV, "GLIBC_TUNABLES", "LD_PRELOAD")


def run_py(code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    full = {k: v for k, v in os.environ.items() if k not in CLEAN}
    full.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- pure decisions -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "false", "No", " off "])
def test_opt_out_values(value: str) -> None:
    reason = skip_reason({ENV_OPT_OUT: value}, "glibc 2.36")
    assert reason is not None
    assert ENV_OPT_OUT in reason


def test_opt_in_values_tune() -> None:
    assert skip_reason({ENV_OPT_OUT: "1"}, "glibc 2.36") is None
    assert skip_reason({}, "glibc 2.36") is None


@pytest.mark.parametrize("libc", [None, "", "musl 1.2"])
def test_not_glibc_is_left_alone(libc: str | None) -> None:
    assert skip_reason({}, libc) == "not glibc's malloc (nothing to tune)"


@pytest.mark.parametrize("name", USER_MALLOC_ENV)
def test_user_malloc_env_is_respected(name: str) -> None:
    reason = skip_reason({name: "2"}, "glibc 2.36")
    assert reason is not None
    assert f"{name}=2" in reason


def test_glibc_tunables_and_preloaded_allocators_are_respected() -> None:
    tunables = "glibc.malloc.arena_max=2"
    assert tunables in (skip_reason({"GLIBC_TUNABLES": tunables}, "glibc 2.36") or "")
    # Tunables of other glibc parts are not the user tuning malloc.
    assert skip_reason({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, "glibc 2.36") is None
    preload = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
    assert "jemalloc" in (skip_reason({"LD_PRELOAD": preload}, "glibc 2.36") or "")


def test_threshold_examples() -> None:
    assert mmap_threshold_for(0) == MIN_THRESHOLD
    assert mmap_threshold_for(512 * 2000 * 4) == 8 * MIB
    assert mmap_threshold_for(1024 * 2000 * 4) == 10 * MIB
    assert mmap_threshold_for(512 * 10_000 * 4) == 25 * MIB
    assert mmap_threshold_for(1024 * 7000 * 4) == MAX_THRESHOLD
    assert mmap_threshold_for(512 * 20_000 * 4) == MIN_THRESHOLD  # mmap-ed whatever we set


@given(st.integers(0, 1 << 30))
def test_threshold_bounds(nbytes: int) -> None:
    t = mmap_threshold_for(nbytes)
    assert MIN_THRESHOLD <= t <= MAX_THRESHOLD
    assert t % MIB == 0
    if nbytes < MAX_THRESHOLD:
        # Every batch-sized allocation stays below the threshold (on the heap) when it can.
        assert t >= min(MAX_THRESHOLD, nbytes + nbytes // 4)


@given(st.integers(0, MAX_THRESHOLD - 1), st.integers(0, MAX_THRESHOLD - 1))
def test_threshold_monotone_below_the_cap(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert mmap_threshold_for(lo) <= mmap_threshold_for(hi)


# --- real processes -------------------------------------------------------------------------------
@needs_glibc
def test_tuning_applies_once_and_fixes_the_threshold() -> None:
    out = run_py(PROBE)
    first = out["first"]
    assert first["applied"], first["reason"]
    assert first["mmap_threshold"] == 8 * MIB
    assert first["trim_threshold"] == 16 * MIB
    assert out["same"]  # idempotent: the same decision, nothing set again
    assert out["mmapped"]  # the dynamic threshold is off: 20 MiB >= 8 MiB is mmap-ed
    assert out["larger"]["mmap_threshold"] == mmap_threshold_for(512 * 5000 * 4) > 8 * MIB
    assert isinstance(out["trimmed"], bool)


@needs_glibc
@pytest.mark.parametrize(
    ("env", "expect"),
    [({"MALLOC_ARENA_MAX": "2"}, "MALLOC_ARENA_MAX=2"), ({ENV_OPT_OUT: "0"}, ENV_OPT_OUT)],
)
def test_skipped_tuning_leaves_glibc_as_it_is(env: dict[str, str], expect: str) -> None:
    out = run_py(PROBE, env=env)
    assert not out["first"]["applied"]
    assert expect in out["first"]["reason"]
    assert out["first"]["mmap_threshold"] is None
    assert out["same"]
    assert not out["larger"]["applied"]
    assert not out["mmapped"]  # glibc's dynamic threshold still rose to 24 MiB
    assert out["trimmed"] is False


EPOCHS = r"""
import json, sys
import atlasloader
from atlasloader import AnnDataLoader, AnnDataManager
from atlasloader.fields import CategoricalObsField, LayerField
from atlasloader.loading import allocator

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))

manager = AnnDataManager(fields=[
    LayerField(registry_key="X", layer=None, is_count_data=True),
    CategoricalObsField(registry_key="batch", obs_key="batch"),
])
manager.register_fields(atlasloader.read_lazy(sys.argv[1]))
out = {}
for sparse in (False, True):
    loader = AnnDataLoader(manager, batch_size=512, shuffle=True, sparse=sparse)
    after = []
    for _ in range(6):
        for batch in loader:
            pass
        del batch
        after.append(rss())
    out["sparse" if sparse else "dense"] = after
out["tuning"] = allocator.current_tuning().to_dict()
print(json.dumps(out))
"""


@needs_glibc
def test_epochs_do_not_grow_rss(tmp_path: Path) -> None:
    from atlasloader.data import make_atlas_store

    store = make_atlas_store(
        tmp_path / "a.zarr",
        n_cells=30_000,
        n_genes=2000,
        nnz_per_cell=200,
        chunk_rows=16,
        shard_rows=4096,
        codec="zstd",
    )
    out = run_py(EPOCHS, store)
    assert out["tuning"]["applied"], out["tuning"]["reason"]
    assert out["tuning"]["mmap_threshold"] == mmap_threshold_for(512 * 2000 * 4)
    for mode in ("dense", "sparse"):
        rss = out[mode]
        # Buffers (8192 rows: ~13 MB) and batches (4 MB) in flight are a few tens of MB; the
        # bound is generous so that only memory kept epoch after epoch fails it.
        growth = max(rss[1:]) - rss[0]
        assert growth < 64 * MIB, f"{mode}: RSS after each epoch {[r // MIB for r in rss]} MiB"
