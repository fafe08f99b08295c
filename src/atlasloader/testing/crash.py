"""A crash harness: SIGKILL an operation at points spread over its run, then check the store.

For each operation (:data:`OPS`) a pristine input is built once, a clean child process runs the
operation to measure its duration (from the moment its imports are done) and its result, and
then, for each of ``n`` kill points spread uniformly over that duration, a fresh copy of the
input is handed to a child that is SIGKILLed at that point. After each kill:

1. ``anndata.read_zarr`` and ``atlasloader.read_lazy`` open the store written to (for
   ``convert``: the destination is absent, nothing published, or opens whole);
2. every file of the user's own data (X, layers, the original obs/var columns, uns, obsm) hashes
   as before, in every input;
3. :func:`atlasloader.validation.validate.check_store` finds no damage: clean, or only the named
   leftovers of the interrupted write (``kind="incomplete"``);
4. the operation run again succeeds and gives the clean run's result (codes, columns, matrix).

A kill point survives when all four hold. :func:`full_disk` and :func:`read_only` run an
operation on a store that cannot take its writes (a small tmpfs, a read-only bind mount; both
need root and are skipped without it): the operation must fail with a named atlasloader error
and leave the store as it was. ``python scripts/crash_points.py`` runs the long version and
writes the table of the README.

Examples
--------
>>> from atlasloader.testing.crash import run_op
>>> report = run_op("setup", n_points=50, workdir=tmp)  # doctest: +SKIP
>>> report.survived, report.total  # doctest: +SKIP
(50, 50)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OPS", "CrashReport", "Op", "can_mount", "full_disk", "read_only", "run_op"]

N_CELLS, N_GENES = 3000, 200
_READY = "CRASH-HARNESS-READY"
_FAILED = "CRASH-HARNESS-FAILED"

# The child: imports first, then says READY (the measured duration starts there), then runs.
# A failure is reported as one JSON line (the error's class and message) and exit code 3.
_CHILD = """
import json, sys, warnings
warnings.simplefilter("ignore")
import atlasloader
from .. import AnnDataManager, read_lazy
from ..fields import CategoricalObsField, LayerField
from ..preprocess import preprocess
base = sys.argv[1]
def fields():
    return [LayerField("X", None, is_count_data=True), CategoricalObsField("batch", "batch"),
            CategoricalObsField("labels", "labels")]
print("{ready}", flush=True)
try:
{body}
except Exception as e:
    print("{failed}" + json.dumps({{"type": type(e).__name__, "msg": str(e),
        "atlasloader": isinstance(e, atlasloader.errors.AtlasLoaderError)}}), flush=True)
    sys.exit(3)
"""

_REGISTER = "AnnDataManager(fields()).register_fields(read_lazy(base + '/ref.zarr'))"
_CONVERT = (
    "atlasloader.convert({src}, base + '/out.zarr', shuffle={shuffle}, chunk_rows=256, "
    "shard_rows=1024, block_rows=512, overwrite=True)"
)
_ONE = "base + '/ref.zarr'"
_TWO = "[base + '/ref.zarr', base + '/query.zarr']"
_BODIES = {
    "setup": _REGISTER,
    "reregister": _REGISTER,
    "transfer": (
        "m = AnnDataManager(fields()); m.register_fields(read_lazy(base + '/ref.zarr'))\n"
        "m.transfer_fields(read_lazy(base + '/query.zarr'), extend_categories=True)"
    ),
    "preprocess": (
        "preprocess(base + '/ref.zarr', n_top_genes=50, batch_key='batch', progress=False)"
    ),
    "convert": _CONVERT.format(src=_ONE, shuffle=False),
    "convert-shuffle": _CONVERT.format(src=_ONE, shuffle=True),
    "convert-many": _CONVERT.format(src=_TWO, shuffle=False),
    "convert-many-shuffle": _CONVERT.format(src=_TWO, shuffle=True),
}


def _child_code(op: str) -> str:
    body = "\n".join("    " + line for line in _BODIES[op].splitlines())
    return _CHILD.format(ready=_READY, failed=_FAILED, body=body)


@dataclass(frozen=True)
class Op:
    """One operation under test: what it reads and writes, and what a clean run of it gives."""

    name: str
    inputs: tuple[str, ...]  # the user's stores (relative to the work folder): never changed
    target: str  # the store the operation writes
    prepare: Callable[[Path], None]  # builds the pristine input in the folder
    result: Callable[[Path], dict[str, Any]]  # what the operation produced
    publishes: bool = False  # the target is created whole at the end (absent before)

    def outcome(self, base: Path) -> str:
        """:attr:`result` as canonical JSON: comparable, NaN equal to NaN."""
        return json.dumps(self.result(base), sort_keys=True)


@dataclass
class CrashReport:
    """What :func:`run_op` found: kill points survived, and what failed at the others."""

    op: str
    total: int = 0
    survived: int = 0
    duration_s: float = 0.0
    published: int = 0  # kills after which the operation's output was already complete
    incomplete: int = 0  # kills that left named leftovers (validate: "incomplete")
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.op}: {self.survived}/{self.total} survived (clean run "
            f"{self.duration_s:.2f} s; {self.published} kills after the result was complete, "
            f"{self.incomplete} left named leftovers)"
        )


# --- inputs -----------------------------------------------------------------------------------
def _write(path: Path, seed: int, batches: list[str], prefix: str) -> None:
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    x = sp.random(N_CELLS, N_GENES, density=0.1, format="csr", random_state=seed)
    x.data = rng.poisson(3.0, size=x.nnz).astype(np.float32) + 1
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical(rng.choice(batches, N_CELLS)),
            "labels": pd.Categorical(rng.choice(["t0", "t1", "t2"], N_CELLS)),
            "n_counts": np.asarray(x.sum(1)).ravel(),
        },
        index=[f"{prefix}{i}" for i in range(N_CELLS)],
    )
    var = pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)])
    with ad.settings.override(zarr_write_format=3):
        ad.AnnData(x, obs=obs, var=var, uns={"note": "user"}).write_zarr(path, chunks=(500,))


def _register(base: Path) -> None:
    subprocess.run(
        [sys.executable, "-c", _child_code("setup"), str(base)], check=True, capture_output=True
    )


def _prepare_one(base: Path) -> None:
    _write(base / "ref.zarr", 0, ["b0", "b1", "b2"], "r")


def _prepare_two(base: Path) -> None:
    _prepare_one(base)
    _write(base / "query.zarr", 1, ["b1", "b3"], "q")


def _prepare_transfer(base: Path) -> None:
    _prepare_two(base)
    _register(base)  # the reference is registered before: the child reuses its records


def _prepare_reregister(base: Path) -> None:
    """A registered store whose batch column the user rewrote: the codes are stale."""
    import anndata as ad
    import pandas as pd
    import zarr

    _prepare_one(base)
    _register(base)
    root = zarr.open_group(base / "ref.zarr", mode="r+", use_consolidated=False)
    values = np.random.default_rng(7).choice(["b0", "b4"], N_CELLS)
    ad.io.write_elem(root["obs"], "batch", pd.Categorical(values))
    zarr.consolidate_metadata(base / "ref.zarr")


def _codes(store: Path) -> dict[str, Any]:
    import anndata as ad

    obs = ad.read_zarr(store).obs
    return {c: obs[c].to_numpy().tolist() for c in sorted(obs.columns) if c.startswith("_scvi")}


def _ref_codes(base: Path) -> dict[str, Any]:
    return _codes(base / "ref.zarr")


def _query_codes(base: Path) -> dict[str, Any]:
    return _codes(base / "query.zarr")


def _hvg(base: Path) -> dict[str, Any]:
    import anndata as ad

    a = ad.read_zarr(base / "ref.zarr")
    cols = ["size_factor", "total_counts", "n_genes_by_counts"]
    out = {c: np.round(a.obs[c].to_numpy(), 6).tolist() for c in cols if c in a.obs}
    out.update({c: a.var[c].to_numpy().tolist() for c in sorted(a.var.columns)})
    return out


def _converted(base: Path) -> dict[str, Any]:
    import anndata as ad

    a = ad.read_zarr(base / "out.zarr")
    x = a.X.tocsr() if hasattr(a.X, "tocsr") else a.X
    digest = hashlib.sha256()
    for part in (x.indptr, x.indices, x.data) if hasattr(x, "indptr") else (np.asarray(x),):
        digest.update(np.ascontiguousarray(part).tobytes())
    return {
        "X": digest.hexdigest(),
        "obs_names": a.obs_names.tolist(),
        "obs": {c: a.obs[c].astype(str).tolist() for c in sorted(a.obs.columns)},
        "var_names": a.var_names.tolist(),
    }


OPS: dict[str, Op] = {
    "setup": Op("setup", ("ref.zarr",), "ref.zarr", _prepare_one, _ref_codes),
    "reregister": Op("reregister", ("ref.zarr",), "ref.zarr", _prepare_reregister, _ref_codes),
    "transfer": Op(
        "transfer", ("ref.zarr", "query.zarr"), "query.zarr", _prepare_transfer, _query_codes
    ),
    "preprocess": Op("preprocess", ("ref.zarr",), "ref.zarr", _prepare_one, _hvg),
    **{
        name: Op(name, inputs, "out.zarr", prepare, _converted, publishes=True)
        for name, inputs, prepare in [
            ("convert", ("ref.zarr",), _prepare_one),
            ("convert-shuffle", ("ref.zarr",), _prepare_one),
            ("convert-many", ("ref.zarr", "query.zarr"), _prepare_two),
            ("convert-many-shuffle", ("ref.zarr", "query.zarr"), _prepare_two),
        ]
    },
}


# --- checks -----------------------------------------------------------------------------------
_GROUP_META = ("zarr.json", ".zattrs", ".zgroup", ".zmetadata")


def user_files(store: Path) -> dict[str, str]:
    """sha256 of every file of the user's data: all files but the metadata of the root, obs
    and var groups (where registrations add columns and records) and the ``_scvi_*`` columns
    a registration wrote."""
    out: dict[str, str] = {}
    for dirpath, _, files in os.walk(store):
        rel = os.path.relpath(dirpath, store)
        for name in files:
            if rel in (".", "obs", "var") and name in _GROUP_META:
                continue
            if (
                rel.split(os.sep)[0] in ("obs", "obsm")
                and rel.split(os.sep)[1:2]
                and (rel.split(os.sep)[1].startswith("_scvi"))
            ):
                continue  # registered by atlasloader before (the stale encoding to replace)
            path = Path(dirpath) / name
            out[os.path.join(rel, name)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _inputs_files(op: Op, base: Path) -> dict[str, dict[str, str]]:
    return {name: user_files(base / name) for name in op.inputs}


def _changed(before: dict[str, dict[str, str]], base: Path) -> list[str]:
    out = []
    for name, files in before.items():
        now = user_files(base / name)
        out += [f"{name}/{k}" for k, v in files.items() if now.get(k) != v]
    return out


@dataclass
class _Run:
    elapsed: float  # from READY to exit (or to the kill)
    killed: bool
    error: dict[str, Any] | None = None  # the child's failure report, if it failed


def _run_child(op: str, base: Path, kill_after: float | None) -> _Run:
    """Run ``op`` in a child; SIGKILL it ``kill_after`` seconds after READY (None: let it end)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _child_code(op), str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    start = time.perf_counter()
    if _READY not in line:
        _, err = proc.communicate()
        raise RuntimeError(f"{op} child did not start: {err[-2000:]}")
    killed = False
    if kill_after is not None:
        deadline = start + kill_after
        while time.perf_counter() < deadline and proc.poll() is None:
            time.sleep(min(0.002, max(0.0, deadline - time.perf_counter())))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
    out, err = proc.communicate()
    elapsed = time.perf_counter() - start
    if killed:
        return _Run(elapsed, True)
    if proc.returncode == 0:
        return _Run(elapsed, False)
    for row in out.splitlines():
        if row.startswith(_FAILED):
            return _Run(elapsed, False, json.loads(row[len(_FAILED) :]))
    raise RuntimeError(f"{op} child died (exit {proc.returncode}): {err[-2000:]}")


def _succeed(op: str, base: Path) -> float:
    run = _run_child(op, base, None)
    if run.error is not None:
        raise RuntimeError(f"{op} failed: {run.error['type']}: {run.error['msg']}")
    return run.elapsed


def _opens(store: Path) -> str | None:
    import anndata as ad

    from ..store.lazy import read_lazy

    try:
        ad.read_zarr(store)
        read_lazy(store, mode="r")
    except Exception as e:  # any failure to open is what the harness looks for
        return f"does not open: {type(e).__name__}: {e}"
    return None


def _damage(store: Path) -> tuple[list[str], bool]:
    """Problems that are damage, and whether there were named leftovers (``incomplete``)."""
    from ..validation.validate import check_store

    report = check_store(store)
    return [str(p) for p in report.damaged], len(report.damaged) < len(report.problems)


def _check(
    op: Op,
    base: Path,
    pristine: dict[str, dict[str, str]],
    clean: str,
    before: set[str],
    report: CrashReport,
) -> list[str]:
    """What is wrong after a kill: ``before`` are the problems the input had already (a stale
    registration the operation is to replace is the old state, not damage)."""
    store = base / op.target
    problems: list[str] = []
    changed = _changed(pristine, base)
    if changed:
        problems.append(f"user files changed: {changed[:3]}")
    if op.publishes and not store.exists():
        pass  # nothing published: all-or-nothing held
    elif (why := _opens(store)) is not None:
        return [*problems, why]
    else:
        damage, incomplete = _damage(store)
        damage = [p for p in damage if p not in before]
        report.incomplete += incomplete
        if damage:
            problems.append(f"validate: {damage[:3]}")
        if op.publishes:
            report.published += 1
            if op.outcome(base) != clean:
                problems.append("a published result differs from the clean run's")
    try:
        _succeed(op.name, base)
    except RuntimeError as e:
        return [*problems, f"rerun failed: {e}"]
    if op.outcome(base) != clean:
        problems.append("rerun result differs from the clean run's")
    leftovers = [p.name for p in base.iterdir() if ".partial-" in p.name]
    if leftovers:
        problems.append(f"partial stores left after a successful rerun: {leftovers}")
    return problems


def _fresh(template: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(template, dest)
    return dest


def _pristine(op: Op, work: Path) -> Path:
    template = work / f"{op.name}-pristine"
    if not (template / "done").exists():
        shutil.rmtree(template, ignore_errors=True)
        template.mkdir(parents=True)
        op.prepare(template)
        (template / "done").touch()
    return template


def run_op(name: str, n_points: int, workdir: str | os.PathLike[str]) -> CrashReport:
    """Kill ``name`` at ``n_points`` points spread uniformly over its clean run; check each."""
    op = OPS[name]
    work = Path(workdir)
    template = _pristine(op, work)
    pristine = _inputs_files(op, template)
    # Every run uses the same folder: results that name their inputs' paths compare equal.
    base = _fresh(template, work / f"{name}-run")
    before = set(_damage(base / op.target)[0]) if not op.publishes else set()
    report = CrashReport(name, duration_s=_succeed(name, base))
    clean = op.outcome(base)
    for i in range(n_points):
        at = report.duration_s * (i + 0.5) / n_points
        base = _fresh(template, work / f"{name}-run")
        _run_child(name, base, at)
        problems = _check(op, base, pristine, clean, before, report)
        report.total += 1
        if problems:
            report.failures.append(f"kill at {at:.3f} s: {'; '.join(problems)}")
        else:
            report.survived += 1
    shutil.rmtree(work / f"{name}-run", ignore_errors=True)
    return report


# --- stores that cannot take the writes ---------------------------------------------------------
def can_mount() -> bool:
    """Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN), as the next two need."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(f"/tmp/atlasloader-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True
            ).returncode
            == 0
        )
        if ok:
            subprocess.run(["umount", str(probe)], check=True, capture_output=True)
        return ok
    finally:
        probe.rmdir()


@contextlib.contextmanager
def _mounted(where: Path, *options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *options, str(where)], check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True, capture_output=True)


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class NoWriteReport:
    """One run of an operation on a store that cannot take its writes."""

    op: str
    case: str
    error: dict[str, Any] | None
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        named = f"{self.error['type']}: {self.error['msg'][:160]}" if self.error else "it fit"
        return f"{self.op} ({self.case}): {'ok' if self.ok else self.problems} -> {named}"


def _after_refusal(
    op: Op, base: Path, run: _Run, pristine: dict[str, dict[str, str]], must_fail: bool
) -> list[str]:
    """What is wrong after ``run`` failed to write (or, unless ``must_fail``, succeeded)."""
    problems = []
    if run.error is None:
        if must_fail:
            problems.append("the operation did not fail")
        elif (why := _opens(base / op.target)) is not None:
            problems.append(why)
        elif damage := _damage(base / op.target)[0]:
            problems.append(f"validate: {damage[:3]}")
        return problems
    if not run.error["atlasloader"]:
        problems.append(f"not a named atlasloader error: {run.error['type']}")
    changed = _changed(pristine, base)
    if changed:
        problems.append(f"user files changed: {changed[:3]}")
    store = base / op.target
    if op.publishes:
        if store.exists():
            problems.append("a destination was published")
        leftovers = [p.name for p in base.iterdir() if ".partial-" in p.name]
        if leftovers:
            problems.append(f"partial stores left visible: {leftovers}")
    elif (why := _opens(store)) is not None:
        problems.append(why)
    else:
        damage, incomplete = _damage(store)
        if damage or incomplete:
            problems.append(f"validate after the failed write: {damage[:3] or 'leftovers'}")
    return problems


def full_disk(name: str, workdir: str | os.PathLike[str], headroom: int) -> NoWriteReport:
    """Run ``name`` on a copy of its input in a tmpfs with ``headroom`` bytes left over.

    The operation either fits (and then must have written a sound store) or fails with a
    named error, leaving its inputs and target as they were, with nothing half-written.
    """
    op = OPS[name]
    work = Path(workdir)
    template = _pristine(op, work)
    pristine = _inputs_files(op, template)
    size = (_du(template) + headroom + 4095) // 4096 * 4096 + 64 * 4096  # + inodes' blocks
    with _mounted(work / f"{name}-full", "-t", "tmpfs", "-o", f"size={size}", "tmpfs") as mnt:
        base = mnt / "w"
        shutil.copytree(template, base)
        # Fill what is left but ``headroom`` bytes, whatever the filesystem's own overhead.
        free = shutil.disk_usage(mnt).free - headroom
        if free > 0:
            with open(mnt / "filler", "wb") as f, contextlib.suppress(OSError):
                f.write(b"\0" * free)
        run = _run_child(name, base, None)
        problems = _after_refusal(op, base, run, pristine, must_fail=False)
    return NoWriteReport(name, f"disk full, {headroom} B free", run.error, problems)


def read_only(name: str, workdir: str | os.PathLike[str]) -> NoWriteReport:
    """Run ``name`` with its input (and destination folder) on a read-only bind mount."""
    op = OPS[name]
    work = Path(workdir)
    template = _pristine(op, work)
    pristine = _inputs_files(op, template)
    src = _fresh(template, work / f"{name}-rw")
    ro = work / f"{name}-ro"
    with _mounted(ro, "--bind", str(src)):
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        run = _run_child(name, ro, None)
        problems = _after_refusal(op, ro, run, pristine, must_fail=True)
    shutil.rmtree(src, ignore_errors=True)
    return NoWriteReport(name, "read-only store", run.error, problems)
