"""Several registered stores loaded as one dataset (an atlas is many datasets).

Cells are numbered store after store: cell ``i`` of the second store is ``n_obs(first) + i``.
The stores must have compatible registries: the same registry keys in the same places, the
same genes, and categorical mappings that agree on every shared code. Registering a query with
:meth:`~atlasloader.AnnDataManager.transfer_fields` (``extend_categories=True`` to add
categories) guarantees that: the query's mapping starts with the reference's, so a code means
the same category in every store, and the last manager of a chain of transfers holds every
category (its ``summary_stats`` count them all).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import CategoryTransferError, InvalidArgumentError, NotRegisteredError
from .fetch import RowFetcher


def _describe(manager: Any, i: int) -> str:
    adata = manager.adata
    where = getattr(adata, "path", None) or getattr(adata, "filename", None)
    return f"store {i} ({where})" if where else f"AnnData {i}"


def _mapping_widest(key: str, column: str, mappings: Sequence[Any], names: Sequence[str]) -> int:
    """Index of the (earliest) longest mapping; every other must be its prefix."""
    widest = max(range(len(mappings)), key=lambda i: len(mappings[i]))
    ref = np.asarray(mappings[widest])
    for i, m in enumerate(mappings):
        m = np.asarray(m)
        if not np.array_equal(m, ref[: len(m)]):
            bad = int(np.flatnonzero(m != ref[: len(m)])[0])
            msg = (
                f"registry key '{key}'{column}: {names[i]} encodes code {bad} as {m[bad]!r} but "
                f"{names[widest]} encodes it as {ref[bad]!r}. Register the stores with "
                "transfer_fields from one another (a chain: ref -> a -> b, with "
                "extend_categories=True) so their categories share codes"
            )
            raise CategoryTransferError(msg)
    return widest


def check_compatible(managers: Sequence[Any]) -> int:
    """Check that ``managers`` can be loaded as one dataset; return the one with every category.

    Raises
    ------
    NotRegisteredError
        A manager without registered data.
    InvalidArgumentError
        Different registry keys, places or genes (the message lists the difference).
    CategoryTransferError
        A code meaning different categories in two stores, or no manager holding the union.
    """
    if not managers:
        raise InvalidArgumentError("no AnnDataManager given: pass at least one")
    for i, m in enumerate(managers):
        if getattr(m, "adata", None) is None:
            msg = f"AnnDataManager {i} is not registered: call register_fields(adata) first"
            raise NotRegisteredError(msg)
    names = [_describe(m, i) for i, m in enumerate(managers)]
    first = managers[0]
    keys = list(first.data_registry.keys())
    for i, m in enumerate(managers[1:], start=1):
        other = list(m.data_registry.keys())
        if other != keys:
            msg = (
                f"{names[i]} registers keys {other} but {names[0]} registers {keys}: "
                "register every store with the same fields (transfer_fields does)"
            )
            raise InvalidArgumentError(msg)
        for k in keys:
            a, b = dict(first.data_registry[k]), dict(m.data_registry[k])
            if a != b:
                msg = f"registry key '{k}' is {b} in {names[i]} but {a} in {names[0]}"
                raise InvalidArgumentError(msg)
    wide: set[int] = set()
    for k in keys:
        if k not in first.registry["field_registries"]:
            continue
        states = [m.get_state_registry(k) for m in managers]
        if "column_names" in states[0]:
            ref = np.asarray(states[0]["column_names"])
            for i, st in enumerate(states[1:], start=1):
                cols = np.asarray(st["column_names"])
                if not np.array_equal(cols, ref):
                    only_a = [str(g) for g in np.setdiff1d(ref, cols)[:5]]
                    only_b = [str(g) for g in np.setdiff1d(cols, ref)[:5]]
                    msg = (
                        f"registry key '{k}': {names[i]} has {cols.size} columns and "
                        f"{names[0]} {ref.size}; only in {names[0]}: {only_a}, only in "
                        f"{names[i]}: {only_b}"
                        + ("" if only_a or only_b else " (same names, another order)")
                        + ". Convert the stores to one gene set first"
                    )
                    raise InvalidArgumentError(msg)
        if "categorical_mapping" in states[0]:
            maps = [st["categorical_mapping"] for st in states]
            wide.add(_mapping_widest(k, "", maps, names))
        if "mappings" in states[0]:
            for col in states[0]["mappings"]:
                maps = [st["mappings"][col] for st in states]
                wide.add(_mapping_widest(k, f" (column '{col}')", maps, names))
    if len(wide) > 1:
        msg = (
            f"no single store holds every category: {', '.join(names[i] for i in sorted(wide))} "
            "each hold categories the others lack. Transfer the registries as a chain "
            "(ref -> a -> b) so the last store holds them all"
        )
        raise CategoryTransferError(msg)
    return wide.pop() if wide else 0


class ConcatFetcher:
    """One registry key over several stores, rows numbered store after store."""

    def __init__(self, fetchers: Sequence[RowFetcher], where: str) -> None:
        self.parts = list(fetchers)
        self.where = where
        widths = {f.n_cols for f in self.parts}
        if len(widths) != 1 or len({f.is_sparse for f in self.parts}) != 1:
            msg = f"{where} differs in width or sparsity between stores: cannot join"
            raise InvalidArgumentError(msg)
        self.n_cols = widths.pop()
        self.is_sparse = self.parts[0].is_sparse
        self.dtype = np.result_type(*[f.dtype for f in self.parts])
        sizes = [f.n_rows for f in self.parts]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.lazy = self.parts[0].lazy

    @property
    def on_disk(self) -> bool:
        return any(f.on_disk for f in self.parts)

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    def read_runs(self, runs: np.ndarray) -> Any:
        """Rows of global ``[start, stop)`` runs, concatenated in the order given."""
        runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
        pieces = _split_runs(runs, self.offsets)
        blocks = []
        # Consecutive pieces of one store are read together (one coalesced read).
        i = 0
        while i < len(pieces):
            s = pieces[i][0]
            j = i
            while j < len(pieces) and pieces[j][0] == s:
                j += 1
            local = np.array([[a, b] for _, a, b in pieces[i:j]], dtype=np.int64)
            blocks.append(self.parts[s].read_runs(local))
            i = j
        return _vstack(blocks, self.n_cols, self.dtype, self.is_sparse)


def _split_runs(runs: np.ndarray, offsets: np.ndarray) -> list[tuple[int, int, int]]:
    """``(store, local start, local stop)`` pieces of global runs, in order."""
    out = []
    for a, b in runs.tolist():
        while a < b:
            s = int(np.searchsorted(offsets, a, side="right")) - 1
            end = min(b, int(offsets[s + 1]))
            out.append((s, a - int(offsets[s]), end - int(offsets[s])))
            a = end
    return out


def _vstack(blocks: list[Any], n_cols: int, dtype: np.dtype, is_sparse: bool) -> Any:
    if len(blocks) == 1:
        return blocks[0]
    if not is_sparse:
        return np.concatenate([np.asarray(b, dtype=dtype) for b in blocks])
    csrs = [sp.csr_matrix(b) for b in blocks]
    data = np.concatenate([m.data[m.indptr[0] : m.indptr[-1]] for m in csrs]).astype(dtype)
    indices = np.concatenate([m.indices[m.indptr[0] : m.indptr[-1]] for m in csrs])
    ptrs, base = [np.zeros(1, np.int64)], 0
    for m in csrs:
        p = m.indptr.astype(np.int64)
        ptrs.append(p[1:] - p[0] + base)
        base += int(p[-1] - p[0])
    indptr = np.concatenate(ptrs)
    return sp.csr_matrix((data, indices, indptr), shape=(indptr.size - 1, n_cols), copy=False)


def concat_fetcher(fetchers: Sequence[RowFetcher], where: str) -> Any:
    """A fetcher over all stores: per-cell columns in memory are joined once, ``X`` stays lazy."""
    if len(fetchers) == 1:
        return fetchers[0]
    if not any(f.on_disk for f in fetchers):
        mems = [f.memory for f in fetchers]
        joined = sp.vstack(mems, format="csr") if sp.issparse(mems[0]) else np.concatenate(mems)
        return RowFetcher(joined, where)
    return ConcatFetcher(fetchers, where)
