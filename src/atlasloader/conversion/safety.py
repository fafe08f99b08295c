"""Crash safety of :func:`atlasloader.convert`: partial stores, their owners, publishing.

A conversion writes into a sibling ``<dst>.partial-<owner>-<uuid>`` directory whose root
attributes do not claim to be AnnData, and renames it to ``dst`` only once complete. The owner
(a digest of the host name, the pid and the process start time) is part of the directory's
name, so it exists from the ``mkdir`` on: a kill at any moment, before the first file is written
or after the last, leaves a directory whose owner can be told. A later conversion to the same
``dst`` removes the partial stores (and stores moved aside by ``overwrite``) of owners on this
host that are gone, so rerunning after an interruption starts clean.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
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


# ``<host digest>-<pid>-<start time, ms>``: who wrote a partial or moved-aside store.
_OWNER = re.compile(r"(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-(?P<started>[0-9]+)-[0-9a-f]{32}")


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def owner() -> dict[str, Any]:
    """This process as the owner of a partial store (host, pid, process start time)."""
    import psutil

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": psutil.Process().create_time(),
    }


def _owned_name(target: Path, kind: str) -> Path:
    me = owner()
    tag = f"{_host()}-{me['pid']}-{round(me['started'] * 1000)}-{uuid.uuid4().hex}"
    return target.with_name(f"{target.name}.{kind}-{tag}")


def partial_path(target: Path) -> Path:
    """A new sibling of ``target`` to write into, named after this process."""
    return _owned_name(target, "partial")


def _owner_alive(pid: int, started_ms: int) -> bool:
    import psutil

    try:
        started = psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.Error:  # AccessDenied: some process exists; assume it is the owner
        return True
    # A different start time means the pid was reused by an unrelated process.
    return abs(started * 1000 - started_ms) < 1000


def _abandoned(path: Path, kind: str) -> bool | None:
    """Whether ``path`` (a partial or moved-aside store) belongs to a process that is gone on
    this host; ``None`` when its name does not say who wrote it."""
    m = _OWNER.fullmatch(path.name.rpartition(f".{kind}-")[2])
    if m is None:
        return None
    if m["host"] != _host():
        return False  # another machine's conversion: it may still run
    return not _owner_alive(int(m["pid"]), int(m["started"]))


def remove_stale_partials(target: Path) -> None:
    """Delete what conversions to ``target`` that died on this host left next to it.

    Partial stores (and stores moved aside by ``overwrite``) whose owner runs elsewhere or
    still runs are left alone: they may be a conversion in progress. None is ever read.
    """
    for kind in ("partial", "old"):
        pattern = glob.escape(str(target)) + f".{kind}-*"
        for path in map(Path, glob.glob(pattern)):
            gone = _abandoned(path, kind)
            if gone is None:
                warnings.warn(
                    f"{str(path)!r} looks like a partial conversion of unknown origin; it was "
                    "left in place (delete it if no conversion is running)",
                    UserWarning,
                    stacklevel=3,
                )
            elif gone and (kind == "partial" or os.path.lexists(target)):
                # A moved-aside store is kept while it is the only copy (target missing).
                shutil.rmtree(path, ignore_errors=True)


def publish(partial: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished store to ``target`` (an existing one is moved aside first)."""
    if not os.path.lexists(target):
        os.rename(partial, target)
        return
    if not overwrite:  # created by someone else while we converted
        check_target(target, overwrite)
    aside = _owned_name(target, "old")
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
