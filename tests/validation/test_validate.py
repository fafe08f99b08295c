"""validate_store on stores with an interrupted write: leftovers are named, not damage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import zarr

from atlasloader import AnnDataManager, read_lazy
from atlasloader.fields import CategoricalObsField, LayerField
from atlasloader.store import records
from atlasloader.store.write import STAGING
from atlasloader.testing import crash
from atlasloader.validation.validate import check_store


def _prepared(tmp_path: Path, op: str) -> Path:
    """The store ``op`` of the crash harness writes to, prepared as its input."""
    base = tmp_path / "w"
    base.mkdir()
    crash.OPS[op].prepare(base)
    return base


def test_validate_names_leftovers_of_an_interrupted_write_without_calling_them_damage(
    tmp_path: Path,
) -> None:
    store = _prepared(tmp_path, "setup") / "ref.zarr"
    assert check_store(store).ok
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    root.create_array(f"{STAGING}/deadbeef", shape=(3000,), dtype="int8")
    report = check_store(store)
    assert [p.where for p in report.problems] == [STAGING]
    assert report.problems[0].kind == "incomplete"
    assert "interrupted" in report.problems[0].what
    assert report.damaged == ()


# A re-registration killed after it re-encoded the stale batch codes, before its records were
# committed (``os._exit``: no cleanup, as SIGKILL).
KILLED_REREGISTRATION = """
import os, sys
from atlasloader import AnnDataManager, read_lazy
from atlasloader.fields import CategoricalObsField, LayerField
from atlasloader.store import records
records.save_records = lambda *a, **k: os._exit(17)
fields = [LayerField("X", None, is_count_data=True), CategoricalObsField("batch", "batch"),
          CategoricalObsField("labels", "labels")]
AnnDataManager(fields).register_fields(read_lazy(sys.argv[1] + "/ref.zarr"))
"""


def test_a_registration_killed_part_way_is_named_as_incomplete_and_mended_by_a_rerun(
    tmp_path: Path,
) -> None:
    base = _prepared(tmp_path, "reregister")
    store = base / "ref.zarr"
    stale = check_store(store)
    assert stale.damaged  # the user rewrote obs/batch after registering: stale, not incomplete
    assert all("stale" in p.what for p in stale.damaged)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_REREGISTRATION, str(base)])
    assert proc.wait() == 17
    report = check_store(store)
    assert report.damaged == ()
    # The mark names the writer; the space it held for a rollback is an incomplete leftover.
    assert {"attribute 'atlasloader'", STAGING} <= {p.where for p in report.problems}
    first = next(p for p in report.problems if p.where == "attribute 'atlasloader'")
    assert "registration" in first.what
    assert f"pid {proc.pid}" in first.what  # the child's pid: the writer that died
    assert len(report.problems) > 1  # the registrations it was replacing, named as such
    fields = [
        LayerField("X", None, is_count_data=True),
        CategoricalObsField("batch", "batch"),
        CategoricalObsField("labels", "labels"),
    ]
    AnnDataManager(fields).register_fields(read_lazy(store, mode="r+"))
    assert check_store(store).ok
    root = zarr.open_group(store, mode="r", use_consolidated=False)
    assert records.pending_operation(root) is None
