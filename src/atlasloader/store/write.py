"""Write encoded columns into a store so that a crash never leaves a store that opens wrong.

Each array is written in full under a staging prefix and then made visible in one step: a
directory rename on local stores, or (object stores) chunk objects copied before the metadata
object that makes the array exist. Obs columns become visible to anndata only once their name
is added to ``column-order``, after the data is in place.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import zarr

from ..errors import InvalidArgumentError, ReadOnlyStoreError, StoreError
from ..reading.remote import is_remote_store
from .open import local_root, store_is_writable
from .records import TOKEN_ATTR

# Inside ``obs``: anndata reads only the obs columns named in ``column-order``, whereas every
# member of the root group (and of ``obsm``) is read, so staging there would make a store that
# ``anndata.read_zarr`` cannot open while (or after a crash during) a registration.
STAGING_NAME = "__atlasloader_staging__"
STAGING = f"obs/{STAGING_NAME}"
# In the staging area while a registration is under way: the disk its rollback needs.
RESERVE_NAME = "rollback-reserve"
RESERVE_SLACK = 64 * 1024
ARRAY_ATTRS = {"encoding-type": "array", "encoding-version": "0.2.0"}
# Rows per stored object of an encoded column (a shard in Zarr v3): a 10^8-cell column is ~100
# objects. Inside a shard, chunks of ENCODED_INNER_ROWS rows (uncompressed on local disk, so a
# loader reads just its runs' rows; Zarr v2 has no shards: chunks of that size).
ENCODED_CHUNK_ROWS = 1 << 20
ENCODED_INNER_ROWS = 1 << 14
_META_NAMES = ("zarr.json", ".zarray", ".zattrs", ".zgroup")


def check_key(frame: str, key: str) -> None:
    """Refuse a key that is not one plain member name of ``frame`` (``"obs"``, ``"obsm"``).

    Store keys are paths: ``"a/b"`` would create a nested group and ``".."`` climb out of
    ``frame``, or out of the store. Such keys are refused, never followed.
    """
    if not key or "/" in key or "\\" in key or key in (".", "..") or key.startswith(STAGING_NAME):
        msg = (
            f"cannot write adata.{frame}[{key!r}] into the store: as a store path "
            f"{frame}/{key} would not be one member of {frame!r} ('/', '\\' and '..' name "
            "other places in, or outside, the store); choose a registry key without '/', "
            "'\\' or '..'"
        )
        raise InvalidArgumentError(msg)


def _check_target(target: str) -> None:
    frame, _, key = target.partition("/")
    check_key(frame, key)


def require_writable(root: zarr.Group, what: str, path: str) -> None:
    if not store_is_writable(root):
        msg = (
            f"cannot write {what} into the read-only store {path!r}: open it with "
            "read_lazy(path, mode='r+'), copy it somewhere writable, or register it once "
            "where it is writable so the encodings are persisted"
        )
        raise ReadOnlyStoreError(msg)


def _sync(coro: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coro)


def _list(store: Any, prefix: str) -> list[str]:
    async def collect() -> list[str]:
        return [k async for k in store.list_prefix(prefix)]

    return _sync(collect())


def _move_keys(store: Any, src: str, dst: str) -> None:
    """Copy every object under ``src`` to ``dst``, metadata objects last, then delete ``src``."""
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    keys = _list(store, src + "/")
    keys.sort(key=lambda k: (k.rsplit("/", 1)[-1] in _META_NAMES, k.count("/")))
    for k in _list(store, dst + "/"):
        if k.rsplit("/", 1)[-1] in _META_NAMES:
            _sync(store.delete(k))  # make the old array invisible before replacing its chunks
    for k in _list(store, dst + "/"):
        _sync(store.delete(k))
    for k in keys:
        buf = _sync(store.get(k, prototype=proto))
        _sync(store.set(dst + k[len(src) :], buf))
    for k in keys:
        _sync(store.delete(k))


def _publish(root: zarr.Group, staged: str, target: str) -> None:
    base = local_root(root)
    if base is not None:
        src = base / staged
        dst = base / target
        dst.parent.mkdir(parents=True, exist_ok=True)
        trash = base / STAGING / f"old-{uuid.uuid4().hex}"
        if dst.exists():
            os.replace(dst, trash)  # atomic: target is old-complete or absent, never partial
        os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        prefix = f"{root.path}/" if root.path else ""
        _move_keys(root.store, prefix + staged, prefix + target)


@dataclass(frozen=True)
class Staged:
    """An array written under the staging prefix, invisible until :func:`publish`."""

    root: zarr.Group
    path: str
    target: str
    array: Any


def stage_array(
    root: zarr.Group,
    target: str,
    shape: tuple[int, ...],
    dtype: Any,
    attrs: dict[str, Any] | None = None,
    chunk_rows: int = ENCODED_CHUNK_ROWS,
    exact: bool = False,
) -> Staged:
    """Create the staged array that will become ``target``; fill it, then :func:`publish` it.

    Rows are stored in shards of ``chunk_rows`` made of :data:`ENCODED_INNER_ROWS`-row chunks
    (plain chunks where shards do not fit); ``exact=True`` stores chunks of exactly
    ``chunk_rows`` rows, for writers (dask tasks) that each fill whole chunks of that size.
    """
    _check_target(target)
    n = int(shape[0])
    rows = max(1, min(chunk_rows, n))
    if exact:
        layout: dict[str, Any] = {"chunks": (rows, *shape[1:])}
    else:
        inner = min(rows, ENCODED_INNER_ROWS)
        layout = {"chunks": (inner, *shape[1:])}
        if root.metadata.zarr_format == 3 and rows > inner and rows % inner == 0:
            layout["shards"] = (rows, *shape[1:])
    if root.metadata.zarr_format == 3:
        # A loader reads the rows of a buffer's random runs, one chunk per run. On local disk
        # the chunks are uncompressed and read in place (1.9 us per run; zarr's default zstd
        # costs ~10 us per chunk whatever its size); on an object store, where bytes cost more
        # than decoding, Blosc-LZ4 (~2 us per chunk). Zarr v2 stores keep zarr's default.
        layout["compressors"] = _lz4() if is_remote_store(root.store) else None
    staged = f"{STAGING}/{uuid.uuid4().hex}"
    try:
        arr = root.create_array(
            staged, shape=shape, dtype=dtype, fill_value=0, overwrite=True, **layout
        )
    except OSError:
        raise  # a full disk or read-only filesystem: named by the writer's ``os_errors``
    except Exception as e:
        msg = f"cannot create {target!r} in the store: {type(e).__name__}: {e}"
        raise StoreError(msg) from e
    # The ownership token travels with the data: a writer killed after publishing but before
    # its record leaves a column that is still recognisably atlasloader's (and stale).
    arr.attrs.update({**ARRAY_ATTRS, TOKEN_ATTR: uuid.uuid4().hex, **(attrs or {})})
    return Staged(root, staged, target, arr)


def _lz4() -> Any:
    """Blosc-LZ4 with byte shuffle, as zarr's ``compressors`` argument (Zarr v3)."""
    from zarr.codecs import BloscCodec

    return (BloscCodec(cname="lz4", clevel=3, shuffle="shuffle"),)


def publish(staged: Staged) -> None:
    """Make a filled staged array visible at its target in one step."""
    _publish(staged.root, staged.path, staged.target)


def store_into(values: da.Array, staged: Staged) -> None:
    """Compute ``values`` chunk-wise into ``staged`` (tasks never share a stored object)."""
    arr = staged.array
    unit = int((arr.shards or arr.chunks)[0])
    values = values.rechunk((4 * unit, *values.shape[1:]))
    da.store(values, arr, lock=False)


def write_array(
    root: zarr.Group,
    target: str,
    values: da.Array | np.ndarray,
    attrs: dict[str, Any] | None = None,
    chunk_rows: int = ENCODED_CHUNK_ROWS,
) -> None:
    """Write ``values`` (computed chunk-wise if dask) to ``target`` (e.g. ``obs/_scvi_batch``)."""
    publish(stage_values(root, target, values, attrs, chunk_rows))


def stage_values(
    root: zarr.Group,
    target: str,
    values: da.Array | np.ndarray,
    attrs: dict[str, Any] | None = None,
    chunk_rows: int = ENCODED_CHUNK_ROWS,
) -> Staged:
    """Stage ``values`` (computed chunk-wise if dask) for ``target``; :func:`publish` it after."""
    values = values if isinstance(values, da.Array) else da.from_array(np.asarray(values))
    staged = stage_array(root, target, values.shape, values.dtype, attrs, chunk_rows)
    store_into(values, staged)
    return staged


def set_column_order(root: zarr.Group, frame: str, key: str, present: bool) -> None:
    """Add or remove ``key`` in ``<frame>.attrs['column-order']`` (the commit point)."""
    g = root[frame]
    order = list(g.attrs.get("column-order", []))
    if present and key not in order:
        order.append(key)
    elif not present and key in order:
        order.remove(key)
    else:
        return
    g.attrs["column-order"] = order


def remove_member(root: zarr.Group, frame: str, key: str) -> None:
    """Delete ``frame/key`` (an obs column is first hidden from anndata, then deleted)."""
    check_key(frame, key)
    if frame == "obs":
        set_column_order(root, frame, key, present=False)
    base = local_root(root)
    if base is not None:
        shutil.rmtree(base / frame / key, ignore_errors=True)
    elif f"{frame}/{key}" in root:
        del root[f"{frame}/{key}"]


def write_obs_column(
    root: zarr.Group, key: str, values: da.Array | np.ndarray, attrs: dict[str, Any]
) -> None:
    """Write an obs column; it is hidden from anndata while being replaced."""
    check_key("obs", key)
    set_column_order(root, "obs", key, present=False)
    write_array(root, f"obs/{key}", values, attrs)
    set_column_order(root, "obs", key, present=True)


def publish_column(staged: Staged, frame: str, key: str) -> None:
    """Publish a staged ``obs``/``var`` column; it is hidden from anndata while replaced."""
    check_key(frame, key)
    set_column_order(staged.root, frame, key, present=False)
    publish(staged)
    set_column_order(staged.root, frame, key, present=True)


def write_obsm_array(
    root: zarr.Group, key: str, values: da.Array | np.ndarray, attrs: dict[str, Any]
) -> None:
    check_key("obsm", key)
    if "obsm" not in root:
        root.create_group("obsm").attrs.update(
            {"encoding-type": "dict", "encoding-version": "0.1.0"}
        )
    write_array(root, f"obsm/{key}", values, attrs)


def drop_staging(root: zarr.Group, keep_reserve: bool = False) -> None:
    """Remove every staged (unpublished) array: leftovers of a failed or killed writer.

    Only call it holding the store's write lock (:mod:`atlasloader.store.lock`) or as the
    writer that staged them: another writer's staging area is its work in progress.
    ``keep_reserve`` keeps the space a registration under way holds for its rollback
    (:func:`reserve_rollback_space`).
    """
    base = local_root(root)
    if base is not None:
        folder = base / STAGING
        if keep_reserve and (folder / RESERVE_NAME).is_dir():
            for child in folder.iterdir():
                if child.name not in (RESERVE_NAME, *_META_NAMES):
                    shutil.rmtree(child, ignore_errors=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    elif STAGING in root:
        del root[STAGING]


def reserve_rollback_space(root: zarr.Group) -> None:
    """Hold the disk space that undoing a registration needs, before its first write.

    Undoing rewrites the root's and ``obs``' metadata (the attribute put back, consolidated
    metadata rebuilt); on a disk the registration filled, that rewrite could itself fail and
    leave the "under way" mark. The reserve is an uncompressed array of zeros in the staging
    area (a Zarr node, so metadata walks take it as one), which flushes keep and
    :func:`drop_staging`, the first step of a rollback and of a commit's close, frees. No-op
    on object stores (they do not fill up). A disk too full for it fails here (``ENOSPC``),
    before anything else is written.
    """
    base = local_root(root)
    if base is None:
        return
    need = RESERVE_SLACK
    for meta in (base / "zarr.json", base / "obs" / "zarr.json", base / ".zattrs"):
        if meta.is_file():
            need += 2 * meta.stat().st_size
    reserve = root.create_array(
        f"{STAGING}/{RESERVE_NAME}",
        shape=(need,),
        dtype="uint8",
        chunks=(need,),
        compressors=None,
        fill_value=0,
        overwrite=True,
        config={"write_empty_chunks": True},  # the chunk must take its bytes of disk
    )
    reserve[:] = np.zeros(need, dtype=np.uint8)


def finish_writes(
    root: zarr.Group, consolidated: bool | None = None, keep_reserve: bool = False
) -> None:
    """Drop staging leftovers and refresh consolidated metadata if the store had it.

    ``consolidated`` says whether the store had consolidated metadata when it was opened
    (writing the root's attributes through a handle opened without it drops it on Zarr v3);
    None looks at the store now. ``keep_reserve``: the caller's registration is under way and
    holds its rollback space (:func:`reserve_rollback_space`); any other reserve is a dead
    writer's leftover and goes.
    """
    drop_staging(root, keep_reserve=keep_reserve)
    if consolidated is None:
        consolidated = is_consolidated(root)
    if consolidated:
        with warnings.catch_warnings():
            # zarr notes that consolidated metadata is not in the v3 spec; anndata relies on it.
            warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
            zarr.consolidate_metadata(root.store, path=root.path or None)


def is_consolidated(root: zarr.Group) -> bool:
    """Whether the store has consolidated metadata (read on open by anndata and zarr)."""
    if root.metadata.consolidated_metadata is not None or _has_v2_consolidated(root):
        return True
    return _has_v3_consolidated(root)


def _has_v3_consolidated(root: zarr.Group) -> bool:
    # A handle opened with use_consolidated=False (every writer) does not show it in
    # ``root.metadata``, so look at the root's zarr.json itself.
    if root.metadata.zarr_format != 3:
        return False
    from zarr.core.buffer import default_buffer_prototype

    key = (root.path + "/" if root.path else "") + "zarr.json"
    buf = _sync(root.store.get(key, prototype=default_buffer_prototype()))
    if buf is None:
        return False
    try:
        meta = json.loads(buf.to_bytes())
    except ValueError:
        return False
    return meta.get("consolidated_metadata") is not None


def _has_v2_consolidated(root: zarr.Group) -> bool:
    if root.metadata.zarr_format != 2:
        return False
    base = local_root(root)
    if base is not None:
        return (base / ".zmetadata").exists()
    return bool(_list(root.store, (root.path + "/" if root.path else "") + ".zmetadata"))
