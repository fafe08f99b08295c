"""Cases: the persisted registry JSON tampered with (invalid, unknown version, wrong mapping)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ... import errors as E
from .actions import _SETUP, _api_setup, _api_view, _cli_setup, _store
from .build import _copy, _then
from .case import STORE, Case


def _root_attrs(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """Edit the root group's attributes in ``zarr.json`` as text (a user or tool tampering)."""

    def build(base: Path) -> None:
        path = base / STORE / "zarr.json"
        doc = json.loads(path.read_text())
        edit(doc["attributes"])
        cons = doc.get("consolidated_metadata")
        if cons is not None:  # anndata readers see the consolidated copy
            doc["consolidated_metadata"] = cons
        path.write_text(json.dumps(doc))

    return build


def _registry_json(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def tamper(attrs: dict[str, Any]) -> None:
        edit(attrs["atlasloader"])

    return tamper


def _mapping_of(meta: dict[str, Any], key: str = "batch") -> list[Any]:
    """The categorical mapping of ``key`` in every field record and registry (for tampering)."""
    found: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("original_key") == key and "categorical_mapping" in node:
                found.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(meta)
    return found


def _wrong_mapping(meta: dict[str, Any]) -> None:
    for state in _mapping_of(meta):  # codes 0..2 stay in the store; the mapping keeps 1
        state["categorical_mapping"]["__ndarray__"] = state["categorical_mapping"]["__ndarray__"][
            :1
        ]


def _huge(meta: dict[str, Any]) -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("n_obs", "n_cells") and isinstance(v, int):
                    node[k] = 10**30
                else:
                    walk(v)

    walk(meta)


def _bad_json(base: Path) -> None:
    path = base / STORE / "zarr.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def _version(meta: dict[str, Any]) -> None:
    meta["encoding-version"] = "99.0.0"


CASES: list[Case] = [
    # --- persisted registry JSON ----------------------------------------------------------------
    Case("registry_invalid_json", "registry", _then(_copy("registered"), _bad_json),
         _api_view, lambda base: ["view", _store(base)], E.NotAnnDataStoreError,
         r"zarr\.json", "records.load_registries(open_root(store))"),
    Case("registry_unknown_version", "registry",
         _then(_copy("registered"), _root_attrs(_registry_json(_version))),
         _api_view, lambda base: ["view", _store(base)], E.InvalidDataError,
         r"encoding-version.*99\.0\.0", "records.load_registries(open_root(store))"),
    Case("registry_version_setup", "registry",
         _then(_copy("registered"), _root_attrs(_registry_json(_version))),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.InvalidDataError,
         r"encoding-version.*99\.0\.0", _SETUP),
    Case("registry_mapping_disagrees", "registry",
         _then(_copy("registered"), _root_attrs(_registry_json(_wrong_mapping))),
         _api_setup(batch_key="batch", labels_key="labels"),
         _cli_setup("--batch-key", "batch", "--labels-key", "labels"), E.StaleRegistryError,
         r"batch", "SCVI.setup_anndata(store, batch_key='batch', labels_key='labels')"),
    Case("registry_huge_values", "registry",
         _then(_copy("registered"), _root_attrs(_registry_json(_huge))),
         _api_view, lambda base: ["view", _store(base)], E.InvalidDataError, r"n_(obs|cells)",
         "records.load_registries(open_root(store))"),
]  # fmt: skip
