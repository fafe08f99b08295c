"""``AnnDataManager``: composes fields into a registry for one AnnData or store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from . import constants as C
from ._version import __version__
from .errors import MissingKeyError, NotRegisteredError, StaleRegistryError
from .registry import builder, display
from .registry.attrdict import attrdict
from .registry.model import Registry
from .store import records
from .store.backing import backing_of
from .store.lazy import LazyAnnData
from .store.lock import store_dir, write_lock


@contextmanager
def _store_lock(adata: Any, what: str) -> Iterator[None]:
    """Hold a writable local store's write lock; re-read what is persisted once it is held
    (another process may have registered while this one waited)."""
    directory = store_dir(adata)
    with write_lock(directory, what):
        if directory is not None:
            adata.refresh()
        yield


@dataclass
class AnnDataManagerValidationCheck:
    """Global checks run on the data before registering (as scvi-tools)."""

    check_if_view: bool = True


class AnnDataManager:
    """Validates and registers an AnnData, or a store from :func:`~atlasloader.read_lazy`.

    Parameters
    ----------
    fields
        The fields to register.
    setup_method_args
        ``{"model_name": ..., "setup_args": {...}}`` from a model's ``setup_anndata``.
    validation_checks
        Which global checks to run.

    Examples
    --------
    >>> manager = AnnDataManager(fields=[LayerField("X", None)])  # doctest: +SKIP
    >>> manager.register_fields(atlasloader.read_lazy("atlas.zarr"))  # doctest: +SKIP
    >>> manager.view_registry()  # doctest: +SKIP
    """

    def __init__(
        self,
        fields: Sequence[Any] | None = None,
        setup_method_args: dict | None = None,
        validation_checks: AnnDataManagerValidationCheck | None = None,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.adata: Any = None
        self.fields = list(fields or [])
        builder.check_fields(self.fields)
        self.validation_checks = validation_checks or AnnDataManagerValidationCheck()
        args = setup_method_args or {}
        self._registry = Registry(
            scvi_version=__version__,
            model_name=args.get(C.MODEL_NAME_KEY),
            setup_args=args.get(C.SETUP_ARGS_KEY),
        )
        self._source_registry: dict | None = None
        self._transfer_kwargs: dict = {}
        # Ownership token of every persisted column this registration's codes were read from
        # or written to; another registration re-encoding a column changes its token.
        self._tokens: dict[str, str | None] = {}

    # --- registration -------------------------------------------------------------------------
    def _assert_anndata_registered(self) -> None:
        if self.adata is None:
            raise NotRegisteredError("AnnData object not registered. Please call register_fields.")

    def register_fields(
        self, adata: Any, source_registry: dict | None = None, **transfer_kwargs: Any
    ) -> None:
        """Register every field with ``adata`` (or transfer ``source_registry`` onto it)."""
        if self.adata is not None:
            raise AssertionError("Existing AnnData object registered with this Manager instance.")
        if source_registry is None and transfer_kwargs:
            msg = (
                f"register_fields() got unexpected keyword arguments {transfer_kwargs} passed "
                "without a source_registry."
            )
            raise TypeError(msg)
        if self.validation_checks.check_if_view:
            backing_of(adata)  # raises ViewError for views, InvalidTypeError for other objects
        sources = (source_registry or {}).get(C.FIELD_REGISTRIES_KEY, {})
        registry = self._registry
        tokens: dict[str, str | None] = {}
        what = "registration" if source_registry is None else "transfer_fields"
        with _store_lock(adata, what), builder.Registration(adata, what) as txn:
            for field in self.fields:
                src = sources.get(field.registry_key)
                state = None if src is None else src.get(C.STATE_REGISTRY_KEY)
                kwargs = transfer_kwargs if src is not None else {}
                fr = builder.build_field_registry(field, adata, state, tokens, txn, **kwargs)
                registry = registry.with_field(field.registry_key, fr)
            txn.commit()
            builder.finish(adata)
            self._registry = replace(registry, scvi_uuid=builder.assign_uuid(adata))
            self._source_registry = source_registry
            self._transfer_kwargs = dict(transfer_kwargs)
            self._tokens = tokens
            self.adata = adata
            self._mark_most_recent()
            builder.save_registry(
                adata, self._registry.model_name or "AnnDataManager", self._registry.to_json_dict()
            )

    def _mark_most_recent(self) -> None:
        if isinstance(self.adata, LazyAnnData):
            self.adata.__dict__[C.MANAGER_UUID_KEY] = self.id
        else:
            self.adata.uns[C.MANAGER_UUID_KEY] = self.id

    def _most_recent_id(self) -> str | None:
        if isinstance(self.adata, LazyAnnData):
            return self.adata.__dict__.get(C.MANAGER_UUID_KEY)
        return self.adata.uns.get(C.MANAGER_UUID_KEY)

    def register_new_fields(self, fields: Sequence[Any]) -> None:
        """Add fields to an already registered manager."""
        self._assert_anndata_registered()
        self.validate()
        builder.check_fields([*self.fields, *fields])
        registry = self._registry
        tokens = dict(self._tokens)
        with _store_lock(self.adata, "registration"), builder.Registration(self.adata) as txn:
            for field in fields:
                registry = registry.with_field(
                    field.registry_key,
                    builder.build_field_registry(field, self.adata, None, tokens, txn),
                )
            txn.commit()
            builder.finish(self.adata)
        self._tokens = tokens
        self._registry = registry
        self.fields += list(fields)

    def transfer_fields(self, adata_target: Any, **kwargs: Any) -> AnnDataManager:
        """A new manager for ``adata_target`` following this registry (query mapping).

        Works store-to-store: the query store's columns are encoded with this manager's
        categorical mappings (``extend_categories=True`` appends new categories).
        """
        self._assert_anndata_registered()
        new = type(self)(
            fields=self.fields,
            setup_method_args=self._get_setup_method_args(),
            validation_checks=self.validation_checks,
        )
        new.register_fields(adata_target, self.registry, **kwargs)
        return new

    def stale_encodings(self) -> list[str]:
        """Persisted columns (``"obs/_scvi_labels"``) another registration re-encoded since.

        Checks the store itself, so a registration in another process counts too. Always
        empty in memory, where :meth:`validate`'s most-recent-manager check covers it.
        """
        self._assert_anndata_registered()
        if not isinstance(self.adata, LazyAnnData) or not self._tokens:
            return []
        # A None token: encoded in memory only (read-only store), nothing on disk to compare.
        mine = {loc: token for loc, token in self._tokens.items() if token is not None}
        now = records.current_tokens(self.adata.group, list(mine))
        return [loc for loc, token in mine.items() if now[loc] != token]

    def check_encodings(self, when: str = "") -> None:
        """Raise :class:`~atlasloader.errors.StaleRegistryError` if :meth:`stale_encodings`."""
        stale = self.stale_encodings()
        if stale:
            model = self._registry.model_name or "AnnDataManager"
            msg = (
                f"the persisted codes {stale} of the store {self.adata.path!r} were re-encoded "
                f"by another registration {when}".rstrip()
                + f" (this one is {model}'s); they no longer follow this registry's "
                "mappings. Do not register the same store with different setups "
                "concurrently: finish one, then call manager.validate() (or setup_anndata "
                "again) to re-register"
            )
            raise StaleRegistryError(msg)

    def validate(self) -> None:
        """Re-register if another manager registered the same data since.

        On a store this also re-registers when a column this registry's codes live in was
        re-encoded by another registration, in this process or another (SCVI and SCANVI
        encode the same labels differently, in the same ``obs/_scvi_labels``).
        """
        self._assert_anndata_registered()
        if self._most_recent_id() != self.id or self.stale_encodings():
            adata, self.adata = self.adata, None
            self._registry = replace(self._registry, field_registries={})
            self.register_fields(adata, self._source_registry, **self._transfer_kwargs)

    def update_setup_method_args(self, setup_method_args: dict) -> None:
        """Update ``setup_args`` with the given entries."""
        args = dict(self._registry.setup_args or {})
        args.update(setup_method_args)
        self._registry = replace(self._registry, setup_args=args)

    def _get_setup_method_args(self) -> dict:
        return {
            C.MODEL_NAME_KEY: self._registry.model_name,
            C.SETUP_ARGS_KEY: self._registry.setup_args,
        }

    # --- read access --------------------------------------------------------------------------
    @property
    def adata_uuid(self) -> str:
        self._assert_anndata_registered()
        assert self._registry.scvi_uuid is not None
        return self._registry.scvi_uuid

    @property
    def registry(self) -> dict:
        """The seed's nested registry mapping."""
        return self._registry.to_dict()

    @property
    def typed_registry(self) -> Registry:
        """The registry as typed frozen objects."""
        return self._registry

    @property
    def data_registry(self) -> attrdict:
        self._assert_anndata_registered()
        return self._registry.data_registry()

    @property
    def summary_stats(self) -> attrdict:
        self._assert_anndata_registered()
        return self._registry.summary_stats()

    def get_state_registry(self, registry_key: str) -> attrdict:
        self._assert_anndata_registered()
        regs = self._registry.field_registries
        if registry_key not in regs:
            msg = f"{registry_key!r} is not a registered key; registered: {list(regs)}"
            raise MissingKeyError(msg)
        return attrdict(dict(regs[registry_key].state_registry))

    def get_from_registry(self, registry_key: str) -> Any:
        """The data behind a registry key.

        In memory: as scvi-tools (arrays, DataFrames; obs columns as ``(n, 1)`` arrays).
        On stores: a :class:`~atlasloader.store.matrix.LazyMatrix` for matrices and a dask
        array for obs columns, so nothing large is read.
        """
        dr = self.data_registry
        if registry_key not in dr:
            msg = f"{registry_key!r} is not in the data registry; keys: {list(dr.keys())}"
            raise MissingKeyError(msg)
        loc = dr[registry_key]
        name, key = loc[C.DR_ATTR_NAME], loc[C.DR_ATTR_KEY]
        if isinstance(self.adata, LazyAnnData):
            if name == "X":
                return self.adata.X
            if name == "obs":
                return self.adata.obs.column(key).values.reshape(-1, 1)
            return getattr(self.adata, name)[key]
        value = self.adata.X if name == "X" else getattr(self.adata, name)[key]
        if name == "obs":
            return value.to_numpy().reshape(-1, 1)
        return value

    # --- display ------------------------------------------------------------------------------
    def view_registry(self, hide_state_registries: bool = False) -> None:
        """Print the summary statistics, data registry and state registry tables."""
        tables = (
            f.view_state_registry(self.get_state_registry(f.registry_key))
            for f in self.fields
            if f.registry_key in self._registry.field_registries
        )
        display.print_registry(self._registry, tables, hide_state_registries)

    def __repr__(self) -> str:
        status = (
            "unregistered" if self.adata is None else f"registered to {type(self.adata).__name__}"
        )
        return f"<AnnDataManager {len(self.fields)} fields, {status}>"
