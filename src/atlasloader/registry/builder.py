"""Build a registry from fields, reusing state persisted in a store when it is still valid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ReadOnlyStoreError
from ..store import records
from ..store.backing import ZarrBacking, backing_of
from .model import FieldRegistry

if TYPE_CHECKING:
    from ..fields.base import BaseAnnDataField


def build_field_registry(
    field: BaseAnnDataField,
    adata: Any,
    source_state: Mapping[str, Any] | None = None,
    tokens: dict[str, str | None] | None = None,
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
            state = _register_persisted(field, backing, source_state, transfer_kwargs, tokens)
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
    state = _register(field, backing.adata, source_state, transfer_kwargs)
    if backing.adata.writable:
        backing.flush()  # the outputs must exist before they are stamped
        root = backing.adata.group  # flush re-opened the store
        records.save_state(root, spec_id, field.registry_key, state, inputs, outputs)
        backing.mark_dirty()  # consolidated metadata must show the new record
        if tokens is not None:
            tokens.update(records.field_tokens(root, spec_id))
    elif tokens is not None:
        # Encoded in memory only (read-only store): nothing on disk may stand in for it.
        tokens.update({f"{a}/{k}": None for a, k in outputs})
    return state


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
