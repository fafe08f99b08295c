"""Plan the concatenation of the inputs of :func:`atlasloader.convert`: genes and matrices.

Nothing here reads a matrix. The plan is made of small frozen records (input paths, element
keys, column maps) that the copying tasks receive as plain, picklable values, so that they
run the same on threads and on ``dask.distributed`` worker processes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ..errors import InvalidArgumentError, InvalidDataError

if TYPE_CHECKING:
    from .source import Source, SourceMatrix

JOINS = ("exact", "inner")
Format = Literal["csr", "dense"]
_SHOWN = 5  # genes listed per input in a mismatch message


@dataclass(frozen=True, eq=False)
class Part:
    """One input's rows of an output matrix, and how its columns map to the output's.

    Parameters
    ----------
    path
        The input (``.h5ad`` file or Zarr store) as given.
    key
        The element inside it (``"X"``, ``"layers/counts"``, ``"raw/X"``...).
    format
        The input's storage (``"csr"`` or ``"dense"``).
    n_rows, nnz
        Rows and stored values (for dense: the size).
    columns
        Input column of each output column, or None to keep every column in order.
    remap
        Output column of each input column (-1 where dropped); CSR inputs only.
    sort
        Whether remapped CSR indices must be sorted again within rows (genes reordered).
    """

    path: str
    key: str
    format: Format
    n_rows: int
    nnz: int
    columns: np.ndarray | None = None
    remap: np.ndarray | None = None
    sort: bool = False

    @property
    def where(self) -> str:
        return f"{_where(self.key)} of {self.path!r}"


@dataclass(frozen=True, eq=False)
class MatrixJob:
    """An output matrix: its layout and the input parts stacked (in input order) to fill it."""

    where: str
    key: str
    format: Format
    shape: tuple[int, ...]
    dtype: np.dtype
    parts: tuple[Part, ...]
    offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rows = [p.n_rows for p in self.parts]
        object.__setattr__(self, "offsets", np.concatenate([[0], np.cumsum(rows)]).astype(int))

    @property
    def needs_counts(self) -> bool:
        """Whether values per row must be counted (not read from an input's indptr)."""
        return self.format == "csr" and any(
            p.format == "dense" or p.remap is not None for p in self.parts
        )


@dataclass(frozen=True, eq=False)
class VarJoin:
    """The output genes and, per input, which input column each output column comes from."""

    names: pd.Index
    columns: tuple[np.ndarray | None, ...]

    def part_maps(self, k: int, n_in: int) -> tuple[np.ndarray | None, np.ndarray | None, bool]:
        """``(columns, remap, sort)`` of input ``k`` (with ``n_in`` columns) for a :class:`Part`."""
        cols = self.columns[k]
        if cols is None:
            return None, None, False
        remap = np.full(n_in, -1, dtype=np.int64)
        remap[cols] = np.arange(len(cols))
        return cols, remap, bool(np.any(np.diff(cols) < 0))


def _where(key: str) -> str:
    if key in ("X", "raw/X"):
        return f"adata.{key.replace('/', '.')}"
    group, _, name = key.partition("/")
    return f"adata.{group}[{name!r}]"


def check_join(join: Any) -> str:
    if join not in JOINS:
        msg = f"join must be one of {JOINS}, got {join!r}"
        raise InvalidArgumentError(msg)
    return str(join)


def _listing(names: pd.Index) -> str:
    shown = ", ".join(repr(str(n)) for n in names[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"[{shown}{more}]"


def join_var(names: list[pd.Index], paths: list[str], join: str, what: str = "var") -> VarJoin:
    """Match the genes of every input against the first's.

    ``join="exact"`` requires the same names in the same order (anything else raises
    :class:`InvalidDataError` naming the inputs and the genes only in each); ``"inner"`` keeps
    the genes present in every input, in the first input's order.
    """
    first = names[0]
    if all(n.equals(first) for n in names[1:]):
        return VarJoin(first, (None,) * len(names))
    if join == "exact":
        problems = []
        for other, path in zip(names[1:], paths[1:]):
            if other.equals(first):
                continue
            if len(other) == len(first) and set(other) == set(first):
                problems.append(
                    f"{path!r} has the same {len(first)} genes as {paths[0]!r} in another order"
                )
                continue
            only_first = first.difference(other, sort=False)
            only_other = other.difference(first, sort=False)
            problems.append(
                f"{path!r} has {len(other)} genes and {paths[0]!r} has {len(first)}: "
                f"{len(only_first)} only in {paths[0]!r} {_listing(only_first)}, "
                f"{len(only_other)} only in {path!r} {_listing(only_other)}"
            )
        common = _common(names)
        msg = (
            f"the inputs' adata.{what} genes differ: " + "; ".join(problems) + ". "
            f"join='exact' needs the same genes in the same order; pass join='inner' to keep "
            f"the {len(common)} genes in every input (in the order of {paths[0]!r})"
        )
        raise InvalidDataError(msg)
    for n, path in zip(names, paths):
        if not n.is_unique:
            dups = n[n.duplicated()].unique()
            msg = (
                f"adata.{what}_names of {path!r} are not unique ({_listing(dups)}), so its "
                "genes cannot be matched with the other inputs'; make them unique first "
                "(anndata: adata.var_names_make_unique()) or give inputs with the same genes"
            )
            raise InvalidDataError(msg)
    common = _common(names)
    if not len(common):
        msg = (
            f"the inputs {paths} have no adata.{what} gene in common; join='inner' would "
            "leave no column"
        )
        raise InvalidDataError(msg)
    cols = tuple(n.get_indexer(common).astype(np.int64) for n in names)
    return VarJoin(common, tuple(None if _identity(c, len(n)) else c for c, n in zip(cols, names)))


def restrict_var(var: VarJoin, first_var: pd.DataFrame, subset: Any, path: str) -> VarJoin:
    """Keep only the joined genes ``subset`` selects (a boolean column of the first input's
    ``var`` or gene names), in their order; every input's columns follow."""
    from ..store.genes import subset_positions

    joined = first_var if var.columns[0] is None else first_var.iloc[var.columns[0]]
    joined = joined.set_axis(var.names)
    keep = subset_positions(joined, subset, where=f"{path!r}: adata")
    n = len(var.names)
    columns = []
    for cols in var.columns:
        picked = (np.arange(n, dtype=np.int64) if cols is None else cols)[keep]
        columns.append(None if _identity(picked, n) else picked)
    return VarJoin(var.names[keep], tuple(columns))


def _common(names: list[pd.Index]) -> pd.Index:
    keep = np.ones(len(names[0]), dtype=bool)
    for other in names[1:]:
        keep &= names[0].isin(other)
    return names[0][keep]


def _identity(cols: np.ndarray, n: int) -> bool:
    return len(cols) == n and bool(np.array_equal(cols, np.arange(n)))


# --- which elements are carried -----------------------------------------------------------------
@dataclass
class Elements:
    """What the output holds besides obs/var: streamed matrices and small per-row elements."""

    matrices: list[MatrixJob] = field(default_factory=list)
    # Per-row elements copied in memory (obsm dataframes, string arrays): (key, where).
    in_memory: list[tuple[str, str]] = field(default_factory=list)
    # The genes of raw (raw.var and raw.varm come from the first input), if raw is carried.
    raw_var: VarJoin | None = None


def _drop(where: str, why: str) -> None:
    warnings.warn(f"{where} is not converted: {why}", UserWarning, stacklevel=6)


def plan_elements(
    sources: list[Source], var: VarJoin, join: str, *, shuffle: bool, paths: list[str]
) -> Elements:
    """Decide, element by element, what is carried into the output and how."""
    out = Elements()
    single = len(sources) == 1
    if any(s.has("X") for s in sources):
        if not all(s.has("X") for s in sources):
            missing = [p for s, p in zip(sources, paths) if not s.has("X")]
            msg = f"adata.X is missing in {missing} but present in the other inputs"
            raise InvalidDataError(msg)
        _add(out, sources, paths, "X", var, single=single)
    for group in ("layers", "obsm"):
        for key in _union_keys(sources, group):
            where = _where(f"{group}/{key}")
            lacking = [p for s, p in zip(sources, paths) if not s.has(f"{group}/{key}")]
            if lacking:
                _drop(where, f"missing in {lacking} (only elements in every input are kept)")
                continue
            genes = var if group == "layers" else None
            per_row = group == "obsm"
            _add(out, sources, paths, f"{group}/{key}", genes, single=single, per_row=per_row)
    obsp = _union_keys(sources, "obsp")
    if obsp and (shuffle or not single):
        why = "pairwise cell matrices are not " + ("permuted" if single else "concatenated")
        for key in obsp:
            _drop(_where(f"obsp/{key}"), f"{why}; recompute them on the output")
    else:
        for key in obsp:
            _add(out, sources, paths, f"obsp/{key}", None, single=True)
    # anndata >= 0.12 writes a missing raw as a "null" element: only raw/X counts as a raw.
    if any(s.has("raw/X") for s in sources):
        _plan_raw(out, sources, paths, join, single=single)
    return out


def _union_keys(sources: list[Source], group: str) -> list[str]:
    keys: dict[str, None] = {}
    for s in sources:
        if s.has(group):
            keys.update(dict.fromkeys(s.members(group)))
    return list(keys)


def _plan_raw(
    out: Elements, sources: list[Source], paths: list[str], join: str, *, single: bool
) -> None:
    lacking = [p for s, p in zip(sources, paths) if not s.has("raw/X") or not s.has("raw/var")]
    if lacking:
        _drop("adata.raw", f"missing in {lacking}")
        return
    names = [s.read_elem("raw/var").index for s in sources]
    try:
        raw_var = join_var(names, paths, join, what="raw.var")
    except InvalidDataError as e:
        _drop("adata.raw", str(e))
        return
    out.raw_var = raw_var
    _add(out, sources, paths, "raw/X", raw_var, single=single)


def _add(
    out: Elements,
    sources: list[Source],
    paths: list[str],
    key: str,
    var: VarJoin | None,
    *,
    single: bool,
    per_row: bool = False,
) -> None:
    """Add ``key`` as a streamed matrix, an in-memory per-row element, or drop it."""
    where = _where(key)
    mats = [s.matrix(key, where) for s in sources]
    if all(m is not None for m in mats):
        matrices: list[SourceMatrix] = [m for m in mats if m is not None]
        tails = {m.shape[1:] for m in matrices}
        if var is None and len(tails) > 1:
            _drop(where, f"its shapes differ between inputs ({[m.shape for m in matrices]})")
            return
        parts = []
        for k, (m, path) in enumerate(zip(matrices, paths)):
            cols, remap, sort = (None, None, False) if var is None else var.part_maps(k, m.shape[1])
            if m.format == "dense":
                remap = None  # dense blocks are subset with `cols`
            parts.append(Part(path, key, m.format, m.n_rows, m.nnz, cols, remap, sort))
        fmt: Format = "csr" if any(m.format == "csr" for m in matrices) else "dense"
        tail = (len(var.names),) if var is not None else matrices[0].shape[1:]
        shape = (sum(m.n_rows for m in matrices), *tail)
        dtype = np.result_type(*[m.dtype for m in matrices])
        out.matrices.append(MatrixJob(where, key, fmt, shape, dtype, tuple(parts)))
    elif single or (per_row and all(m is None for m in mats)):
        # Dataframes, string arrays...: small, concatenated (and permuted) in memory.
        out.in_memory.append((key, where))
    else:
        _drop(where, "it is not a numeric matrix in every input")
