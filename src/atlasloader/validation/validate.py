"""Check that a store is whole: every chunk decodes, shapes agree, registrations match the data.

:func:`validate_store` reads every chunk (or shard) of every array of an AnnData Zarr store, as
dask tasks on the active scheduler (threads, or a ``dask.distributed`` cluster), each task
reading a block of rows of one array (at most about 64 MB decoded). A block that fails is read
again one stored object at a time, and a failing shard one inner chunk at a time, so each
problem names the object's key and the chunks that cannot be decoded; the walk always goes on.

It also checks the AnnData layout (``X``, layers, ``obsm``/``varm``/``obsp``/``varp`` and every
obs/var column have the lengths of ``obs`` and ``var``; CSR/CSC groups are consistent), and every
persisted registration: a registry's fields must have a persisted field record holding their
state, and that record must still be valid for the data, by the same test registration uses to
reuse it (:func:`atlasloader.store.records.fingerprint` of what the field read, and the tokens
of the columns it wrote). A registration that fails it would be recomputed by the next
``setup_anndata``: the data changed since it was registered.

Missing chunks are not problems: Zarr does not write chunks that hold only the fill value.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from ..errors import AtlasLoaderError
from ..store import records
from ..store.elements import encoding_type
from ..store.open import open_root
from ..store.write import STAGING

__all__ = ["Problem", "ValidationReport", "check_store", "validate_store"]

_BLOCK_BYTES = 64 << 20  # decoded bytes one task reads at once
_META_NAMES = frozenset({"zarr.json", ".zgroup", ".zattrs", ".zarray", ".zmetadata"})
_MAX_LISTED = 12  # inner chunk indices listed in one problem


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store.

    Attributes
    ----------
    where
        The store key it concerns: an array (``X/data``), a chunk or shard (``X/data/c/3``),
        an element (``obs/batch``) or a registration (``registry 'SCVI', field 'batch'``).
    what
        What is wrong and, where it helps, what to do.
    kind
        ``"damage"`` (data or a registration cannot be used) or ``"incomplete"``: unpublished
        leftovers of a write that was killed, invisible to readers, removed by the next
        registration or ``preprocess`` of the store.
    """

    where: str
    what: str
    kind: str = "damage"  # or "incomplete": leftovers of an interrupted write, data intact

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`check_store` looked at and the problems it found.

    Attributes
    ----------
    path
        The store checked.
    problems
        What is wrong (empty for a sound store).
    n_arrays, n_chunks, n_bytes
        Arrays walked, stored objects (chunks, or shards) among them, decoded bytes read.
    registries
        Names of the persisted registries (``"SCVI"``...).
    n_field_records
        Persisted field records checked against the data.
    """

    path: str
    problems: tuple[Problem, ...]
    n_arrays: int
    n_chunks: int
    n_bytes: int
    registries: tuple[str, ...] = ()
    n_field_records: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def damaged(self) -> tuple[Problem, ...]:
        """The problems that are not leftovers of an interrupted write."""
        return tuple(p for p in self.problems if p.kind != "incomplete")


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
    problems += [p for p in _check_layout(raw) if p.where not in unreadable]
    n_chunks, n_bytes, chunk_problems = _read_chunks(arrays, progress)
    problems += chunk_problems
    reg_problems, names, n_records = _check_registrations(raw)
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


def _error(e: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        problems.append(Problem(group.path or "/", f"cannot be listed: {_error(e)}"))
        return arrays
    for name in names:
        where = f"{group.path}/{name}" if group.path else name
        if where == STAGING:
            problems.append(
                Problem(
                    where,
                    "unpublished arrays left by an interrupted registration or preprocess "
                    "(readers never see them); the next registration or preprocess of this "
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
            problems.append(Problem(where, f"metadata cannot be read: {_error(e)}"))
            continue
        if isinstance(node, zarr.Array):
            arrays.append(node)
        else:
            arrays += _walk(node, problems)
    return arrays


# --- reading every chunk ---------------------------------------------------------------------
def _unit_shape(arr: zarr.Array) -> tuple[int, ...]:
    """Shape of one stored object: a shard if the array is sharded, else a chunk."""
    shards = getattr(arr, "shards", None)
    return tuple(int(s) for s in (shards or arr.chunks))


def _n_units(arr: zarr.Array) -> int:
    if arr.ndim == 0:
        return 1
    return math.prod(-(-int(n) // u) for n, u in zip(arr.shape, _unit_shape(arr)))


def _row_blocks(arr: zarr.Array) -> list[tuple[int, int]]:
    if arr.ndim == 0:
        return [(0, 1)]
    n = int(arr.shape[0])
    unit = _unit_shape(arr)[0]
    row_bytes = max(1, math.prod(int(s) for s in arr.shape[1:]) * max(1, arr.dtype.itemsize))
    step = max(unit, (_BLOCK_BYTES // row_bytes) // unit * unit)
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _region(arr: zarr.Array, coords: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(
        slice(c * s, min((c + 1) * s, int(n))) for c, s, n in zip(coords, shape, arr.shape)
    )


def _read(arr: zarr.Array, selection: Any) -> int:
    return int(np.asarray(arr[selection]).nbytes)


def _check_block(arr: zarr.Array, lo: int, hi: int) -> tuple[int, list[Problem]]:
    """Decoded bytes of rows ``[lo, hi)`` of ``arr``, or the problems of its stored objects."""
    try:
        return _read(arr, () if arr.ndim == 0 else slice(lo, hi)), []
    except MemoryError:
        raise
    except Exception as e:  # codecs raise many unrelated types for a corrupt chunk
        if arr.ndim == 0:
            return 0, [Problem(arr.path, f"cannot be read: {_error(e)}")]
        block_error = e
    unit = _unit_shape(arr)
    first, last = lo // unit[0], -(-hi // unit[0])
    ranges = [range(first, last)] + [
        range(-(-int(n) // u)) for n, u in zip(arr.shape[1:], unit[1:])
    ]
    problems = [p for c in itertools.product(*ranges) if (p := _check_unit(arr, c)) is not None]
    if not problems:  # every object alone reads: say what failed together
        problems.append(Problem(arr.path, f"rows {lo}:{hi} cannot be read: {_error(block_error)}"))
    return 0, problems


def _check_unit(arr: zarr.Array, coords: tuple[int, ...]) -> Problem | None:
    unit = _unit_shape(arr)
    try:
        _read(arr, _region(arr, coords, unit))
        return None
    except MemoryError:
        raise
    except Exception as e:
        error = e
    key = f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}"
    if not getattr(arr, "shards", None):
        return Problem(key, f"chunk {coords} cannot be decoded: {_error(error)}")
    inner = tuple(int(c) for c in arr.chunks)
    per_shard = [u // c for u, c in zip(unit, inner)]
    bad: list[tuple[int, ...]] = []
    total = 0
    for offset in itertools.product(*(range(k) for k in per_shard)):
        chunk = tuple(c * k + o for c, k, o in zip(coords, per_shard, offset))
        region = _region(arr, chunk, inner)
        if any(s.start >= s.stop for s in region):
            continue  # beyond the array's edge
        total += 1
        try:
            _read(arr, region)
        except MemoryError:
            raise
        except Exception:
            bad.append(offset)
    if not bad or len(bad) == total:
        what = f"shard {coords} cannot be decoded (index or every chunk): {_error(error)}"
        return Problem(key, what)
    shown = ", ".join(str(b[0]) if len(b) == 1 else str(b) for b in bad[:_MAX_LISTED])
    more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    what = (
        f"inner chunks {shown}{more} (of {total}) of shard {coords} cannot be decoded: "
        f"{_error(error)}"
    )
    return Problem(key, what)


def _read_chunks(arrays: list[zarr.Array], progress: bool) -> tuple[int, int, list[Problem]]:
    import dask

    from ..cluster import dask_progress

    tasks = [
        dask.delayed(_check_block, pure=False)(arr, lo, hi)
        for arr in arrays
        for lo, hi in _row_blocks(arr)
        if arr.ndim == 0 or arr.shape[0] > 0
    ]
    with dask_progress(progress, "reading chunks"):
        results = dask.compute(*tasks) if tasks else ()
    n_bytes = sum(r[0] for r in results)
    problems = [p for r in results for p in r[1]]
    return sum(_n_units(a) for a in arrays), n_bytes, problems


# --- AnnData layout --------------------------------------------------------------------------
def _frame_length(group: Any) -> int:
    index = group.attrs.get("_index", "_index")
    return int(group[index].shape[0])


def _matrix_shape(node: Any) -> tuple[int, ...] | None:
    """Shape of a matrix element, None for encodings this check does not know."""
    if isinstance(node, zarr.Array):
        return tuple(int(s) for s in node.shape)
    enc = encoding_type(node)
    if enc in ("csr_matrix", "csc_matrix"):
        return tuple(int(s) for s in node.attrs["shape"])
    if enc == "dataframe":
        return (_frame_length(node),)
    return None


def _column_length(node: Any) -> int:
    if isinstance(node, zarr.Array):
        return int(node.shape[0])
    enc = encoding_type(node)
    if enc == "categorical":
        return int(node["codes"].shape[0])
    if enc.startswith("nullable"):
        return int(node["values"].shape[0])
    msg = f"encoding {enc!r} is not a column"
    raise ValueError(msg)


def _sparse_problems(where: str, node: Any) -> list[Problem]:
    shape = tuple(int(s) for s in node.attrs["shape"])
    major = shape[0] if encoding_type(node) == "csr_matrix" else shape[1]
    indptr, data, indices = node["indptr"], node["data"], node["indices"]
    out = []
    if indptr.shape[0] != major + 1:
        out.append(Problem(where, f"indptr has {indptr.shape[0]} entries for {major} rows"))
    if data.shape[0] != indices.shape[0]:
        what = f"data has {data.shape[0]} values but indices {indices.shape[0]}"
        out.append(Problem(where, what))
    elif indptr.shape[0] and int(indptr[-1]) != data.shape[0]:
        out.append(Problem(where, f"indptr ends at {int(indptr[-1])}, data has {data.shape[0]}"))
    return out


def _check_layout(root: zarr.Group) -> list[Problem]:
    """Lengths of every element against ``obs`` and ``var`` (metadata reads only)."""
    problems: list[Problem] = []
    try:
        n_obs, n_vars = _frame_length(root["obs"]), _frame_length(root["var"])
    except Exception as e:
        return [Problem("obs/var", f"the obs or var index cannot be read: {_error(e)}")]
    expected = {
        "X": (n_obs, n_vars),
        "layers": (n_obs, n_vars),
        "obsm": (n_obs,),
        "varm": (n_vars,),
        "obsp": (n_obs, n_obs),
        "varp": (n_vars, n_vars),
    }
    for where, want in expected.items():
        if where not in root:
            continue
        nodes = [(where, root[where])] if where == "X" else _members(root, where)
        for key, node in nodes:
            try:
                shape = _matrix_shape(node)
                if shape is not None and shape[: len(want)] != want:
                    problems.append(Problem(key, f"has shape {shape}, expected {want} first"))
                if encoding_type(node) in ("csr_matrix", "csc_matrix"):
                    problems += _sparse_problems(key, node)
            except Exception as e:
                problems.append(Problem(key, f"cannot be checked: {_error(e)}"))
    for frame, n in (("obs", n_obs), ("var", n_vars)):
        for key in root[frame].attrs.get("column-order", []):
            where = f"{frame}/{key}"
            try:
                length = _column_length(root[where])
            except Exception as e:
                problems.append(Problem(where, f"cannot be checked: {_error(e)}"))
                continue
            if length != n:
                problems.append(Problem(where, f"has {length} values for {n} {frame} rows"))
    return problems


def _members(root: zarr.Group, group: str) -> Iterable[tuple[str, Any]]:
    """``(path, node)`` of the members of ``root[group]``; unreadable metadata is skipped
    (the walk already reports it)."""
    try:
        return [(f"{group}/{k}", node) for k, node in root[group].members()]  # type: ignore[union-attr]
    except Exception:
        return []


# --- registrations ---------------------------------------------------------------------------
def _split(location: str) -> tuple[str, str | None]:
    """``"obs/batch"`` -> ``("obs", "batch")``; ``"X/None"`` -> ``("X", None)`` (records' keys)."""
    attr, _, key = location.partition("/")
    return attr, None if key == "None" else key


def _shown(location: str) -> str:
    attr, key = _split(location)
    return attr if key is None else location


def _record_issues(root: zarr.Group, record: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """``(location, issue, stale)`` for each reason registration would not reuse ``record``;
    ``stale`` is False when the data cannot even be read (a corrupt store, not a stale one)."""
    issues = []
    for location, digest in record.get("inputs", {}).items():
        attr, key = _split(location)
        try:
            now = records.fingerprint(root, attr, key)
        except KeyError:
            issues.append((location, "is missing (the registration read it)", True))
            continue
        except MemoryError:
            raise
        except Exception as e:  # CorruptChunkError, unreadable metadata (reported by the walk)
            issues.append((location, f"cannot be read: {_error(e)}", False))
            continue
        if now != digest:
            issues.append((location, "changed since it was registered", True))
    for location, token in record.get("outputs", {}).items():
        attr, key = _split(location)
        if records.output_token(root, attr, key) != token:
            issues.append((location, "was removed or overwritten since it was written", True))
    return issues


def _location_exists(root: zarr.Group, attr: str, key: str | None) -> bool:
    if key is None:
        return attr in root
    if f"{attr}/{key}" not in root:
        return False
    return attr != "obs" or key in root["obs"].attrs.get("column-order", [])


def _check_registrations(root: zarr.Group) -> tuple[list[Problem], list[str], int]:
    from ..registry.model import Registry

    try:
        meta = records.read_meta(root)
    except AtlasLoaderError as e:
        return [Problem(f"attribute {records.ATTR!r}", str(e))], [], 0
    field_records: dict[str, Any] = meta["fields"]
    problems: list[Problem] = []
    checked: dict[str, list[tuple[str, str, bool]]] = {}
    try:
        n_obs: int | None = _frame_length(root["obs"])
    except Exception:
        n_obs = None  # already a layout problem
    for name, payload in meta["registries"].items():
        where = f"registry {name!r}"
        try:
            registry = Registry.from_json_dict(payload)
        except AtlasLoaderError as e:
            problems.append(Problem(where, str(e)))
            continue
        x_field = registry.field_registries.get("X")
        stats = {} if x_field is None else dict(x_field.summary_stats)
        if n_obs is not None and stats.get("n_cells", n_obs) != n_obs:
            what = f"was registered with {stats['n_cells']} cells; the store has {n_obs}"
            problems.append(Problem(where, what))
        states = payload["registry"]["field_registries"]
        for key, fr in registry.field_registries.items():
            if fr.data_registry is None:
                continue  # an empty field registers nothing
            fwhere = f"{where}, field {key!r}"
            loc = fr.data_registry
            if not _location_exists(root, loc.attr_name, loc.attr_key):
                what = f"its data {loc.describe()} is not in the store; run setup again"
                problems.append(Problem(fwhere, what))
            state = states[key]["state_registry"]
            matches = [
                spec
                for spec, rec in field_records.items()
                if rec.get("registry_key") == key and rec.get("state") == state
            ]
            if not matches:
                what = "no persisted field record holds its state; run setup again"
                problems.append(Problem(fwhere, what))
                continue
            for spec in matches:
                if spec not in checked:
                    checked[spec] = _record_issues(root, field_records[spec])
            if all(checked[spec] for spec in matches):
                for location, issue, stale in checked[matches[0]]:
                    what = f"{issue}; field {key!r} of {where} cannot be checked"
                    if stale:
                        what = (
                            f"{issue}: field {key!r} of {where} is stale; run setup (the "
                            "model's setup_anndata) again to register the current data"
                        )
                    problems.append(Problem(_shown(location), what))
    return problems, list(meta["registries"]), len(checked)
