"""Operations on a store that cannot take their writes: a full disk, a read-only mount.

:func:`full_disk` runs an operation (of :data:`~.ops.OPS`) on a copy of its input in a small
tmpfs, :func:`read_only` on a read-only bind mount; both need root (:func:`can_mount`) and the
tests skip them without it. The operation must fail with a named atlasloader error and leave
the store as it was (on a full disk it may instead fit, and must then have written a sound
store). :mod:`atlasloader.testing.crash` re-exports all four names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ops import (
    OPS,
    Op,
    _changed,
    _damage,
    _fresh,
    _input_damage,
    _inputs_files,
    _opens,
    _pristine,
    _Run,
    _run_child,
)

__all__ = ["NoWriteReport", "can_mount", "full_disk", "read_only"]


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
    op: Op,
    base: Path,
    run: _Run,
    pristine: dict[str, dict[str, str]],
    must_fail: bool,
    before: set[str],
) -> list[str]:
    """What is wrong after ``run`` failed to write (or, unless ``must_fail``, succeeded);
    ``before`` are the problems the input had already (the stale registration that
    ``reregister`` is to replace stays as it was when the write is refused)."""
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
        damage = [p for p in damage if p not in before]
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
        problems = _after_refusal(op, base, run, pristine, False, _input_damage(op, template))
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
        problems = _after_refusal(op, ro, run, pristine, True, _input_damage(op, template))
    shutil.rmtree(src, ignore_errors=True)
    return NoWriteReport(name, "read-only store", run.error, problems)
