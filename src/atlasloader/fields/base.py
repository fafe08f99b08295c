"""``BaseAnnDataField``: the contract every field fulfils (names as in scvi-tools)."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from ..registry.model import DataLocation
from ..store.backing import Backing, backing_of
from ..store.codec import to_jsonable

if TYPE_CHECKING:
    import rich.table

Location = tuple[str, "str | None"]


class BaseAnnDataField(ABC):
    """Maps one registry key to a part of an AnnData (in memory or a lazily opened store).

    Subclasses implement :meth:`validate_field`, :meth:`register_field`,
    :meth:`transfer_field`, :meth:`get_summary_stats` and :meth:`view_state_registry`, and say
    which locations they read (:meth:`input_locations`) and write (:meth:`output_locations`)
    so registrations of stores can be persisted and checked for staleness.
    """

    @property
    @abstractmethod
    def registry_key(self) -> str:
        """The key models use to fetch this field's tensor from a minibatch."""

    @property
    @abstractmethod
    def attr_name(self) -> str:
        """The AnnData attribute holding the data (``X``, ``obs``, ``obsm``, ``layers``...)."""

    @property
    @abstractmethod
    def attr_key(self) -> str | None:
        """The key within :attr:`attr_name` (None for ``X``)."""

    @property
    @abstractmethod
    def is_empty(self) -> bool:
        """True when the field registers nothing (an optional field given no key)."""

    @abstractmethod
    def validate_field(self, adata: Any) -> None:
        """Raise if ``adata`` cannot be registered with this field."""

    @abstractmethod
    def register_field(self, adata: Any) -> dict:
        """Register and return the state registry."""
        self.validate_field(adata)
        return {}

    @abstractmethod
    def transfer_field(self, state_registry: dict, adata_target: Any, **kwargs: Any) -> dict:
        """Register ``adata_target`` following a reference ``state_registry``."""
        return {}

    @abstractmethod
    def get_summary_stats(self, state_registry: dict) -> dict:
        """Summary statistics derived from the state registry only."""

    @abstractmethod
    def view_state_registry(self, state_registry: dict) -> rich.table.Table | None:
        """A rich table describing the state registry, or None."""

    # --- shared behaviour ---------------------------------------------------------------------
    def backing(self, adata: Any) -> Backing:
        return backing_of(adata)

    def get_field_data(self, adata: Any) -> Any:
        """The registered data as stored (in memory: the array/DataFrame; store: lazy)."""
        if self.is_empty:
            raise AssertionError(f"The {self.registry_key} field is empty.")
        from ..store.lazy import LazyAnnData

        if isinstance(adata, LazyAnnData):
            if self.attr_name == "X":
                return adata.X
            if self.attr_name == "obs":
                return adata.obs.column(self.attr_key or "")
            return getattr(adata, self.attr_name)[self.attr_key]
        if self.attr_name == "X":
            return adata.X
        return getattr(adata, self.attr_name)[self.attr_key]

    def get_data_registry(self) -> dict:
        """``{"attr_name": ..., "attr_key": ...}``, or ``{}`` for an empty field."""
        loc = self.data_location()
        return {} if loc is None else loc.to_dict()

    def data_location(self) -> DataLocation | None:
        return None if self.is_empty else DataLocation(self.attr_name, self.attr_key)

    def input_locations(self) -> list[Location]:
        """Where the field reads its source data (used to detect stale persisted state)."""
        return [] if self.is_empty else [(self.attr_name, self.attr_key)]

    def output_locations(self) -> list[Location]:
        """Locations the field writes (encoded columns); empty for read-only fields."""
        return []

    def spec(self) -> dict[str, Any]:
        """JSON description of this field's configuration (identifies persisted state)."""
        state = {k: v for k, v in vars(self).items() if not k.startswith("__")}
        return {"class": type(self).__name__, "args": to_jsonable(_plain(state))}

    def spec_id(self, extra: Any = None) -> str:
        payload = json.dumps([self.spec(), to_jsonable(_plain(extra))], sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(registry_key={self.registry_key!r}, attr_key={self.attr_key!r})"
        )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, type):
        return value.__name__
    return value
