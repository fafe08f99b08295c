"""The AnnData layout of a store: every element's shape against ``obs`` and ``var``.

``X``, layers, ``obsm``/``varm``/``obsp``/``varp`` and every obs/var column must have the
lengths of ``obs`` and ``var``, and CSR/CSC groups must be consistent (metadata reads only).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import zarr

from ..store.elements import encoding_type
from .report import Problem, short_error

__all__ = ["check_layout", "frame_length"]


def frame_length(group: Any) -> int:
    """Rows of a dataframe group (``obs``, ``var``): the length of its index."""
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
        return (frame_length(node),)
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


def check_layout(root: zarr.Group) -> list[Problem]:
    """Lengths of every element against ``obs`` and ``var`` (metadata reads only)."""
    problems: list[Problem] = []
    try:
        n_obs, n_vars = frame_length(root["obs"]), frame_length(root["var"])
    except Exception as e:
        return [Problem("obs/var", f"the obs or var index cannot be read: {short_error(e)}")]
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
                problems.append(Problem(key, f"cannot be checked: {short_error(e)}"))
    for frame, n in (("obs", n_obs), ("var", n_vars)):
        for key in root[frame].attrs.get("column-order", []):
            where = f"{frame}/{key}"
            try:
                length = _column_length(root[where])
            except Exception as e:
                problems.append(Problem(where, f"cannot be checked: {short_error(e)}"))
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
