"""Persisted registrations checked against the data.

A registry's fields must have a persisted field record holding their state, and that record
must still be valid for the data, by the same test registration uses to reuse it
(:func:`atlasloader.store.records.fingerprint` of what the field read, and the tokens of the
columns it wrote). A registration that fails it would be recomputed by the next
``setup_anndata``: the data changed since it was registered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import zarr

from ..errors import AtlasLoaderError
from ..store import records
from .layout import frame_length
from .report import Problem, short_error

__all__ = ["check_registrations"]


def _split(location: str) -> tuple[str, str | None]:
    """``"obs/batch"`` -> ``("obs", "batch")``; ``"X/None"`` -> ``("X", None)`` (records' keys)."""
    attr, _, key = location.partition("/")
    return attr, None if key == "None" else key


def _shown(location: str) -> str:
    attr, key = _split(location)
    return attr if key is None else location


def _record_issues(root: zarr.Group, record: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """``(location, issue, stale)`` for each reason registration would not reuse ``record``;
    ``stale`` is False when the data cannot even be read (a corrupt store, not a stale one)."""
    issues = []
    for location, digest in record.get("inputs", {}).items():
        attr, key = _split(location)
        try:
            now = records.fingerprint(root, attr, key)
        except KeyError:
            issues.append((location, "is missing (the registration read it)", True))
            continue
        except MemoryError:
            raise
        except Exception as e:  # CorruptChunkError, unreadable metadata (reported by the walk)
            issues.append((location, f"cannot be read: {short_error(e)}", False))
            continue
        if now != digest:
            issues.append((location, "changed since it was registered", True))
    for location, token in record.get("outputs", {}).items():
        attr, key = _split(location)
        if records.output_token(root, attr, key) != token:
            issues.append((location, "was removed or overwritten since it was written", True))
    return issues


def _location_exists(root: zarr.Group, attr: str, key: str | None) -> bool:
    if key is None:
        return attr in root
    if f"{attr}/{key}" not in root:
        return False
    return attr != "obs" or key in root["obs"].attrs.get("column-order", [])


def _interrupted(pending: Any) -> Problem:
    op = pending.get("operation", "registration") if isinstance(pending, dict) else "registration"
    who = (
        f"pid {pending.get('pid')} on {pending.get('host')!r}, started {pending.get('started')}"
        if isinstance(pending, dict)
        else "unknown writer"
    )
    what = (
        f"a {op} ({who}) has not finished: it is still running or was killed part-way, so "
        "the registrations below may be the old ones or partly updated; the data is intact. "
        f"Run the {op} again (setup_anndata or transfer_fields) to complete it"
    )
    return Problem(f"attribute {records.ATTR!r}", what, kind="incomplete")


def check_registrations(root: zarr.Group) -> tuple[list[Problem], list[str], int]:
    """Problems of the persisted registrations, their names, and the field records checked.

    While a registration is marked as under way (``pending``, see
    :func:`atlasloader.store.records.begin_operation`) the registrations it is replacing are
    expected to disagree with the data: those problems are reported as ``"incomplete"``,
    with the interrupted operation named first. Unreadable data stays damage.
    """
    try:
        meta = records.read_meta(root)
    except AtlasLoaderError as e:
        return [Problem(f"attribute {records.ATTR!r}", str(e))], [], 0
    found, checked = _registry_problems(root, meta)
    interrupted = "pending" in meta
    kind = "incomplete" if interrupted else "damage"
    problems = [Problem(p.where, p.what, kind=kind) if p.kind == _STALE else p for p in found]
    if interrupted:
        problems.insert(0, _interrupted(meta["pending"]))
    return problems, list(meta["registries"]), checked


# Problems of a registration that no longer matches the data (as opposed to unreadable data).
_STALE = "stale"


def _registry_problems(root: zarr.Group, meta: dict[str, Any]) -> tuple[list[Problem], int]:
    """Problems of ``meta``'s registries; those that a re-registration would mend have
    ``kind=_STALE`` (callers turn it into ``"damage"`` or ``"incomplete"``)."""
    from ..registry.model import Registry

    field_records: dict[str, Any] = meta["fields"]
    problems: list[Problem] = []
    checked: dict[str, list[tuple[str, str, bool]]] = {}
    try:
        n_obs: int | None = frame_length(root["obs"])
    except Exception:
        n_obs = None  # already a layout problem
    for name, payload in meta["registries"].items():
        where = f"registry {name!r}"
        try:
            registry = Registry.from_json_dict(payload)
        except AtlasLoaderError as e:
            problems.append(Problem(where, str(e)))
            continue
        x_field = registry.field_registries.get("X")
        stats = {} if x_field is None else dict(x_field.summary_stats)
        if n_obs is not None and stats.get("n_cells", n_obs) != n_obs:
            what = f"was registered with {stats['n_cells']} cells; the store has {n_obs}"
            problems.append(Problem(where, what, kind=_STALE))
        states = payload["registry"]["field_registries"]
        for key, fr in registry.field_registries.items():
            if fr.data_registry is None:
                continue  # an empty field registers nothing
            fwhere = f"{where}, field {key!r}"
            loc = fr.data_registry
            if not _location_exists(root, loc.attr_name, loc.attr_key):
                what = f"its data {loc.describe()} is not in the store; run setup again"
                problems.append(Problem(fwhere, what, kind=_STALE))
            state = states[key]["state_registry"]
            matches = [
                spec
                for spec, rec in field_records.items()
                if rec.get("registry_key") == key and rec.get("state") == state
            ]
            if not matches:
                what = "no persisted field record holds its state; run setup again"
                problems.append(Problem(fwhere, what, kind=_STALE))
                continue
            for spec in matches:
                if spec not in checked:
                    checked[spec] = _record_issues(root, field_records[spec])
            if all(checked[spec] for spec in matches):
                for location, issue, stale in checked[matches[0]]:
                    what = f"{issue}; field {key!r} of {where} cannot be checked"
                    if stale:
                        what = (
                            f"{issue}: field {key!r} of {where} is stale; run setup (the "
                            "model's setup_anndata) again to register the current data"
                        )
                    kind = _STALE if stale else "damage"
                    problems.append(Problem(_shown(location), what, kind=kind))
    return problems, len(checked)
