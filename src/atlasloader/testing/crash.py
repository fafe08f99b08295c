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

This module holds the kill points, their checks and :func:`run_op`; the operations, their
child process and the store checks they share are in :mod:`.ops`, the full-disk and
read-only runs in :mod:`.nowrite` (re-exported here).

Examples
--------
>>> from atlasloader.testing.crash import run_op
>>> report = run_op("setup", n_points=50, workdir=tmp)  # doctest: +SKIP
>>> report.survived, report.total  # doctest: +SKIP
(50, 50)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .nowrite import NoWriteReport, can_mount, full_disk, read_only
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
    _run_child,
    _succeed,
    user_files,
)

__all__ = [
    "OPS",
    "CrashReport",
    "NoWriteReport",
    "Op",
    "can_mount",
    "full_disk",
    "read_only",
    "run_op",
    "user_files",
]


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


def run_op(name: str, n_points: int, workdir: str | os.PathLike[str]) -> CrashReport:
    """Kill ``name`` at ``n_points`` points spread uniformly over its clean run; check each."""
    op = OPS[name]
    work = Path(workdir)
    template = _pristine(op, work)
    pristine = _inputs_files(op, template)
    # Every run uses the same folder: results that name their inputs' paths compare equal.
    base = _fresh(template, work / f"{name}-run")
    before = _input_damage(op, base)
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
