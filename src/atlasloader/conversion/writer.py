"""Write a converted store: the matrices by dask tasks, the small elements directly.

:func:`write_store` fills a fresh partial store (see :mod:`.safety`) from the opened inputs:
``obs``/``var`` first, then every matrix of ``X``, ``layers``, ``obsm``, ``obsp`` and ``raw``
counted and copied shard by shard by the tasks of :mod:`.tasks` (or scattered and gathered by
:mod:`.shuffle`), then ``uns``, ``varm`` and ``varp``. :mod:`.convert` checks the arguments and
publishes the result.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data._writers import ROOT_ATTRS
from ..errors import InvalidDataError
from .graph import Progress, run
from .names import Names
from .obs import POSITION_KEY, check_new_columns, concat_rows, n_obs, write_obs
from .plan import (
    Elements,
    MatrixJob,
    VarJoin,
    join_var,
    plan_elements,
    restrict_var,
)
from .safety import (
    PARTIAL_ENCODING,
    owner,
)
from .shuffle import TMP_DIR, shuffle_graph
from .sink import Options, create_matrix, plan_matrix, write_indptr
from .source import Source
from .state import STATE_DIR, Spilled, permutation, remove_state, row_pointers
from .tasks import copy_graph, count_graph
from .windows import OBS_TMP

PROVENANCE_ATTR = "atlasloader-convert"  # root attribute of concatenated or shuffled stores
DICT_ATTRS = {"encoding-type": "dict", "encoding-version": "0.1.0"}
RAW_ATTRS = {"encoding-type": "raw", "encoding-version": "0.1.0"}
_STREAMED = ("layers", "obsm", "obsp")  # groups of n_obs-row matrices, copied by tasks
_KNOWN = {"X", "raw", "obs", "var", "uns", "varm", "varp", *_STREAMED}
# Small elements: unsharded (it also silences anndata's notice about automatic sharding).
_ELEM_KWARGS = {"shards": None}


@dataclass(frozen=True)
class Settings:
    join: str
    shuffle: bool
    seed: int
    source_key: str | None
    var_subset: str | list[str] | None = None


def write_store(
    sources: list[Source],
    paths: list[str],
    partial: Path,
    opts: Options,
    settings: Settings,
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
        spilled = None if perm is None or inverse is None else (perm, inverse)
        tmp = str(partial / TMP_DIR / OBS_TMP)
        names = write_obs(root, sources, paths, spilled, source_key, tmp)
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
    names: Names,
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
