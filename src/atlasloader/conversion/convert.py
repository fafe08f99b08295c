"""Convert ``.h5ad`` files or AnnData Zarr stores into the layout atlasloader reads fastest.

The result is an ordinary AnnData Zarr store (``anndata.read_zarr`` reads it) in Zarr format 3:
``X``, layers and obsm/obsp matrices are stored in small row chunks (what one random read of
the loader touches) grouped into shards of a few MB (few files), compressed with Blosc lz4.

Several inputs are concatenated (genes matched with ``join``), optionally in a random cell
order (``shuffle``). The heavy copying runs as dask graphs on the active scheduler (threads by
default, or a ``dask.distributed`` cluster), each task reading only the rows of the output
shards it writes, so memory stays bounded however large the inputs are.

The store is written under a sibling ``<dst>.partial-<uuid>`` directory that cannot be opened
as AnnData, and renamed to ``dst`` only once complete: a crash never leaves a half-written
store at ``dst``, and rerunning removes the partial store of a crashed run and starts clean.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..data._writers import CODECS
from ..errors import InvalidArgumentError, InvalidTypeError, os_errors
from ..store.open import is_url
from .layout import layout_of, original_order
from .obs import POSITION_KEY, SOURCE_KEY
from .plan import (
    check_join,
)
from .safety import (
    check_target,
    partial_path,
    publish,
    remove_stale_partials,
)
from .sink import DEFAULT_CHUNK_ROWS, Options
from .source import Source
from .writer import Settings, write_store

__all__ = ["POSITION_KEY", "SOURCE_KEY", "convert", "layout_of", "original_order"]

PathLike = str | os.PathLike[str]


def convert(
    src: PathLike | Sequence[PathLike],
    dst: PathLike,
    *,
    join: str = "exact",
    shuffle: bool = False,
    seed: int = 0,
    source_key: str | None = SOURCE_KEY,
    var_subset: str | Sequence[str] | None = None,
    chunk_rows: int | None = None,
    shard_rows: int | None = None,
    codec: str | None = "lz4",
    block_rows: int = 65_536,
    overwrite: bool = False,
    progress: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write one or several AnnData inputs as one Zarr v3 store laid out for fast row reads.

    ``X``, ``layers``, ``obsm``, ``obsp`` and ``raw.X`` are copied by dask tasks, one per output
    shard, each reading only the input rows it writes: CSR stays CSR (``data`` in its dtype,
    ``int32`` indices, ``int64`` indptr) and dense stays dense. ``obs`` is read and written
    in windows of rows, in the encodings anndata writes (categoricals included), so its memory
    does not grow with the cells; ``var``, ``uns``, ``varm``, ``varp`` (and obsm dataframes) are
    copied with anndata's ``read_elem``/``write_elem``. With one input, ``anndata.read_zarr(dst)``
    equals the input.

    Several inputs are concatenated in the order given (as ``anndata.concat`` would):

    - genes: with ``join="exact"`` every input must have the same genes in the same order
      (otherwise :class:`~atlasloader.errors.InvalidDataError` lists the differences; the same
      genes in another order are a difference too); with ``join="inner"`` the genes in every
      input are kept, in the first input's order, and every matrix's columns follow. ``var``,
      ``varm`` and ``varp`` come from the first input (restricted to the kept genes);
    - ``obs``: the union of the columns. Missing values are NaN for numbers (stored as
      float64), NA for booleans (nullable boolean) and a missing category for categoricals
      and strings (a string column missing in some inputs is stored as a categorical: Zarr v3
      string arrays hold no missing value). Categories are united and sorted naturally, as
      ``anndata.concat`` does (ordered categoricals stay ordered only if every input has the
      same categories); a column categorical in one input and string in another becomes
      categorical; numbers in one input and strings in another raise.
      ``obs_names`` are kept, unless a name occurs in two inputs: then every name gets
      ``-<input position>`` appended, as ``anndata.concat(index_unique="-")`` does (with a
      warning);
    - ``obs[source_key]`` (default ``"source_file"``): a categorical naming each cell's input
      (its path as given; the codes are the input positions);
    - layers and obsm entries in every input are carried (CSR if any input has it CSR, values
      in the common dtype); those missing in some inputs are dropped with a warning; obsp
      (cell-cell matrices) is dropped with a warning; ``raw`` is carried if every input has
      one (its genes matched with ``join`` too, else dropped with a warning); ``uns`` comes
      from the first input.

    With ``shuffle=True`` cells are written in a random order drawn from ``seed``, and
    ``obs["original_position"]`` holds each cell's position in the unshuffled (concatenated)
    order; :func:`original_order` turns it back into the input order.

    Parameters
    ----------
    src
        An ``.h5ad`` file or an AnnData Zarr store (format 2 or 3; a path or URL), or a
        sequence of them. ``.h5ad`` files are read in row blocks, never whole.
    dst
        Local directory of the new store (on a filesystem shared with the workers when a
        ``dask.distributed`` cluster runs the conversion).
    join
        ``"exact"`` (the inputs' genes must match) or ``"inner"`` (keep the genes in every
        input).
    shuffle
        Write the cells in a random order (from ``seed``), recorded in
        ``obs["original_position"]``. Needs temporary disk space inside the partial store
        of about the size of the largest matrix, removed as it is written.
    seed
        Non-negative integer seeding the permutation (``numpy.random.default_rng(seed)``).
    var_subset
        Write only some genes: the name of a boolean ``var`` column of the (first) input, e.g.
        the ``"highly_variable"`` genes :func:`atlasloader.preprocess.preprocess` marked, or a
        list of gene names (written in that order). ``X``, layers, ``var``, ``varm`` and
        ``varp`` keep those genes; ``raw`` (all genes by definition) is carried whole. A
        store of the genes a model trains on reads several times fewer bytes per cell than
        ``LayerField(var_subset=...)`` selecting them from the full matrix at every batch.
    source_key
        Name of the obs column recording each cell's input, written with two inputs or more;
        None to not write it. An input that already has that column raises.
    chunk_rows
        Rows per stored chunk (default 16, what the loader reads per random access). For CSR
        the ``data``/``indices`` chunks hold ``chunk_rows`` times the mean values per row.
    shard_rows
        Rows per shard, rounded up to whole chunks. By default a shard holds about 16 MB of
        uncompressed values (at most 65 536 rows, and no more than half a read block).
    codec
        ``"lz4"`` (Blosc lz4, level 3, byte shuffle; bit shuffle for CSR indices), ``"zstd"``
        (level 3) or ``None`` (uncompressed).
    block_rows
        Rows read per block (by a shuffling or counting task), at most about 64 MB of values
        whatever this says. Peak memory is about two blocks per running task (dask's threads
        or workers).
    overwrite
        Replace an existing ``dst``; otherwise an existing ``dst`` raises.
    progress
        Show a progress bar per matrix and step (rich, on stderr); quiet by default.
    storage_options
        fsspec options of a remote ``dst`` (``s3://...``): credentials, ``client_kwargs``.
        A remote ``dst`` is converted into a local temporary directory (``ATLASLOADER_TMPDIR``
        or the system's), then uploaded chunk objects first and the root metadata last
        (:mod:`atlasloader.conversion.upload`), so the URL never opens as a half-written store.

    Returns
    -------
    ``dst`` as a string.

    Raises
    ------
    StoreError
        An input does not exist, or ``dst`` exists and ``overwrite`` is False.
    NotAnnDataStoreError
        An input is neither an ``.h5ad`` file nor an AnnData Zarr store.
    InvalidDataError
        The inputs' genes differ (``join="exact"``), or an obs column cannot be concatenated.
    InvalidArgumentError
        ``src`` is empty or names an input twice, a setting is out of range, or an input
        already has the obs column convert would add.
    InvalidTypeError
        A matrix of an input is stored as CSC.

    Examples
    --------
    >>> import atlasloader, tempfile
    >>> from atlasloader.data import make_atlas_h5ad
    >>> tmp = tempfile.mkdtemp()
    >>> a = make_atlas_h5ad(tmp + "/a.h5ad", n_cells=1_000, n_genes=100, nnz_per_cell=20)
    >>> path = atlasloader.convert(a, tmp + "/a.zarr")
    >>> atlasloader.conversion.convert.layout_of(path)["chunk_rows"]
    16
    >>> b = make_atlas_h5ad(tmp + "/b.h5ad", n_cells=500, n_genes=100, nnz_per_cell=20, seed=1)
    >>> path = atlasloader.convert([a, b], tmp + "/ab.zarr", shuffle=True, seed=0)
    >>> import anndata
    >>> anndata.read_zarr(path).obs["source_file"].value_counts().tolist()
    [1000, 500]
    """
    opts = _options(chunk_rows, shard_rows, codec, block_rows)
    paths = _input_paths(src)
    settings = _settings(join, shuffle, seed, source_key, var_subset)
    if is_url(dst) and not str(dst).startswith("file://"):
        # Object stores cannot rename: convert locally, then upload with the metadata last.
        from .upload import check_remote_target, upload_store

        check_remote_target(str(dst), overwrite, storage_options)  # before any work
        with tempfile.TemporaryDirectory(dir=os.environ.get("ATLASLOADER_TMPDIR")) as tmp:
            local = Path(tmp) / "store.zarr"
            with os_errors(local, "the converted store"):
                # Laid out for ranged GETs: row pointers compressed, like the matrices.
                _convert_local(paths, local, replace(opts, remote=True), settings, False, progress)
            upload_store(local, str(dst), overwrite=overwrite, storage_options=storage_options)
        return str(dst)
    target = Path(str(dst).removeprefix("file://"))
    with os_errors(target, "the converted store"):
        _convert_local(paths, target, opts, settings, overwrite, progress)
    return os.fspath(dst)


def _convert_local(
    paths: list[str],
    target: Path,
    opts: Options,
    settings: Settings,
    overwrite: bool,
    progress: bool,
) -> None:
    with ExitStack() as stack:
        sources = [stack.enter_context(Source(p)) for p in paths]
        check_target(target, overwrite)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(target)
        partial = partial_path(target)
        try:
            write_store(sources, paths, partial, opts, settings, progress)
        except BaseException:
            # Includes KeyboardInterrupt: the partial store is useless, free its disk space.
            shutil.rmtree(partial, ignore_errors=True)
            raise
    try:
        publish(partial, target, overwrite)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # still there only if publishing failed
    remove_stale_partials(target)  # what a run that died while we wrote left beside ours


def _input_paths(src: Any) -> list[str]:
    if isinstance(src, str | os.PathLike):
        return [os.fspath(src)]
    if not isinstance(src, Sequence):
        msg = f"src must be a path or a sequence of paths, got {type(src).__name__}"
        raise InvalidTypeError(msg)
    paths = []
    for p in src:
        if not isinstance(p, str | os.PathLike):
            msg = f"src must hold paths (str or os.PathLike), got {type(p).__name__} {p!r}"
            raise InvalidTypeError(msg)
        paths.append(os.fspath(p))
    if not paths:
        msg = "src is empty: give at least one .h5ad file or AnnData Zarr store to convert"
        raise InvalidArgumentError(msg)
    seen = set()
    for p in paths:
        if p in seen:
            msg = f"src names {p!r} twice; give each input once"
            raise InvalidArgumentError(msg)
        seen.add(p)
    return paths


def _settings(
    join: Any, shuffle: Any, seed: Any, source_key: Any, var_subset: Any = None
) -> Settings:
    from ..data._model import check_int

    if not isinstance(shuffle, bool | np.bool_):
        msg = f"shuffle must be True or False, got {type(shuffle).__name__} {shuffle!r}"
        raise InvalidTypeError(msg)
    if source_key is not None:
        if not isinstance(source_key, str):
            msg = f"source_key must be a string or None, got {type(source_key).__name__}"
            raise InvalidTypeError(msg)
        if not source_key or "/" in source_key or source_key in ("_index", POSITION_KEY):
            msg = (
                f"source_key {source_key!r} cannot name an obs column (empty, contains '/', "
                "or reserved); choose another name"
            )
            raise InvalidArgumentError(msg)
    if var_subset is not None and not isinstance(var_subset, str):
        if not isinstance(var_subset, Sequence) or not len(var_subset):
            msg = (
                "var_subset must be a boolean var column's name or a non-empty list of gene "
                f"names, got {var_subset!r}"
            )
            raise InvalidArgumentError(msg)
        var_subset = [str(g) for g in var_subset]
    return Settings(
        check_join(join), bool(shuffle), check_int("seed", seed, 0), source_key, var_subset
    )


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
