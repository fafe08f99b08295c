"""The registry as typed, frozen objects; the seed's nested mapping is produced from them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .. import constants as C
from ..errors import InvalidDataError
from ..store.codec import from_jsonable, to_jsonable
from .attrdict import attrdict

REGISTRY_ENCODING_TYPE = "atlasloader-registry"
REGISTRY_ENCODING_VERSION = "0.1.0"


@dataclass(frozen=True)
class DataLocation:
    """Where a field's data lives: ``adata.<attr_name>[<attr_key>]``."""

    attr_name: str
    attr_key: str | None

    def to_dict(self) -> dict[str, Any]:
        return {C.DR_ATTR_NAME: self.attr_name, C.DR_ATTR_KEY: self.attr_key}

    def describe(self) -> str:
        if self.attr_key is None:
            return f"adata.{self.attr_name}"
        return f"adata.{self.attr_name}['{self.attr_key}']"


@dataclass(frozen=True)
class FieldRegistry:
    """One field's registry: data location (None for an empty field), state and summary stats."""

    data_registry: DataLocation | None
    state_registry: Mapping[str, Any]
    summary_stats: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            C.DATA_REGISTRY_KEY: {} if self.data_registry is None else self.data_registry.to_dict(),
            C.STATE_REGISTRY_KEY: dict(self.state_registry),
            C.SUMMARY_STATS_KEY: dict(self.summary_stats),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FieldRegistry:
        dr = d.get(C.DATA_REGISTRY_KEY) or {}
        loc = DataLocation(dr[C.DR_ATTR_NAME], dr.get(C.DR_ATTR_KEY)) if dr else None
        return cls(loc, dict(d.get(C.STATE_REGISTRY_KEY) or {}), dict(d[C.SUMMARY_STATS_KEY]))


@dataclass(frozen=True)
class Registry:
    """The whole registry of one registration (the seed's top-level mapping)."""

    scvi_version: str
    model_name: str | None = None
    setup_args: Mapping[str, Any] | None = None
    field_registries: Mapping[str, FieldRegistry] = field(default_factory=dict)
    scvi_uuid: str | None = None

    def with_field(self, registry_key: str, fr: FieldRegistry) -> Registry:
        regs = dict(self.field_registries)
        regs[registry_key] = fr
        return replace(self, field_registries=regs)

    def to_dict(self) -> dict[str, Any]:
        """The seed's nested mapping (plain dicts, numpy arrays kept)."""
        d: dict[str, Any] = {
            C.SCVI_VERSION_KEY: self.scvi_version,
            C.MODEL_NAME_KEY: self.model_name,
            C.SETUP_ARGS_KEY: None if self.setup_args is None else dict(self.setup_args),
            C.FIELD_REGISTRIES_KEY: {k: v.to_dict() for k, v in self.field_registries.items()},
        }
        if self.scvi_uuid is not None:
            d[C.SCVI_UUID_KEY] = self.scvi_uuid
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Registry:
        try:
            return cls(
                scvi_version=d[C.SCVI_VERSION_KEY],
                model_name=d.get(C.MODEL_NAME_KEY),
                setup_args=d.get(C.SETUP_ARGS_KEY),
                field_registries={
                    k: FieldRegistry.from_dict(v) for k, v in d[C.FIELD_REGISTRIES_KEY].items()
                },
                scvi_uuid=d.get(C.SCVI_UUID_KEY),
            )
        except KeyError as e:
            msg = f"registry mapping lacks the key {e.args[0]!r}; it was not made by atlasloader"
            raise InvalidDataError(msg) from None

    def data_registry(self) -> attrdict:
        return attrdict(
            {
                k: fr.data_registry.to_dict()
                for k, fr in self.field_registries.items()
                if fr.data_registry is not None
            }
        )

    def summary_stats(self) -> attrdict:
        out: dict[str, Any] = {}
        for key, fr in self.field_registries.items():
            for stat, value in fr.summary_stats.items():
                if stat in out:
                    msg = (
                        f"summary stat {stat!r} of field {key!r} is already set by another "
                        "field; give the fields distinct registry keys"
                    )
                    raise InvalidDataError(msg)
                out[stat] = value
        return attrdict(out)

    # --- JSON persistence -------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        return {
            "encoding-type": REGISTRY_ENCODING_TYPE,
            "encoding-version": REGISTRY_ENCODING_VERSION,
            "registry": to_jsonable(self.to_dict()),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict())

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any]) -> Registry:
        enc = d.get("encoding-type")
        ver = d.get("encoding-version")
        if enc != REGISTRY_ENCODING_TYPE:
            msg = f"not an atlasloader registry (encoding-type {enc!r})"
            raise InvalidDataError(msg)
        if ver != REGISTRY_ENCODING_VERSION:
            msg = (
                f"registry encoding-version {ver!r} is not supported by this atlasloader "
                f"(reads {REGISTRY_ENCODING_VERSION!r}); upgrade atlasloader or register again"
            )
            raise InvalidDataError(msg)
        _check_ranges(d.get("registry"), "registry")
        return cls.from_dict(from_jsonable(d["registry"]))

    @classmethod
    def from_json(cls, text: str) -> Registry:
        return cls.from_json_dict(json.loads(text))


_INT64 = 2**63


def _check_ranges(node: Any, where: str) -> None:
    """Refuse integers no array index or count can hold (a registry edited by hand)."""
    if isinstance(node, bool):
        return
    if isinstance(node, int) and not -_INT64 <= node < _INT64:
        msg = (
            f"the persisted registry holds {where} = {node}, beyond any count a store can "
            "have (64-bit): the registry was edited outside atlasloader. Restore it from a "
            "backup, or register the store again"
        )
        raise InvalidDataError(msg)
    if isinstance(node, dict):
        for k, v in node.items():
            _check_ranges(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_ranges(v, f"{where}[{i}]")
