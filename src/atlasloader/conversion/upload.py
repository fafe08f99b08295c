"""Publish a finished local store to a remote URL so that it never opens half-written.

Object stores have no atomic rename, so a converted store is written locally first (the usual
all-or-nothing way) and then uploaded in an order that keeps every intermediate state unopenable
rather than wrong: chunk objects first, then the metadata of arrays and groups, and the root
group's ``zarr.json`` (which zarr, anndata and atlasloader open first, and which holds the
consolidated metadata) last. Until that last object lands the URL is not a store; after it, the
store is complete.

Leftovers of an interrupted upload (objects under the URL but no root ``zarr.json``) are removed
before a new upload. Replacing an existing store (``overwrite=True``) deletes its root
``zarr.json`` first, so during the replacement the URL reads as no store at all, never as a mix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import RemoteStoreError, StoreError

__all__ = ["check_remote_target", "upload_store"]

_ROOT_META = ("zarr.json", ".zgroup", ".zattrs", ".zmetadata")
_META_NAMES = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})


def _filesystem(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    from ..store.open import _storage_options

    opts = _storage_options(url, storage_options) or {}
    try:
        fs, root = url_to_fs(url, **opts)
    except Exception as e:  # unknown protocol, missing s3fs/gcsfs...
        msg = f"cannot reach {url!r}: {type(e).__name__}: {e}"
        raise RemoteStoreError(msg) from e
    return fs, str(root).rstrip("/")


def _exists(fs: Any, root: str) -> bool:
    return any(fs.exists(f"{root}/{name}") for name in _ROOT_META)


def _exists_error(url: str) -> StoreError:
    msg = (
        f"cannot convert to {url!r}: a store already exists there; pass overwrite=True "
        "(--overwrite) to replace it, or choose another URL"
    )
    return StoreError(msg)


def _remote_error(action: str, url: str, e: OSError) -> RemoteStoreError:
    """What went wrong reading or writing ``url``, and what to do about it."""
    if isinstance(e, PermissionError):
        hint = "check the credentials and the bucket's permissions"
    elif isinstance(e, FileNotFoundError):
        hint = "does the bucket exist?"
    else:
        hint = "check the endpoint and network, then rerun"
    return RemoteStoreError(f"cannot {action} {url!r}: {type(e).__name__}: {e}; {hint}")


def check_remote_target(
    url: str, overwrite: bool, storage_options: dict[str, Any] | None = None
) -> None:
    """Fail early (before converting) when ``url`` holds a store and ``overwrite`` is False."""
    fs, root = _filesystem(url, storage_options)
    try:
        exists = _exists(fs, root)
    except OSError as e:
        raise _remote_error("read", url, e) from e
    if exists and not overwrite:
        raise _exists_error(url)


def upload_store(
    local: str | os.PathLike[str],
    url: str,
    *,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Upload the Zarr store at ``local`` to ``url``, metadata last (see the module docstring).

    Raises
    ------
    StoreError
        ``url`` holds a store and ``overwrite`` is False.
    RemoteStoreError
        The bucket or endpoint cannot be reached or written (permissions, credentials).
    """
    fs, root = _filesystem(url, storage_options)
    local = Path(local)
    try:
        complete = _exists(fs, root)
        if complete and not overwrite:
            raise _exists_error(url)
        if complete:
            for name in _ROOT_META:  # from here on the URL opens as no store, never a mix
                if fs.exists(f"{root}/{name}"):
                    fs.rm_file(f"{root}/{name}")
        if fs.exists(root):
            fs.rm(root, recursive=True)  # an old store, or what an interrupted upload left
        fs.invalidate_cache()
        files = sorted(p for p in local.rglob("*") if p.is_file())
        chunks = [p for p in files if p.name not in _META_NAMES]
        meta = [p for p in files if p.name in _META_NAMES and p.parent != local]
        # Deepest metadata first, so no group names a child that is not there yet.
        meta.sort(key=lambda p: len(p.relative_to(local).parts), reverse=True)
        top = [local / n for n in _ROOT_META if (local / n).is_file() and n != "zarr.json"]
        top += [local / "zarr.json"] if (local / "zarr.json").is_file() else []
        for batch in (chunks, meta, top):
            if batch:
                remote = [f"{root}/{p.relative_to(local).as_posix()}" for p in batch]
                fs.put([str(p) for p in batch], remote)
    except StoreError:
        raise
    except OSError as e:
        raise _remote_error("write", url, e) from e
