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
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data._writers import CODECS, ROOT_ATTRS
from ..errors import InvalidArgumentError, InvalidDataError, InvalidTypeError, os_errors
from ..store.open import is_url
from .graph import Progress, run
from .layout import layout_of, original_order
from .obs import POSITION_KEY, SOURCE_KEY, check_new_columns, concat_rows, n_obs, write_obs
from .plan import (
    Elements,
    MatrixJob,
    VarJoin,
    check_join,
    join_var,
    plan_elements,
    restrict_var,
)
from .safety import (
    PARTIAL_ENCODING,
    check_target,
    owner,
    partial_path,
    publish,
    remove_stale_partials,
)
from .shuffle import TMP_DIR, shuffle_graph
from .sink import DEFAULT_CHUNK_ROWS, Options, create_matrix, plan_matrix, write_indptr
from .source import Source
from .state import STATE_DIR, Spilled, permutation, remove_state, row_pointers
from .tasks import copy_graph, count_graph

__all__ = ["POSITION_KEY", "SOURCE_KEY", "convert", "layout_of", "original_order"]

PROVENANCE_ATTR = "atlasloader-convert"  # root attribute of concatenated or shuffled stores
DICT_ATTRS = {"encoding-type": "dict", "encoding-version": "0.1.0"}
RAW_ATTRS = {"encoding-type": "raw", "encoding-version": "0.1.0"}
_STREAMED = ("layers", "obsm", "obsp")  # groups of n_obs-row matrices, copied by tasks
_KNOWN = {"X", "raw", "obs", "var", "uns", "varm", "varp", *_STREAMED}
# Small elements: unsharded (it also silences anndata's notice about automatic sharding).
_ELEM_KWARGS = {"shards": None}

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class _Settings:
    join: str
    shuffle: bool
    seed: int
    source_key: str | None
    var_subset: str | list[str] | None = None


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
    ``int32`` indices, ``int64`` indptr) and dense stays dense. ``obs``, ``var``, ``uns``,
    ``varm``, ``varp`` (and obsm dataframes) are copied with anndata's
    ``read_elem``/``write_elem``, categoricals included. With one input, ``anndata.read_zarr(dst)``
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
            convert(
                paths, local, join=join, shuffle=shuffle, seed=seed, source_key=source_key,
                var_subset=var_subset, chunk_rows=chunk_rows, shard_rows=shard_rows,
                codec=codec, block_rows=block_rows, progress=progress,
            )  # fmt: skip
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
    settings: _Settings,
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
            _write_store(sources, paths, partial, opts, settings, progress)
        except BaseException:
            # Includes KeyboardInterrupt: the partial store is useless, free its disk space.
            shutil.rmtree(partial, ignore_errors=True)
            raise
    try:
        publish(partial, target, overwrite)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # still there only if publishing failed


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
) -> _Settings:
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
    return _Settings(
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


# --- writing ------------------------------------------------------------------------------------
def _write_store(
    sources: list[Source],
    paths: list[str],
    partial: Path,
    opts: Options,
    settings: _Settings,
    progress: bool,
) -> None:
    import zarr

    single = len(sources) == 1
    source_key = None if single else settings.source_key
    check_new_columns(sources, paths, source_key, settings.shuffle)
    root = zarr.open_group(str(partial), mode="w-", zarr_format=3)
    root.attrs.put({"encoding-type": PARTIAL_ENCODING, "encoding-version": "0.1.0",
                    "owner": owner(), "source": paths[0] if single else paths})  # fmt: skip
    with Progress(progress) as bar, warnings.catch_warnings():
        # zarr notes that vlen strings and consolidated metadata are not in the v3 spec yet;
        # anndata relies on both.
        warnings.filterwarnings("ignore", category=UserWarning, module="zarr")
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        var = join_var([s.read_elem("var").index for s in sources], paths, settings.join)
        if settings.var_subset is not None:
            var = restrict_var(var, sources[0].read_elem("var"), settings.var_subset, paths[0])
        elements = plan_elements(sources, var, settings.join, shuffle=settings.shuffle,
                                 paths=paths)  # fmt: skip
        sizes = [n_obs(s) for s in sources]
        state = partial / STATE_DIR
        perm = inverse = None
        if settings.shuffle:
            # Output row i holds input row perm[i]; input row g goes to output row inverse[g].
            perm, inverse = permutation(state, sum(sizes), settings.seed)
        order = None if perm is None else np.asarray(perm.mapped())  # a view, not a memmap
        for group in _STREAMED:
            root.create_group(group).attrs.update(DICT_ATTRS)
        if elements.raw_var is not None:
            root.create_group("raw").attrs.update(RAW_ATTRS)
        # obs first: a column that cannot be concatenated fails before the long copies.
        names = write_obs(root, sources, paths, order, source_key)
        for job in elements.matrices:
            _check_rows(job, sizes, paths)
            _copy_matrix(root, partial, job, perm, inverse, opts, bar)
        shutil.rmtree(partial / TMP_DIR, ignore_errors=True)
        _write_small(root, sources, var, elements, names, order)
        del order
        remove_state(state)
        for source, path in zip(sources, paths):
            skipped = [k for k in source.members() if k not in _KNOWN and not k.startswith("__")]
            if skipped:
                warnings.warn(
                    f"{path!r}: elements {skipped} are not AnnData elements and were not converted",
                    UserWarning,
                    stacklevel=4,
                )
        # Written last: only now does the store claim to be AnnData (replaces the owner).
        attrs: dict[str, Any] = dict(ROOT_ATTRS)
        if not single or settings.shuffle or settings.var_subset is not None:
            attrs[PROVENANCE_ATTR] = {
                "encoding-type": PROVENANCE_ATTR, "encoding-version": "0.1.0",
                "inputs": paths, "n_obs": sizes, "join": settings.join,
                "shuffle": settings.shuffle, "seed": settings.seed if settings.shuffle else None,
                "source_key": source_key, "var_subset": settings.var_subset,
                "position_key": POSITION_KEY if settings.shuffle else None,
            }  # fmt: skip
        root.attrs.put(attrs)
        zarr.consolidate_metadata(root.store)


def _check_rows(job: MatrixJob, sizes: list[int], paths: list[str]) -> None:
    for part, size, path in zip(job.parts, sizes, paths):
        if part.n_rows != size:
            msg = (
                f"{job.where} of {path!r} has {part.n_rows} rows but its obs has {size} cells; "
                "the input is not valid AnnData"
            )
            raise InvalidDataError(msg)


def _copy_matrix(
    root: Any, partial: Path, job: MatrixJob, perm: Spilled | None,
    inverse: Spilled | None, opts: Options, bar: Progress,
) -> None:  # fmt: skip
    """Count values per row (CSR), create the arrays, then run the copying tasks."""
    indptr = None
    nnz = int(np.prod(job.shape, dtype=np.int64))
    if job.format == "csr":
        first = plan_matrix("csr", job.shape, job.dtype, sum(p.nnz for p in job.parts), opts)
        state = partial / STATE_DIR
        counts = Spilled.create(state, f"counts-{job.key.replace('/', '-')}", job.shape[0])
        run(count_graph(job, first.read_rows, counts), bar)
        indptr = row_pointers(state, counts, perm)
        os.unlink(counts.path)
        nnz = indptr.last()
    plan = plan_matrix(job.format, job.shape, job.dtype, nnz, opts)
    create_matrix(root, job.key, job.format, job.shape, job.dtype, nnz, plan, opts)
    if indptr is not None:
        write_indptr(root, job.key, indptr)
    if inverse is None:
        graph = copy_graph(str(partial), job, plan, indptr)
    else:
        tmp = str(partial / TMP_DIR / job.key.replace("/", "-"))
        graph = shuffle_graph(str(partial), tmp, job, plan, inverse, indptr)
    run(graph, bar)


def _write_small(
    root: Any,
    sources: list[Source],
    var: VarJoin,
    elements: Elements,
    names: Any,
    perm: np.ndarray | None,
) -> None:
    """var, uns, varm, varp (from the first input) and the per-cell elements read whole."""
    from ..store.elements import write_elem

    first = sources[0]
    cols = var.columns[0]
    for name in ("var", "uns", "varm", "varp"):
        value = first.read_elem(name) if first.has(name) else {}
        if name != "uns":
            value = _genes(value, cols, both=name == "varp")
        write_elem(root, name, value, dataset_kwargs=_ELEM_KWARGS)
    for key, where in elements.in_memory:
        values = [s.read_elem(key) for s in sources]
        value = concat_rows(values, where, names, perm)
        if value is not None:
            write_elem(root, key, value, dataset_kwargs=_ELEM_KWARGS)
    if elements.raw_var is not None:
        raw_cols = elements.raw_var.columns[0]
        for name in ("var", "varm"):
            key = f"raw/{name}"
            if first.has(key):
                value = _genes(first.read_elem(key), raw_cols, both=False)
                write_elem(root["raw"], name, value, dataset_kwargs=_ELEM_KWARGS)


def _genes(value: Any, cols: np.ndarray | None, *, both: bool) -> Any:
    """Restrict a gene-indexed element (var, or every entry of varm/varp) to the kept genes."""
    if cols is None:
        return value
    if isinstance(value, dict):
        return {k: _genes(v, cols, both=both) for k, v in value.items()}
    if hasattr(value, "iloc"):
        return value.iloc[cols]
    out = value[cols]
    return out[:, cols] if both else out
