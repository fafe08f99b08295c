"""Convert an ``.h5ad`` file or an AnnData Zarr store into the layout atlasloader reads fastest.

The result is an ordinary AnnData Zarr store (``anndata.read_zarr`` reads it) in Zarr format 3:
``X``, layers and obsm/obsp matrices are stored in small row chunks (what one random read of
the loader touches) grouped into shards of a few MB (few files), compressed with Blosc lz4.
Matrices are copied a block of rows at a time, so memory stays bounded however large ``X`` is.

The store is written under a sibling ``<dst>.partial-<uuid>`` directory that cannot be opened
as AnnData, and renamed to ``dst`` only once complete: a crash never leaves a half-written
store at ``dst``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..data._writers import CODECS, ROOT_ATTRS
from ..errors import InvalidArgumentError, InvalidTypeError, MissingKeyError, StoreError
from ._convert_sink import DEFAULT_CHUNK_ROWS, Options, write_matrix
from ._convert_source import Source
from .open import is_url

__all__ = ["convert", "layout_of"]

# Root attributes of a store being written: neither anndata nor atlasloader opens it, and the
# owner lets a later run remove it once its process is gone.
PARTIAL_ENCODING = "atlasloader-partial"
DICT_ATTRS = {"encoding-type": "dict", "encoding-version": "0.1.0"}
RAW_ATTRS = {"encoding-type": "raw", "encoding-version": "0.1.0"}
_STREAMED = ("layers", "obsm", "obsp")  # groups of n_obs-row matrices, copied by row blocks
_COPIED = ("obs", "var", "uns", "varm", "varp")  # copied whole with anndata
_KNOWN = {"X", "raw", *_STREAMED, *_COPIED}
# Small elements: unsharded (it also silences anndata's notice about automatic sharding).
_ELEM_KWARGS = {"shards": None}


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    chunk_rows: int | None = None,
    shard_rows: int | None = None,
    codec: str | None = "lz4",
    block_rows: int = 65_536,
    overwrite: bool = False,
    progress: bool = False,
) -> str:
    """Write ``src`` as an AnnData Zarr v3 store laid out for fast random row reads.

    ``X``, ``layers``, ``obsm``, ``obsp`` and ``raw.X`` are streamed block by block: CSR stays
    CSR (``data`` in its dtype, ``int32`` indices, ``int64`` indptr) and dense stays dense;
    ``obs``, ``var``, ``uns``, ``varm``, ``varp`` (and obsm dataframes) are copied with
    anndata's ``read_elem``/``write_elem``, categoricals included. ``anndata.read_zarr(dst)``
    equals the input.

    Parameters
    ----------
    src
        An ``.h5ad`` file, or an AnnData Zarr store (format 2 or 3; a path or URL).
    dst
        Local directory of the new store.
    chunk_rows
        Rows per stored chunk (default 16, what the loader reads per random access). For CSR
        the ``data``/``indices`` chunks hold ``chunk_rows`` times the mean values per row.
    shard_rows
        Rows per shard, rounded up to whole chunks. By default a shard holds about 16 MB of
        uncompressed values (at most 65 536 rows, and no more than one read block).
    codec
        ``"lz4"`` (Blosc lz4, level 3, byte shuffle; bit shuffle for CSR indices), ``"zstd"``
        (level 3) or ``None`` (uncompressed).
    block_rows
        Rows read per block, at most about 128 MB of values per block whatever this says.
        Peak memory is a few blocks (or a few shards, if ``shard_rows`` is larger).
    overwrite
        Replace an existing ``dst``; otherwise an existing ``dst`` raises.
    progress
        Show a progress bar per matrix (on stderr).

    Returns
    -------
    ``dst`` as a string.

    Raises
    ------
    StoreError
        ``src`` does not exist, or ``dst`` exists and ``overwrite`` is False.
    NotAnnDataStoreError
        ``src`` is neither an ``.h5ad`` file nor an AnnData Zarr store.
    InvalidTypeError
        A matrix of ``src`` is stored as CSC.

    Examples
    --------
    >>> import atlasloader, tempfile
    >>> from atlasloader.data import make_atlas_h5ad
    >>> tmp = tempfile.mkdtemp()
    >>> h5ad = make_atlas_h5ad(tmp + "/a.h5ad", n_cells=1_000, n_genes=100, nnz_per_cell=20)
    >>> path = atlasloader.convert(h5ad, tmp + "/a.zarr")
    >>> atlasloader.store.convert.layout_of(path)["chunk_rows"]
    16
    """
    opts = _options(chunk_rows, shard_rows, codec, block_rows)
    if is_url(dst) and not str(dst).startswith("file://"):
        msg = f"dst must be a local path (the store is renamed into place), got {str(dst)!r}"
        raise InvalidArgumentError(msg)
    target = Path(str(dst).removeprefix("file://"))
    with Source(src) as source:
        _check_target(target, overwrite)
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(target)
        partial = target.with_name(f"{target.name}.partial-{uuid.uuid4().hex}")
        try:
            _write_store(source, partial, opts, progress)
        except BaseException:
            # Includes KeyboardInterrupt: the partial store is useless, free its disk space.
            shutil.rmtree(partial, ignore_errors=True)
            raise
    try:
        _publish(partial, target, overwrite)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # still there only if publishing failed
    return os.fspath(dst)


def _options(
    chunk_rows: int | None, shard_rows: int | None, codec: str | None, block_rows: int
) -> Options:
    from ..data._model import check_int

    chunk = DEFAULT_CHUNK_ROWS if chunk_rows is None else check_int("chunk_rows", chunk_rows, 1)
    shard = None if shard_rows is None else check_int("shard_rows", shard_rows, 1)
    if codec not in CODECS:
        msg = f"codec must be one of {CODECS}, got {codec!r}"
        raise (InvalidArgumentError if isinstance(codec, str) else InvalidTypeError)(msg)
    return Options(chunk, shard, codec, check_int("block_rows", block_rows, 1))


def _check_target(target: Path, overwrite: bool) -> None:
    if os.path.lexists(target) and not overwrite:
        msg = (
            f"cannot convert to {str(target)!r}: it already exists; pass overwrite=True to "
            "replace it"
        )
        raise StoreError(msg)


# --- writing ------------------------------------------------------------------------------------
def _write_store(source: Source, partial: Path, opts: Options, progress: bool) -> None:
    import zarr

    root = zarr.open_group(str(partial), mode="w-", zarr_format=3)
    root.attrs.put({"encoding-type": PARTIAL_ENCODING, "encoding-version": "0.1.0",
                    "owner": _owner(), "source": source.path})  # fmt: skip
    with _Progress(progress) as bar, warnings.catch_warnings():
        # zarr notes that vlen strings and consolidated metadata are not in the v3 spec yet;
        # anndata relies on both.
        warnings.filterwarnings("ignore", category=UserWarning, module="zarr")
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        if source.has("X"):
            _copy_matrix(source, "X", root, "X", "adata.X", opts, bar)
        for group in _STREAMED:
            out = root.create_group(group)
            out.attrs.update(DICT_ATTRS)
            for key in source.members(group) if source.has(group) else []:
                where = f"adata.{group}[{key!r}]"
                _copy_matrix(source, f"{group}/{key}", out, key, where, opts, bar)
        if source.has("raw"):
            raw = root.create_group("raw")
            raw.attrs.update(RAW_ATTRS)
            for key in source.members("raw"):
                if key == "X":
                    _copy_matrix(source, "raw/X", raw, "X", "adata.raw.X", opts, bar)
                else:
                    _copy_elem(source, f"raw/{key}", raw, key)
        for name in _COPIED:
            if source.has(name):
                _copy_elem(source, name, root, name)
            else:
                _write_elem(root, name, {})
        skipped = [k for k in source.members() if k not in _KNOWN and not k.startswith("__")]
        if skipped:
            warnings.warn(
                f"{source.path!r}: elements {skipped} are not AnnData elements and were not "
                "converted",
                UserWarning,
                stacklevel=4,
            )
        # Written last: only now does the store claim to be AnnData (replaces the owner).
        root.attrs.put(dict(ROOT_ATTRS))
        zarr.consolidate_metadata(root.store)


def _copy_matrix(
    source: Source, path: str, parent: Any, name: str, where: str, opts: Options, bar: _Progress
) -> None:
    matrix = source.matrix(path, where)
    if matrix is None:  # dataframe, strings, awkward array...: small enough to copy whole
        _copy_elem(source, path, parent, name)
        return
    write_matrix(parent, name, matrix, opts, bar.task(where, matrix.n_rows))


def _copy_elem(source: Source, path: str, parent: Any, name: str) -> None:
    _write_elem(parent, name, source.read_elem(path))


def _write_elem(parent: Any, name: str, value: Any) -> None:
    from .elements import write_elem

    write_elem(parent, name, value, dataset_kwargs=_ELEM_KWARGS)


class _Progress:
    """A rich progress display with one bar per matrix, or nothing when disabled."""

    def __init__(self, enabled: bool) -> None:
        self._progress: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("rows"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True),
            )  # fmt: skip

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, label: str, total: int) -> Callable[[int], None] | None:
        if self._progress is None:
            return None
        progress = self._progress
        task_id = progress.add_task(label, total=total)
        return lambda rows: progress.advance(task_id, rows)


# --- crash safety -------------------------------------------------------------------------------
def _owner() -> dict[str, Any]:
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


def _remove_stale_partials(target: Path) -> None:
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


def _publish(partial: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished store to ``target`` (an existing one is moved aside first)."""
    if not os.path.lexists(target):
        os.rename(partial, target)
        return
    if not overwrite:  # created by someone else while we converted
        _check_target(target, overwrite)
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


# --- layout -------------------------------------------------------------------------------------
def layout_of(path: str | os.PathLike[str], key: str = "X") -> dict[str, Any]:
    """How a matrix of an AnnData Zarr store is chunked, sharded and compressed.

    Parameters
    ----------
    path
        An AnnData Zarr store (any format or layout, not only converted ones).
    key
        The matrix: ``"X"``, ``"layers/counts"``, ``"obsm/X_pca"``, ``"raw/X"``...

    Returns
    -------
    A dict with ``zarr_format``, ``format`` (``"csr"``/``"dense"``), ``shape``, ``dtype``,
    ``nnz``, ``chunk_rows`` and ``shard_rows`` (rows per chunk and per shard; for CSR, derived
    from the mean values per row; ``shard_rows`` is None when unsharded), ``chunk_elems`` and
    ``shard_elems`` (lengths of the stored ``data`` chunks/shards), ``codec`` (``"lz4"``,
    ``"zstd"``, another name, or None), ``shuffle``, ``indices_dtype``, ``indptr_chunk``,
    ``indptr_shard`` and ``consolidated``.

    Examples
    --------
    >>> layout_of("atlas.zarr")  # doctest: +SKIP
    {'zarr_format': 3, 'format': 'csr', 'chunk_rows': 16, 'shard_rows': 5152, 'codec': 'lz4', ...}
    """
    from .elements import encoding_type
    from .open import open_root

    root = open_root(path, mode="r")
    if key not in root:
        msg = f"{key!r} not found in the store {str(path)!r}"
        raise MissingKeyError(msg)
    node: Any = root[key]
    enc = encoding_type(node)
    info: dict[str, Any] = {
        "zarr_format": int(root.metadata.zarr_format),
        "consolidated": root.metadata.consolidated_metadata is not None,
    }
    if enc == "csr_matrix" or enc == "csc_matrix":
        data: Any = node["data"]
        indptr: Any = node["indptr"]
        shape = tuple(int(s) for s in node.attrs["shape"])
        nnz = int(indptr[-1]) if indptr.shape[0] else 0
        per_row = max(nnz / max(1, shape[0]), 1e-12)
        chunk = int(data.chunks[0])
        shard = int(data.shards[0]) if data.shards else None
        info |= {
            "format": enc.removesuffix("_matrix"),
            "shape": shape,
            "dtype": str(data.dtype),
            "nnz": nnz,
            "chunk_rows": max(1, round(chunk / per_row)),
            "shard_rows": None if shard is None else max(1, round(shard / per_row)),
            "chunk_elems": chunk,
            "shard_elems": shard,
            "indices_dtype": str(node["indices"].dtype),
            "indptr_chunk": int(indptr.chunks[0]),
            "indptr_shard": int(indptr.shards[0]) if indptr.shards else None,
        }
        arr = data
    elif hasattr(node, "chunks"):
        arr = node
        chunk = int(arr.chunks[0])
        shard = int(arr.shards[0]) if arr.shards else None
        info |= {
            "format": "dense",
            "shape": tuple(int(s) for s in arr.shape),
            "dtype": str(arr.dtype),
            "nnz": int(np.prod(arr.shape, dtype=np.int64)),
            "chunk_rows": chunk,
            "shard_rows": shard,
            "chunk_elems": chunk,
            "shard_elems": shard,
            "indices_dtype": None,
            "indptr_chunk": None,
            "indptr_shard": None,
        }
    else:
        msg = f"{key!r} in {str(path)!r} has encoding {enc!r}; expected a matrix"
        raise InvalidTypeError(msg)
    info["codec"], info["shuffle"] = _codec_of(arr)
    return info


def _codec_of(arr: Any) -> tuple[str | None, str | None]:
    compressors = arr.compressors
    if not compressors:
        return None, None
    codec = compressors[0]
    kind = type(codec).__name__.lower().removesuffix("codec")
    if kind == "blosc":
        cname = getattr(codec.cname, "value", codec.cname)
        shuffle = getattr(codec.shuffle, "value", codec.shuffle)
        if isinstance(shuffle, int):  # numcodecs (Zarr v2) uses integers
            shuffle = {-1: "auto", 0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}.get(shuffle)
        return str(cname), None if shuffle is None else str(shuffle)
    return kind, None
