"""Persist preprocessing results next to the data, never changing a column the user wrote.

On a store, columns go through :mod:`atlasloader.store.write` (each array staged, then made
visible in one step; ``column-order`` updated last), so a crash never leaves a store that
``anndata.read_zarr`` cannot open. What was written by whom is recorded twice:

* each column we write carries two attributes: ``atlasloader-token`` (a random token) and
  ``atlasloader-preprocess`` (the pass that wrote it);
* the root attribute ``atlasloader-preprocess`` holds, versioned::

      {"encoding-type": "atlasloader-preprocess", "encoding-version": "0.1.0",
       "columns": {"obs/size_factor": <token>, "var/highly_variable": <token>, ...},
       "passes": {"library_size" | "gene_stats" | "highly_variable_genes":
                  {"params": {...}, "inputs": {"X/None": <fingerprint>, ...},
                   "outputs": ["obs/total_counts", ...], "summary": {...},
                   "complete": true}}}

A column is ours when its token matches the one recorded for it: a column of the same name
written by anything else (anndata, the user, a copy from another store) is the user's, and
is replaced only with ``overwrite=True``. Tokens are recorded *before* columns are written (and a
column we own keeps its token when rewritten), so an interrupted run leaves columns that the
next run still recognises as its own. A pass is
reused, without reading ``X``, when its record is complete, was made with the same parameters,
the fingerprints of its inputs (metadata and sampled chunks of the matrix, every value of the
batch column) still match, and each of its columns still carries its token.

In memory, results go into ``adata.obs``/``adata.var`` and the names written are recorded in
``adata.uns["atlasloader_preprocess"]``.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ColumnExistsError, InvalidDataError, ReadOnlyStoreError
from ..store import records
from ..store.backing import ZarrBacking, backing_of
from ..store.lazy import LazyAnnData
from ..store.write import Staged, drop_staging, publish_column, stage_array, stage_values

__all__ = ["ATTR", "ENCODING_TYPE", "ENCODING_VERSION", "Target", "read_record", "target_for"]

ATTR = "atlasloader-preprocess"
ENCODING_TYPE = "atlasloader-preprocess"
ENCODING_VERSION = "0.1.0"
COLUMN_ATTR = "atlasloader-preprocess"
UNS_KEY = "atlasloader_preprocess"

Location = tuple[str, str | None]


def _loc(attr_name: str, key: str | None) -> str:
    return f"{attr_name}/{key}"


def _describe(loc: str) -> str:
    frame, key = loc.split("/", 1)
    return f"adata.{frame}['{key}']"


def _collision_error(where: str, taken: list[str]) -> ColumnExistsError:
    names = ", ".join(_describe(loc) for loc in taken)
    verb = "exists" if len(taken) == 1 else "exist"
    msg = (
        f"{names} already {verb} in {where} and {'was' if len(taken) == 1 else 'were'} not "
        "written by atlasloader.preprocess, which never replaces your columns: pass "
        "overwrite=True to replace them, or rename them first"
    )
    return ColumnExistsError(msg)


class Target(ABC):
    """Where the results of the passes go: a store, or an in-memory AnnData."""

    where: str

    @abstractmethod
    def reusable(
        self, name: str, params: dict[str, Any], inputs: list[Location], outputs: list[str]
    ) -> dict[str, Any] | None:
        """The pass's persisted summary when its results can be reused as they are."""

    @abstractmethod
    def foreign(self, outputs: list[str]) -> list[str]:
        """The ``frame/column`` outputs that exist and were not written by us."""

    def check_outputs(self, outputs: list[str], overwrite: bool) -> None:
        taken = self.foreign(outputs)
        if taken and not overwrite:
            raise _collision_error(self.where, taken)

    @abstractmethod
    def require_writable(self) -> None: ...

    def stage(self, loc: str, n: int, dtype: Any, chunk_rows: int) -> Staged | None:
        """A staged store array for the per-cell column ``loc`` that dask tasks fill chunk by
        chunk (chunks of ``chunk_rows``), published by :meth:`write`; None where results are
        gathered instead (in memory)."""
        return None

    @abstractmethod
    def write(
        self,
        name: str,
        params: dict[str, Any],
        inputs: list[Location],
        columns: dict[str, np.ndarray | Staged],
        summary: dict[str, Any],
    ) -> None:
        """Persist ``columns`` (``{"obs/total_counts": values, ...}``) and the pass record.

        A value may be a :class:`~atlasloader.store.write.Staged` array from :meth:`stage`.
        """

    def finish(self) -> None:  # noqa: B027 - nothing to flush in memory
        """Make every write visible (consolidated metadata on stores)."""

    def discard(self) -> None:  # noqa: B027 - nothing staged in memory
        """Drop what was staged and not published (after a pass failed)."""


# --- stores -------------------------------------------------------------------------------------
def read_record(root: Any) -> dict[str, Any]:
    rec = root.attrs.get(ATTR)
    if rec is None:
        return {
            "encoding-type": ENCODING_TYPE,
            "encoding-version": ENCODING_VERSION,
            "columns": {},
            "passes": {},
        }
    rec = dict(rec)
    if rec.get("encoding-type") != ENCODING_TYPE:
        found = rec.get("encoding-type")
        msg = (
            f"store attribute {ATTR!r} was not written by atlasloader (encoding-type {found!r}); "
            "remove or rename that attribute before preprocessing"
        )
        raise InvalidDataError(msg)
    if rec.get("encoding-version") != ENCODING_VERSION:
        msg = (
            f"the store's preprocessing record has encoding-version "
            f"{rec.get('encoding-version')!r}; this atlasloader reads {ENCODING_VERSION!r}. "
            "Upgrade atlasloader, or preprocess again with overwrite=True"
        )
        raise InvalidDataError(msg)
    rec["columns"] = dict(rec.get("columns", {}))
    rec["passes"] = dict(rec.get("passes", {}))
    return rec


class StoreTarget(Target):
    """A store opened with :func:`~atlasloader.read_lazy`."""

    def __init__(self, adata: LazyAnnData) -> None:
        self.adata = adata
        self.where = f"the store {adata.path!r}"
        # Created now, before any write: it remembers whether the store had consolidated
        # metadata (writing root attributes drops it on Zarr v3) so flush() restores it.
        backing = backing_of(adata)
        assert isinstance(backing, ZarrBacking)
        self.backing = backing

    @property
    def root(self) -> Any:
        return self.adata.group

    def _listed(self, loc: str) -> bool:
        frame, key = loc.split("/", 1)
        return key in self.root[frame].attrs.get("column-order", [])

    def _token(self, loc: str) -> str | None:
        if not self._listed(loc) or loc not in self.root:
            return None
        return self.root[loc].attrs.get(records.TOKEN_ATTR)

    def _ours(self, rec: dict[str, Any], loc: str) -> bool:
        token = self._token(loc)
        return token is not None and token == rec["columns"].get(loc)

    def foreign(self, outputs: list[str]) -> list[str]:
        rec = read_record(self.root)
        return [loc for loc in outputs if self._listed(loc) and not self._ours(rec, loc)]

    def _fingerprints(self, inputs: list[Location]) -> dict[str, str]:
        return {_loc(a, k): records.fingerprint(self.root, a, k) for a, k in inputs}

    def reusable(
        self, name: str, params: dict[str, Any], inputs: list[Location], outputs: list[str]
    ) -> dict[str, Any] | None:
        rec = read_record(self.root)
        entry = rec["passes"].get(name)
        if not entry or not entry.get("complete") or entry.get("params") != params:
            return None
        if sorted(entry.get("outputs", [])) != sorted(outputs):
            return None
        if not all(self._ours(rec, loc) for loc in outputs):
            return None
        try:
            if self._fingerprints(inputs) != entry.get("inputs"):
                return None
        except KeyError:
            return None
        return dict(entry.get("summary", {}))

    def require_writable(self) -> None:
        if not self.adata.writable:
            msg = (
                f"preprocessing must write its results into the read-only store "
                f"{self.adata.path!r} (no reusable earlier results were found): open it with "
                "read_lazy(path, mode='r+'), or copy it somewhere writable"
            )
            raise ReadOnlyStoreError(msg)

    def stage(self, loc: str, n: int, dtype: Any, chunk_rows: int) -> Staged | None:
        return stage_array(self.root, loc, (n,), dtype, chunk_rows=chunk_rows, exact=True)

    def _save(self, rec: dict[str, Any]) -> None:
        root = records.fresh(self.root)
        root.attrs[ATTR] = rec
        self.backing.mark_dirty()

    def write(
        self,
        name: str,
        params: dict[str, Any],
        inputs: list[Location],
        columns: dict[str, np.ndarray | Staged],
        summary: dict[str, Any],
    ) -> None:
        self.require_writable()
        fingerprints = self._fingerprints(inputs)
        rec = read_record(records.fresh(self.root))
        # A column we own keeps its token, a new one gets one; recording them before writing
        # keeps every column recognisably ours whenever the process dies.
        tokens = {
            loc: rec["columns"][loc] if self._ours(rec, loc) else uuid.uuid4().hex
            for loc in columns
        }
        rec["columns"].update(tokens)
        entry = {"params": params, "outputs": sorted(columns), "complete": False}
        rec["passes"][name] = entry
        self._save(rec)
        for loc, values in columns.items():
            frame, key = loc.split("/", 1)
            attrs = {records.TOKEN_ATTR: tokens[loc], COLUMN_ATTR: name}
            if isinstance(values, Staged):
                values.array.attrs.update(attrs)
            else:
                values = stage_values(self.root, loc, values, attrs)
            publish_column(values, frame, key)
        rec = read_record(records.fresh(self.root))
        rec["passes"][name] = {
            **entry,
            "inputs": fingerprints,
            "summary": summary,
            "complete": True,
        }
        self._save(rec)

    def finish(self) -> None:
        self.backing.flush()

    def discard(self) -> None:
        if self.adata.writable:
            drop_staging(self.root)


# --- memory -------------------------------------------------------------------------------------
class MemoryTarget(Target):
    """An in-memory :class:`anndata.AnnData`: results become ``obs``/``var`` columns."""

    where = "adata"

    def __init__(self, adata: Any) -> None:
        backing_of(adata)  # refuses views, as registration does
        self.adata = adata

    def _record(self) -> dict[str, list[str]]:
        rec = self.adata.uns.get(UNS_KEY, {})
        return {"columns": list(rec.get("columns", []))} if isinstance(rec, dict) else {}

    def foreign(self, outputs: list[str]) -> list[str]:
        ours = set(self._record().get("columns", []))
        taken = []
        for loc in outputs:
            frame, key = loc.split("/", 1)
            if key in getattr(self.adata, frame).columns and loc not in ours:
                taken.append(loc)
        return taken

    def reusable(
        self, name: str, params: dict[str, Any], inputs: list[Location], outputs: list[str]
    ) -> dict[str, Any] | None:
        return None  # in memory the data can change unnoticed: always recompute

    def require_writable(self) -> None:
        return None

    def write(
        self,
        name: str,
        params: dict[str, Any],
        inputs: list[Location],
        columns: dict[str, np.ndarray | Staged],
        summary: dict[str, Any],
    ) -> None:
        ours = self._record().get("columns", [])
        for loc, values in columns.items():
            frame, key = loc.split("/", 1)
            df: pd.DataFrame = getattr(self.adata, frame)
            df[key] = np.asarray(values)
            if loc not in ours:
                ours.append(loc)
        self.adata.uns[UNS_KEY] = {"columns": ours}


def target_for(adata: Any) -> Target:
    """The persistence target for a store or an in-memory AnnData."""
    if isinstance(adata, LazyAnnData):
        return StoreTarget(adata)
    return MemoryTarget(adata)
