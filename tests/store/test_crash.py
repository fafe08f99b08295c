"""The crash harness, short: a few SIGKILL points per operation, a full disk, a read-only mount.

``python scripts/crash_points.py`` runs the long version (50 points per operation) and writes
``benchmarks/results/crash_points.md``; these run the same checks at two points, so a change
that breaks the all-or-nothing promise fails here first.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from atlasloader.errors import DiskFullError, ReadOnlyStoreError, os_errors
from atlasloader.testing import crash

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("op", ["setup", "convert-many-shuffle"])
def test_killed_operation_leaves_a_store_that_opens_and_reruns_clean(
    tmp_path: Path, op: str
) -> None:
    report = crash.run_op(op, n_points=2, workdir=tmp_path)
    assert report.total == 2
    assert report.duration_s > 0
    assert report.survived == report.total, report.failures


@pytest.mark.parametrize(
    ("code", "cls", "words"),
    [
        (errno.ENOSPC, DiskFullError, "no space left"),
        (errno.EDQUOT, DiskFullError, "no space left"),
        (errno.EROFS, ReadOnlyStoreError, "read-only filesystem"),
    ],
)
def test_filesystem_errors_are_named(code: int, cls: type, words: str, tmp_path: Path) -> None:
    # The real errors come from a real filesystem below; this checks the mapping of each errno.
    with pytest.raises(cls, match=words) as info, os_errors(tmp_path / "a.zarr", "registration"):
        raise OSError(code, "from the kernel")
    assert "a.zarr" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_other_os_errors_pass_unchanged(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), os_errors(tmp_path, "registration"):
        raise FileNotFoundError(errno.ENOENT, "gone")


needs_mount = pytest.mark.skipif(not crash.can_mount(), reason="mounting a tmpfs needs root")


@needs_mount
@pytest.mark.timeout(300)
@pytest.mark.parametrize("op", ["setup", "reregister", "preprocess", "convert-many-shuffle"])
def test_full_disk_fails_named_and_leaves_nothing_half_written(tmp_path: Path, op: str) -> None:
    nw = crash.full_disk(op, tmp_path, headroom=0)
    assert nw.error is not None, "a full disk must make the write fail"
    assert nw.error["atlasloader"], nw.error
    assert nw.ok, nw.problems


@needs_mount
@pytest.mark.timeout(300)
@pytest.mark.parametrize("op", ["setup", "convert"])
def test_read_only_mount_fails_named_and_writes_nothing(tmp_path: Path, op: str) -> None:
    nw = crash.read_only(op, tmp_path)
    assert nw.error is not None
    assert nw.error["type"] == "ReadOnlyStoreError", nw.error
    assert nw.ok, nw.problems
