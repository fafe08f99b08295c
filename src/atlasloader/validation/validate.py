"""Check that a store is whole: every chunk decodes, shapes agree, registrations match the data.

:func:`validate_store` (and :func:`check_store`, which also says what it looked at) walks the
hierarchy of an AnnData Zarr store as it is stored (not a possibly stale consolidated copy of
its metadata), then checks

- every chunk (or shard) of every array, read as dask tasks on the active scheduler (threads,
  or a ``dask.distributed`` cluster); a failure is narrowed to the stored object and its inner
  chunks, and the walk always goes on (:mod:`.chunks`);
- the AnnData layout: every element has the lengths of ``obs`` and ``var``, CSR/CSC groups
  are consistent (:mod:`.layout`);
- every persisted registration: its field records are still valid for the data, by the same
  test registration uses to reuse them (:mod:`.registrations`).

What is wrong comes back as :class:`~.report.Problem` (:mod:`.report`). Missing chunks are not
problems: Zarr does not write chunks that hold only the fill value.
"""

from __future__ import annotations

import os
from typing import Any

import zarr

from ..store.open import open_root
from ..store.write import STAGING
from .chunks import read_chunks
from .layout import check_layout
from .registrations import check_registrations
from .report import Problem, ValidationReport, short_error

__all__ = ["Problem", "ValidationReport", "check_store", "validate_store"]

_META_NAMES = frozenset({"zarr.json", ".zgroup", ".zattrs", ".zarray", ".zmetadata"})


def validate_store(
    path: str | os.PathLike[str],
    *,
    progress: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> list[Problem]:
    """Read every chunk of a store and check its registrations; return the problems found.

    Parameters
    ----------
    path
        An AnnData Zarr store (local path or URL).
    progress
        Show a progress bar of the chunk reads (rich, on stderr).
    storage_options
        Passed to fsspec for URLs.

    Returns
    -------
    The problems, in the order found (an empty list for a sound store).

    Raises
    ------
    StoreError
        ``path`` does not exist.
    NotAnnDataStoreError
        ``path`` is not an AnnData Zarr store (or its root metadata cannot be read).

    Examples
    --------
    >>> for problem in validate_store("atlas.zarr"):  # doctest: +SKIP
    ...     print(problem)
    X/data/c/3: inner chunks 5, 7 (of 19) of shard (3,) cannot be decoded: RuntimeError: ...
    """
    return list(check_store(path, progress=progress, storage_options=storage_options).problems)


def check_store(
    path: str | os.PathLike[str],
    *,
    progress: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> ValidationReport:
    """:func:`validate_store`, also returning what was checked (arrays, chunks, registries)."""
    root = open_root(path, mode="r", storage_options=storage_options)
    # Walk what is actually stored, not a possibly stale consolidated copy of the metadata.
    raw = zarr.open_group(store=root.store, path=root.path, mode="r", use_consolidated=False)
    problems: list[Problem] = []
    arrays = _walk(raw, problems)
    unreadable = {p.where for p in problems}  # reported once, by the walk
    problems += [p for p in check_layout(raw) if p.where not in unreadable]
    n_chunks, n_bytes, chunk_problems = read_chunks(arrays, progress)
    problems += chunk_problems
    reg_problems, names, n_records = check_registrations(raw)
    problems += [p for p in reg_problems if p.where not in unreadable]
    return ValidationReport(
        path=os.fspath(path),
        problems=tuple(problems),
        n_arrays=len(arrays),
        n_chunks=n_chunks,
        n_bytes=n_bytes,
        registries=tuple(names),
        n_field_records=n_records,
    )


# --- walking the hierarchy -------------------------------------------------------------------
def _child_names(group: zarr.Group) -> list[str]:
    from zarr.core.sync import sync

    async def collect() -> list[str]:
        return [k async for k in group.store.list_dir(group.path)]

    return sorted(n for n in sync(collect()) if n not in _META_NAMES)


def _walk(group: zarr.Group, problems: list[Problem]) -> list[zarr.Array]:
    """Every array below ``group``; nodes whose metadata cannot be read become problems."""
    arrays: list[zarr.Array] = []
    try:
        names = _child_names(group)
    except Exception as e:
        problems.append(Problem(group.path or "/", f"cannot be listed: {short_error(e)}"))
        return arrays
    for name in names:
        where = f"{group.path}/{name}" if group.path else name
        if where == STAGING:
            problems.append(
                Problem(
                    where,
                    "unpublished arrays (or the disk a registration held for its rollback) "
                    "left by an interrupted registration or preprocess (readers never see "
                    "them); the next registration or preprocess of this "
                    "store removes them",
                    kind="incomplete",
                )
            )
            continue
        try:
            node = group[name]
        except KeyError:
            continue  # a directory or file that is not a Zarr node (not part of the data)
        except Exception as e:
            problems.append(Problem(where, f"metadata cannot be read: {short_error(e)}"))
            continue
        if isinstance(node, zarr.Array):
            arrays.append(node)
        else:
            arrays += _walk(node, problems)
    return arrays
