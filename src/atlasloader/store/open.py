"""Open a Zarr AnnData store (local path or URL) without reading its data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import zarr

from ..errors import NotAnnDataStoreError, ReadOnlyStoreError, StoreError

Mode = Literal["r", "r+"]


def is_url(path: str | os.PathLike[str]) -> bool:
    return "://" in str(path)


S3_POOL_CONNECTIONS = 64


def _storage_options(path: str, storage_options: dict[str, Any] | None) -> dict[str, Any] | None:
    if not is_url(path) or str(path).startswith("file://"):
        return None
    opts = dict(storage_options or {})
    # An S3-compatible endpoint (MinIO, moto, Ceph) can come from the environment, as with aws-cli.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if str(path).startswith("s3://") and endpoint and "endpoint_url" not in opts:
        opts["client_kwargs"] = {"endpoint_url": endpoint, **opts.get("client_kwargs", {})}
    if str(path).startswith("s3://"):
        # botocore pools 10 connections by default, fewer than the ranged GETs the loader keeps
        # in flight: match the fetcher's concurrency unless the caller chose a pool size.
        config = dict(opts.get("config_kwargs", {}))
        config.setdefault("max_pool_connections", S3_POOL_CONNECTIONS)
        opts["config_kwargs"] = config
    return opts


def open_root(
    path: str | os.PathLike[str],
    mode: Mode = "r",
    storage_options: dict[str, Any] | None = None,
) -> zarr.Group:
    """Open the root group of an AnnData Zarr store and check that it is one.

    Parameters
    ----------
    path
        Local path, ``file://`` or fsspec URL (``s3://bucket/atlas.zarr``).
    mode
        ``"r"`` to read, ``"r+"`` to read and write encodings back.
    storage_options
        Passed to fsspec for URLs (credentials, ``client_kwargs={"endpoint_url": ...}``).
    """
    spath = str(path)
    if not is_url(spath) and not Path(spath).exists():
        msg = f"no AnnData store at {spath!r}: the path does not exist; check the path"
        raise StoreError(msg)
    if not is_url(spath) and Path(spath).is_file():
        raise NotAnnDataStoreError(not_a_directory_message(spath))
    opts = _storage_options(spath, storage_options)
    # Writers must see their own new arrays, so they bypass consolidated metadata (which is
    # refreshed once at the end of a registration); readers use it (one request on S3).
    kwargs: dict[str, Any] = {"mode": mode}
    if mode != "r":
        kwargs["use_consolidated"] = False
    if opts is not None:
        kwargs["storage_options"] = opts
    try:
        group = zarr.open_group(spath, **kwargs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        msg = (
            f"no Zarr group at {spath!r} ({e}); pass an AnnData .zarr store (written by "
            "anndata's write_zarr or atlasloader convert)"
        )
        raise NotAnnDataStoreError(msg) from e
    except PermissionError as e:
        msg = f"store {spath!r} cannot be opened with mode {mode!r}: {e}"
        raise ReadOnlyStoreError(msg) from e
    except Exception as e:  # zarr raises several unrelated types for unreadable metadata
        broken = _unreadable_metadata(spath) if isinstance(e, ValueError) else None
        where = f" ({broken} is not valid JSON)" if broken else ""
        msg = (
            f"cannot open {spath!r} as a Zarr store{where}: {type(e).__name__}: {e}; restore "
            "that metadata file from a copy, or re-create the store"
        )
        raise NotAnnDataStoreError(msg) from e
    enc = group.attrs.get("encoding-type")
    if enc not in ("anndata", None) or "obs" not in group or "var" not in group:
        msg = (
            f"{spath!r} is a Zarr group but not an AnnData store (encoding-type {enc!r}, "
            f"members {sorted(group.keys())[:8]}); write it with anndata's write_zarr or "
            "atlasloader.convert"
        )
        raise NotAnnDataStoreError(msg)
    return group


def not_a_directory_message(path: str) -> str:
    """Why the file ``path`` is not a store, and what to do (an ``.h5ad`` under any name)."""
    with open(path, "rb") as f:
        hdf5 = f.read(8) == b"\x89HDF\r\n\x1a\n"
    stem, ext = os.path.splitext(os.path.basename(path))
    target = f"{stem}.converted.zarr" if ext == ".zarr" else f"{stem}.zarr"
    if hdf5 or path.endswith((".h5ad", ".h5")):
        kind = ": it is an HDF5 (.h5ad) file" if hdf5 else ""
        return (
            f"{path!r} is a file, not an AnnData Zarr store (a directory or URL){kind}; "
            f"convert it first: atlasloader convert {path} {target}"
        )
    return (
        f"{path!r} is a file, not an AnnData Zarr store (a directory or URL); pass the store's "
        "directory"
    )


def _unreadable_metadata(path: str) -> str | None:
    """The root metadata file of a local store that is not valid JSON, if any."""
    import json

    for name in ("zarr.json", ".zmetadata", ".zattrs", ".zgroup"):
        file = Path(path) / name
        if file.is_file():
            try:
                json.loads(file.read_bytes())
            except ValueError:
                return str(file)
    return None


def store_is_writable(group: zarr.Group) -> bool:
    try:
        return not group.store.read_only
    except AttributeError:  # pragma: no cover - older zarr
        return True


def local_root(group: zarr.Group) -> Path | None:
    """The filesystem directory of a local store, else None."""
    root = getattr(group.store, "root", None)
    if root is None:
        return None
    return Path(root) / group.path if group.path else Path(root)
