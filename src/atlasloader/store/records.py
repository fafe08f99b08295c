"""Persisted registrations inside a store: versioned JSON in the root group's attributes.

Layout of ``root.attrs["atlasloader"]``::

    {"encoding-type": "atlasloader-store", "encoding-version": "0.1.0",
     "uuid": "...",                                   # the store's _scvi_uuid
     "fields": {<spec id>: {"registry_key", "state", "inputs", "outputs", "sha256"}},
     "registries": {<name>: <registry JSON>},
     "pending": {"operation", "host", "pid", "started"}}  # only while a registration runs

A field's saved state is reused only when the fingerprints of everything it read still match
and every column it wrote still carries the token written with it; otherwise it is recomputed.
``sha256`` is the checksum of the record's state: a record edited by hand (a mapping that no
longer follows the codes it was written with) is refused, never reused. ``pending`` is written
before a registration's first write and removed once it has committed: found with no writer
running, it names a registration that was killed part-way (validation reports it).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from typing import Any

import numpy as np
import zarr

from ..errors import CorruptChunkError, InvalidDataError, StaleRegistryError
from .codec import from_jsonable, to_jsonable

ATTR = "atlasloader"
ENCODING_TYPE = "atlasloader-store"
ENCODING_VERSION = "0.1.0"
TOKEN_ATTR = "atlasloader-token"
_SAMPLED_CHUNKS = 3
_SMALL = 1 << 20  # arrays up to 1 Mi elements are hashed whole


def read_meta(root: zarr.Group) -> dict[str, Any]:
    meta = root.attrs.get(ATTR)
    if meta is None:
        return {
            "encoding-type": ENCODING_TYPE,
            "encoding-version": ENCODING_VERSION,
            "fields": {},
            "registries": {},
        }
    meta = dict(meta)
    if meta.get("encoding-type") != ENCODING_TYPE:
        enc = meta.get("encoding-type")
        msg = f"store attribute {ATTR!r} was not written by atlasloader ({enc!r})"
        raise InvalidDataError(msg)
    if meta.get("encoding-version") != ENCODING_VERSION:
        msg = (
            f"the store's atlasloader metadata has encoding-version "
            f"{meta.get('encoding-version')!r}; "
            f"this atlasloader reads {ENCODING_VERSION!r}. Upgrade atlasloader, or register again"
        )
        raise InvalidDataError(msg)
    meta.setdefault("fields", {})
    meta.setdefault("registries", {})
    return meta


def write_meta(root: zarr.Group, meta: dict[str, Any]) -> None:
    root.attrs[ATTR] = meta


def fresh(root: zarr.Group) -> zarr.Group:
    """The same group re-read from the store.

    Group handles cache their attributes; every read-modify-write of our metadata starts from
    what is on disk, so records written through another handle are never lost.
    """
    return zarr.open_group(store=root.store, path=root.path, mode="r+", use_consolidated=False)


def store_uuid(root: zarr.Group, create: bool) -> str | None:
    meta = read_meta(root)
    if "uuid" not in meta and create:
        root = fresh(root)
        meta = read_meta(root)
        meta["uuid"] = str(uuid.uuid4())
        write_meta(root, meta)
    return meta.get("uuid")


# --- fingerprints ----------------------------------------------------------------------------
def _hash_array(arr: zarr.Array, h: Any, whole: bool = False) -> None:
    h.update(json.dumps([list(arr.shape), str(arr.dtype), list(arr.chunks)]).encode())
    n = int(arr.shape[0]) if arr.shape else 0
    if n == 0:
        return
    c = int(arr.chunks[0])
    if int(np.prod(arr.shape)) <= _SMALL:
        sels = [slice(None)]
    elif whole:
        # Every value, a few whole chunks at a time (bounded memory).
        step = c * max(1, _SMALL // max(1, c * int(np.prod(arr.shape[1:]))))
        sels = [slice(i, min(n, i + step)) for i in range(0, n, step)]
    else:
        n_chunks = -(-n // c)
        picks = sorted({0, n_chunks // 2, n_chunks - 1})[:_SAMPLED_CHUNKS]
        sels = [slice(i * c, min(n, (i + 1) * c)) for i in picks]
    for sel in sels:
        try:
            block = np.asarray(arr[sel])
        except MemoryError:
            raise
        except Exception as e:  # codecs raise many unrelated types for a corrupt chunk
            msg = (
                f"cannot read {arr.path!r} (rows {sel.start or 0}:{sel.stop or n}) of the store "
                f"{arr.store}: {type(e).__name__}: {e}. The chunk is missing or corrupt; "
                "re-create the store or restore that file"
            )
            raise CorruptChunkError(msg) from e
        if block.dtype.kind in "OUT" or str(block.dtype).startswith("StringDType"):
            h.update("\x1f".join(map(str, block.ravel().tolist())).encode())
        else:
            h.update(np.ascontiguousarray(block).tobytes())


def _hash_node(node: zarr.Array | zarr.Group, h: Any, whole: bool = False) -> None:
    from .elements import encoding_type  # dask and pandas: not needed to read the records

    h.update(encoding_type(node).encode())
    if isinstance(node, zarr.Array):
        _hash_array(node, h, whole)
        return
    h.update(json.dumps({k: v for k, v in node.attrs.items() if k != ATTR}, default=str).encode())
    for name in sorted(node.keys()):
        _hash_node(node[name], h, whole)


def fingerprint(root: zarr.Group, attr_name: str, key: str | None) -> str:
    """A digest of a location: metadata plus every value of obs columns, sampled chunks of
    matrices (never all of ``X``)."""
    h = hashlib.sha1()
    if attr_name == "X":
        node = root["X"]
    elif attr_name == "var":
        var = root["var"]
        node = var[var.attrs.get("_index", "_index")]  # type: ignore[index]
    elif attr_name == "uns":
        from .elements import read_elem

        h.update(json.dumps(to_jsonable(_plain(read_elem(root["uns"][key]))), default=str).encode())  # type: ignore[index]
        return h.hexdigest()
    else:
        node = root[f"{attr_name}/{key}"]
    # Encodings depend on every value of an obs column: a relabelled cell in a chunk a sample
    # misses must still make the persisted codes stale. Obs columns are read whole by encoding
    # anyway; only matrices (whose values no persisted state depends on) are sampled.
    _hash_node(node, h, whole=attr_name == "obs")
    return h.hexdigest()


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.astype(object) if v.dtype.kind in "UT" or str(v.dtype).startswith("String") else v
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def output_exists(root: zarr.Group, attr_name: str, key: str) -> bool:
    """Whether ``attr_name/key`` is a member anndata reads (obs columns: in column-order)."""
    if f"{attr_name}/{key}" not in root:
        return False
    return attr_name != "obs" or key in root["obs"].attrs.get("column-order", [])


def output_token(root: zarr.Group, attr_name: str, key: str | None) -> str | None:
    path = f"{attr_name}/{key}"
    if path not in root:
        return None
    if attr_name == "obs" and key not in root["obs"].attrs.get("column-order", []):
        return None
    return root[path].attrs.get(TOKEN_ATTR)


def current_tokens(root: zarr.Group, locations: list[str]) -> dict[str, str | None]:
    """The ownership tokens the store holds now for ``"attr/key"`` locations.

    Read from the store itself (not a cached handle), so a column another process replaced
    since ``root`` was opened shows its new token.
    """
    now = zarr.open_group(store=root.store, path=root.path, mode="r", use_consolidated=False)
    out: dict[str, str | None] = {}
    for loc in locations:
        attr_name, _, key = loc.partition("/")
        try:
            out[loc] = output_token(now, attr_name, key)
        except (KeyError, FileNotFoundError):
            out[loc] = None
    return out


def field_tokens(root: zarr.Group, spec_id: str) -> dict[str, str]:
    """The output tokens a field's persisted record was written with."""
    rec = read_meta(root)["fields"].get(spec_id) or {}
    return dict(rec.get("outputs", {}))


def stamp_output(root: zarr.Group, attr_name: str, key: str | None) -> str:
    token = uuid.uuid4().hex
    root[f"{attr_name}/{key}"].attrs[TOKEN_ATTR] = token
    return token


# --- field records ---------------------------------------------------------------------------
def state_digest(state_json: Any) -> str:
    """The checksum of a record's (JSON-encoded) state."""
    text = json.dumps(state_json, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def load_state(
    root: zarr.Group,
    spec_id: str,
    inputs: list[tuple[str, str | None]],
    outputs: list[tuple[str, str | None]],
) -> dict | None:
    """The persisted state of a field if it is still valid for the store's current data.

    Raises :class:`~atlasloader.errors.StaleRegistryError` when the record was edited outside
    atlasloader (its checksum does not match): its codes cannot be trusted to follow it.
    """
    rec = read_meta(root)["fields"].get(spec_id)
    if rec is None:
        return None
    try:
        current = {f"{a}/{k}": fingerprint(root, a, k) for a, k in inputs}
    except KeyError:
        return None
    if current != rec.get("inputs"):
        return None
    for a, k in outputs:
        if output_token(root, a, k) != rec.get("outputs", {}).get(f"{a}/{k}"):
            return None
    digest = rec.get("sha256")
    if digest is not None and digest != state_digest(rec.get("state")):
        key = rec.get("registry_key", spec_id)
        msg = (
            f"the persisted registration of field {key!r} in the store's root attribute "
            f"{ATTR!r} was changed outside atlasloader (its checksum does not match), so the "
            f"codes it wrote may not follow its mapping. Restore the store's root zarr.json "
            f"from a backup, or remove the attribute {ATTR!r} from the root group "
            "(zarr.open_group(path, mode='r+').attrs.pop('atlasloader')) and register again"
        )
        raise StaleRegistryError(msg)
    return from_jsonable(rec["state"])


def field_record(
    root: zarr.Group,
    registry_key: str,
    state: dict,
    inputs: list[tuple[str, str | None]],
    outputs: list[tuple[str, str | None]],
) -> dict[str, Any]:
    """A field's record for :func:`save_records`, naming the tokens of its outputs.

    The record's ``outputs`` are the ownership tokens of the columns it wrote: the token the
    staged array was written with (:func:`atlasloader.store.write.stage_array`), or a fresh
    one stamped now for an output without one.
    """
    root = fresh(root)
    encoded = to_jsonable(state)
    return {
        "registry_key": registry_key,
        "state": encoded,
        "inputs": {f"{a}/{k}": fingerprint(root, a, k) for a, k in inputs},
        "outputs": {
            f"{a}/{k}": output_token(root, a, k) or stamp_output(root, a, k) for a, k in outputs
        },
        "sha256": state_digest(encoded),
    }


def save_records(root: zarr.Group, recs: dict[str, dict[str, Any]]) -> None:
    """Persist field records (spec id -> :func:`field_record`) in one metadata write."""
    if not recs:
        return
    root = fresh(root)  # never write back records read before another writer's
    meta = read_meta(root)
    meta["fields"].update(recs)
    write_meta(root, meta)


def begin_operation(root: zarr.Group, operation: str) -> Any:
    """Mark a registration as under way: ``pending`` stays until :func:`end_operation`.

    Returns the attribute as it was (``None`` when absent), for :func:`restore_meta` to put
    back if the registration is rolled back.
    """
    root = fresh(root)
    previous = root.attrs.get(ATTR)
    meta = read_meta(root)
    meta["pending"] = {
        "operation": operation,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_meta(root, meta)
    return previous


def pending_operation(root: zarr.Group) -> dict[str, Any] | None:
    """The registration under way (or killed part-way), if any, as ``root`` shows it."""
    found = read_meta(root).get("pending")
    return dict(found) if isinstance(found, dict) else None


def end_operation(root: zarr.Group) -> None:
    """Remove the ``pending`` mark: the registration committed."""
    root = fresh(root)
    meta = read_meta(root)
    if meta.pop("pending", None) is not None:
        write_meta(root, meta)


def restore_meta(root: zarr.Group, previous: Any) -> None:
    """Put the attribute back as :func:`begin_operation` found it (``None``: absent), after a
    rollback: the store's metadata then equals what it was before the registration."""
    root = fresh(root)
    if previous is not None:
        root.attrs[ATTR] = previous
    elif ATTR in root.attrs:
        del root.attrs[ATTR]


def save_state(
    root: zarr.Group,
    spec_id: str,
    registry_key: str,
    state: dict,
    inputs: list[tuple[str, str | None]],
    outputs: list[tuple[str, str | None]],
) -> dict[str, str]:
    """Persist one field's record; returns the ownership tokens stamped on its outputs."""
    rec = field_record(root, registry_key, state, inputs, outputs)
    save_records(root, {spec_id: rec})
    return dict(rec["outputs"])


def save_registry(root: zarr.Group, name: str, registry_json: dict[str, Any]) -> None:
    root = fresh(root)
    meta = read_meta(root)
    if meta["registries"].get(name) == registry_json:
        return  # unchanged: no write, so re-registering a store stays read-only
    meta["registries"][name] = registry_json
    write_meta(root, meta)


def load_registries(root: zarr.Group) -> dict[str, Any]:
    return dict(read_meta(root)["registries"])
