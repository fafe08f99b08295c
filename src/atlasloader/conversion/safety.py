"""Crash safety of :func:`atlasloader.convert`: partial stores, their owners, publishing.

A conversion writes into a sibling ``<dst>.partial-<uuid>`` directory whose root attributes
name its owner (host, pid, process start time) and do not claim to be AnnData, and renames it
to ``dst`` only once complete. A later conversion to the same ``dst`` removes the partial
stores of owners that are gone (crashed or killed), so rerunning after an interruption starts
clean.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import uuid
import warnings
from pathlib import Path
from typing import Any

from ..errors import StoreError

# Root attributes of a store being written: neither anndata nor atlasloader opens it, and the
# owner lets a later run remove it once its process is gone.
PARTIAL_ENCODING = "atlasloader-partial"


def check_target(target: Path, overwrite: bool) -> None:
    if os.path.lexists(target) and not overwrite:
        msg = (
            f"cannot convert to {str(target)!r}: it already exists; pass overwrite=True to "
            "replace it"
        )
        raise StoreError(msg)


def partial_path(target: Path) -> Path:
    return target.with_name(f"{target.name}.partial-{uuid.uuid4().hex}")


def owner() -> dict[str, Any]:
    import psutil

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": psutil.Process().create_time(),
    }


def _owner_alive(owner: dict[str, Any]) -> bool:
    import psutil

    try:
        started = psutil.Process(int(owner["pid"])).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.Error:  # AccessDenied: some process exists; assume it is the owner
        return True
    # A different start time means the pid was reused by an unrelated process.
    return abs(started - float(owner["started"])) < 1.0


def _partial_owner(path: Path) -> dict[str, Any] | None:
    try:
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None
    if attrs.get("encoding-type") != PARTIAL_ENCODING:
        return None
    owner = attrs.get("owner")
    return owner if isinstance(owner, dict) and {"host", "pid", "started"} <= owner.keys() else None


def remove_stale_partials(target: Path) -> None:
    """Delete partial stores of ``target`` left by conversions that crashed on this host.

    A partial whose owner runs elsewhere (or still runs) is left alone: it may be a
    conversion in progress. It is never read: it is not ``target``.
    """
    pattern = glob.escape(str(target)) + ".partial-*"
    for path in map(Path, glob.glob(pattern)):
        owner = _partial_owner(path)
        if owner is None:
            warnings.warn(
                f"{str(path)!r} looks like a partial conversion of unknown origin; it was left "
                "in place (delete it if no conversion is running)",
                UserWarning,
                stacklevel=3,
            )
        elif owner["host"] == socket.gethostname() and not _owner_alive(owner):
            shutil.rmtree(path, ignore_errors=True)


def publish(partial: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished store to ``target`` (an existing one is moved aside first)."""
    if not os.path.lexists(target):
        os.rename(partial, target)
        return
    if not overwrite:  # created by someone else while we converted
        check_target(target, overwrite)
    aside = target.with_name(f"{target.name}.old-{uuid.uuid4().hex}")
    os.replace(target, aside)
    try:
        os.replace(partial, target)
    except BaseException:
        os.replace(aside, target)  # put the old store back rather than leave nothing
        raise
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink()
