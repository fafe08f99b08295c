"""Build a registry from fields, reusing state persisted in a store when it is still valid.

On a writable store one registration is one :class:`Registration`: the fields' records are
written together once every field is registered, and a registration that fails part-way
removes the columns it added, so a bad input leaves the store as it found it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ColumnExistsError, ReadOnlyStoreError
from ..store import records
from ..store.backing import ZarrBacking, backing_of
from ..store.write import (
    drop_staging,
    remove_member,
    reserve_rollback_space,
)
from .model import FieldRegistry

if TYPE_CHECKING:
    from ..fields.base import BaseAnnDataField


def build_field_registry(
    field: BaseAnnDataField,
    adata: Any,
    source_state: Mapping[str, Any] | None = None,
    tokens: dict[str, str | None] | None = None,
    registration: Registration | None = None,
    **transfer_kwargs: Any,
) -> FieldRegistry:
    """Register (or transfer) one field; on stores reuse or persist its state.

    ``tokens``, when given, receives the ownership token of every column the field's
    persisted state was written with (``{"obs/_scvi_labels": token}``): the codes this
    registration may read, whoever re-encodes the column later.
    """
    if field.is_empty:
        state: dict = {}
    else:
        backing = backing_of(adata)
        if isinstance(backing, ZarrBacking):
            state = _register_persisted(
                field, backing, source_state, transfer_kwargs, tokens, registration
            )
        else:
            state = _register(field, adata, source_state, transfer_kwargs)
    return FieldRegistry(field.data_location(), state, field.get_summary_stats(state))


def _register(
    field: BaseAnnDataField,
    adata: Any,
    source_state: Mapping[str, Any] | None,
    transfer_kwargs: dict[str, Any],
) -> dict:
    if source_state is not None:
        return field.transfer_field(dict(source_state), adata, **transfer_kwargs)
    return field.register_field(adata)


def _register_persisted(
    field: BaseAnnDataField,
    backing: ZarrBacking,
    source_state: Mapping[str, Any] | None,
    transfer_kwargs: dict[str, Any],
    tokens: dict[str, str | None] | None = None,
    registration: Registration | None = None,
) -> dict:
    root = backing.adata.group
    spec_id = field.spec_id(
        None if source_state is None else {"source": dict(source_state), "kw": transfer_kwargs}
    )
    inputs = field.input_locations()
    outputs = field.output_locations()
    cached = records.load_state(root, spec_id, inputs, outputs)
    if cached is not None:
        field.validate_field(backing.adata)  # cheap checks (keys, dtype, count sample) only
        if tokens is not None:
            tokens.update(records.field_tokens(root, spec_id))
        return cached
    if outputs and not backing.adata.writable:
        msg = (
            f"field {field.registry_key!r} must write {[f'{a}/{k}' for a, k in outputs]} "
            f"into the read-only store {backing.adata.path!r} and no valid persisted "
            "registration was found. Register it once where it is writable "
            "(read_lazy(path, mode='r+')), or copy the store"
        )
        raise ReadOnlyStoreError(msg)
    _refuse_foreign(field, backing, outputs)
    if registration is not None:
        registration.begin()
    state = _register(field, backing.adata, source_state, transfer_kwargs)
    if backing.adata.writable:
        backing.flush()  # the outputs must exist before they are stamped
        root = backing.adata.group  # flush re-opened the store
        rec = records.field_record(root, field.registry_key, state, inputs, outputs)
        if registration is None:
            records.save_records(root, {spec_id: rec})
        else:
            registration.records[spec_id] = rec
        backing.mark_dirty()  # consolidated metadata must show the new record
        if tokens is not None:
            tokens.update(rec["outputs"])
    elif tokens is not None:
        # Encoded in memory only (read-only store): nothing on disk may stand in for it.
        tokens.update({f"{a}/{k}": None for a, k in outputs})
    return state


def _refuse_foreign(
    field: BaseAnnDataField, backing: ZarrBacking, outputs: list[tuple[str, str | None]]
) -> None:
    """Refuse to replace a column the field would write that atlasloader did not write."""
    root = backing.adata.group
    for attr_name, key in outputs:
        if key is None or not records.output_exists(root, attr_name, key):
            continue
        if records.output_token(root, attr_name, key) is None:
            msg = (
                f"field {field.registry_key!r} writes its codes to adata.{attr_name}[{key!r}], "
                f"which already exists in the store {backing.adata.path!r} and was not written "
                "by atlasloader (an in-memory scvi-tools setup saved with the data, or your "
                f"own column). atlasloader never replaces your columns: rename or delete "
                f"{attr_name}/{key} in the store, then register again"
            )
            raise ColumnExistsError(msg)


class Registration:
    """The writes of one registration on a store, committed together or removed together.

    Before its first write (:meth:`begin`) the store is marked as having a registration under
    way (:func:`atlasloader.store.records.begin_operation`); the mark is removed when the
    ``with`` block ends, committed or rolled back, so a registration killed part-way is named
    by validation as an interrupted operation, not taken for a stale one. A mark left by a
    writer that died is removed by the next registration (it holds the store's write lock).
    Field records are collected and written in one metadata write by :meth:`commit`; if a
    field fails, :meth:`rollback` removes the columns this registration added (a column it
    re-encoded keeps its new codes, with no record naming them: the next registration
    re-encodes it) and any staged array. In memory and on read-only stores all are no-ops.
    """

    def __init__(self, adata: Any, operation: str = "registration") -> None:
        backing = backing_of(adata)
        writable = isinstance(backing, ZarrBacking) and backing.adata.writable
        self.backing: ZarrBacking | None = backing if writable else None  # type: ignore[assignment]
        self.operation = operation
        self.records: dict[str, dict[str, Any]] = {}
        self._before: set[str] = set()
        self._marked = False
        self._own_mark = False  # this registration wrote the mark (not a dead writer's)
        self._previous: Any = None  # the metadata as it was before that
        if self.backing is not None:
            root = records.fresh(self.backing.adata.group)
            self._before = set(_members(root))
            self._marked = records.read_meta(root).get("pending") is not None

    def begin(self) -> None:
        """Before this registration's first write (once): hold the space its rollback needs
        (a full disk fails here, before any write), then mark the store."""
        if self.backing is None or self.backing.holds_reserve:
            return
        reserve_rollback_space(self.backing.adata.group)
        self.backing.holds_reserve = True
        if not self._marked:
            self._previous = records.begin_operation(self.backing.adata.group, self.operation)
            self._marked = self._own_mark = True

    def close(self, rolled_back: bool = False) -> None:
        """Remove the mark: the registration committed, or rolled back what it wrote (then
        the metadata this registration marked is put back exactly as it was)."""
        if self.backing is None:
            return
        if self.backing.holds_reserve:
            self.backing.holds_reserve = False
            drop_staging(self.backing.adata.group)  # frees the reserve for what follows
        if not self._marked:
            return
        if rolled_back and self._own_mark:
            records.restore_meta(self.backing.adata.group, self._previous)
        else:
            records.end_operation(self.backing.adata.group)
        self.backing.mark_dirty()  # consolidated metadata must not show the mark
        self._marked = False
        self.backing.flush()

    def commit(self) -> None:
        if self.backing is not None and self.records:
            records.save_records(self.backing.adata.group, self.records)
            self.backing.mark_dirty()
        self.records = {}

    def rollback(self) -> None:
        if self.backing is None:
            return
        self.records = {}
        root = records.fresh(self.backing.adata.group)
        drop_staging(root)  # first: on a full disk this frees the space the rest needs
        self.backing.holds_reserve = False
        added = [loc for loc in _members(root) if loc not in self._before]
        for loc in added:
            remove_member(root, *loc.split("/", 1))
        if added:
            self.backing.mark_dirty()
        self.backing.flush()

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.rollback()
            self.close(rolled_back=True)
        except Exception as cleanup:
            # The registration's own error is the one to raise; say what was left behind.
            warnings.warn(
                f"undoing the failed registration left leftovers in the store ({cleanup}); "
                "validate_store names them and the next registration removes them",
                UserWarning,
                stacklevel=2,
            )


def _members(root: Any) -> list[str]:
    """The store's obs columns and obsm arrays, as ``"obs/key"`` locations."""
    out = []
    if "obs" in root:
        out += [f"obs/{k}" for k in root["obs"].attrs.get("column-order", [])]
    if "obsm" in root:
        out += [f"obsm/{k}" for k in root["obsm"]]
    return out


def finish(adata: Any) -> None:
    """Make a registration's writes visible (consolidated metadata) and reopen lazily."""
    backing = backing_of(adata)
    if isinstance(backing, ZarrBacking) and backing.adata.writable:
        backing.flush()


def assign_uuid(adata: Any) -> str:
    """The data's ``_scvi_uuid``: ``adata.uns`` in memory, the store's attributes on disk."""
    import uuid

    backing = backing_of(adata)
    if isinstance(backing, ZarrBacking):
        root = backing.adata.group
        found = records.store_uuid(root, create=backing.adata.writable)
        if found is None:
            found = backing.adata.__dict__.setdefault("_scvi_uuid", str(uuid.uuid4()))
        return found
    uns = adata.uns
    if "_scvi_uuid" not in uns:
        uns["_scvi_uuid"] = str(uuid.uuid4())
    return uns["_scvi_uuid"]


def save_registry(adata: Any, name: str, registry_json: dict[str, Any]) -> None:
    backing = backing_of(adata)
    if isinstance(backing, ZarrBacking) and backing.adata.writable:
        before = records.read_meta(records.fresh(backing.adata.group)).get("registries", {})
        records.save_registry(backing.adata.group, name, registry_json)
        if before.get(name) != registry_json:
            backing.mark_dirty()
            finish(adata)


def check_fields(fields: Sequence[BaseAnnDataField]) -> None:
    from ..errors import InvalidArgumentError

    seen: set[str] = set()
    for f in fields:
        if f.registry_key in seen:
            msg = f"two fields use registry key {f.registry_key!r}; registry keys must be unique"
            raise InvalidArgumentError(msg)
        seen.add(f.registry_key)


__all__ = ["ReadOnlyStoreError", "assign_uuid", "build_field_registry", "finish"]
