"""A catalogue of bad inputs, each checked through the Python API and the command line.

Every :class:`Case` builds a real input in a temporary folder (Zarr stores written by
:mod:`atlasloader.data` or anndata, then damaged by editing their files on disk), runs one
Python API call on it, and names what must happen: an :class:`~atlasloader.errors.AtlasLoaderError`
subclass whose message matches a pattern naming the key, column, chunk or file and saying what
to do, with nothing written (every file of the folder hashes the same before and after); or,
for inputs a scanpy/scvi-tools user rightly expects to work (unicode keys, Zarr v2), success.
The equivalent ``atlasloader`` command is run in-process on a fresh copy of the input: it
must exit with the case's code (3 for bad input) and print exactly one
``atlasloader: error: ...`` line on stderr, without a traceback.

Examples
--------
>>> from atlasloader.testing.badinputs import CASES, run_case
>>> outcome = run_case(CASES[0], tmp_dir)  # doctest: +SKIP
>>> outcome.problems  # doctest: +SKIP
[]
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import struct
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import errors as E

__all__ = ["CASES", "OPEN_DEFECTS", "Case", "Outcome", "run_case", "snapshot"]

N_CELLS, N_GENES = 300, 50
STORE = "in/atlas.zarr"  # nested: a key escaping the store lands inside the snapshotted folder
_ADVICE = re.compile(
    r"\b(re-?create|restore|convert|register|pass|use|run|choose|rename|remove|check|upgrade|"
    r"write|fix|give|call|drop|make|delete|add|expected|must|should|need|set|reduce|encode)",
    re.IGNORECASE,
)
_IGNORED = frozenset({".atlasloader-lock"})  # the advisory write lock (store/lock.py), no data


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes
    ----------
    name, group
        Identifier and topic (``chunks``, ``dtypes``, ``shape``, ...).
    build
        Writes the input under the given folder (the store at :data:`STORE` by convention).
    action
        The Python API call, given the folder.
    cli
        The equivalent ``atlasloader`` arguments, given the folder (``None``: no CLI form).
    error
        The expected error class, or ``None`` when the input must be accepted.
    match
        A regex the error message must match (searched), naming what is wrong.
    api
        The API call, as shown in the table.
    cli_exit
        The expected exit code (3 for bad input, 2 for argparse's usage errors, 0 success).
    warns
        For accepted inputs: a warning the call must give (message regex), or ``None``.
    note
        Why this outcome is the expected one (for inputs judged not to be errors).
    """

    name: str
    group: str
    build: Callable[[Path], None]
    action: Callable[[Path], Any]
    cli: Callable[[Path], list[str]] | None
    error: type[BaseException] | None
    match: str
    api: str
    cli_exit: int = 3
    warns: str | None = None
    note: str = ""


@dataclass
class Outcome:
    """What running a :class:`Case` gave."""

    case: Case
    error: BaseException | None = None
    message: str = ""
    changed: list[str] = field(default_factory=list)
    cli_exit: int | None = None
    cli_stderr: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def nothing_written(self) -> bool:
        return not self.changed


# --- building inputs --------------------------------------------------------------------------

_TEMPLATES: dict[str, Path] = {}
_TEMPLATE_DIR: list[str] = []


def _template(kind: str) -> Path:
    """A small store of one kind, written once per process and copied for each case."""
    if kind not in _TEMPLATES:
        from ..data import make_atlas_store

        if not _TEMPLATE_DIR:
            _TEMPLATE_DIR.append(tempfile.mkdtemp(prefix="atlasloader-badinputs-"))
        path = Path(_TEMPLATE_DIR[0]) / f"{kind}.zarr"
        small: dict[str, Any] = {"n_cells": N_CELLS, "n_genes": N_GENES, "nnz_per_cell": 10}
        small |= {"n_batches": 3}
        small |= {"n_labels": 4, "chunk_rows": 64, "block_rows": 128, "seed": 0}
        if kind == "sharded":
            make_atlas_store(path, shard_rows=128, **small)
        elif kind == "chunked":
            make_atlas_store(path, **small)
        elif kind == "dense":
            make_atlas_store(path, dense=True, **small)
        elif kind == "v2":
            make_atlas_store(path, zarr_format=2, **small)
        elif kind == "query":
            make_atlas_store(path, **(small | {"n_batches": 5, "seed": 1}))
        elif kind == "registered":
            make_atlas_store(path, **small)
            _setup(path, batch_key="batch", labels_key="labels")
        else:  # pragma: no cover - a typo in the catalogue
            raise KeyError(kind)
        _TEMPLATES[kind] = path
    return _TEMPLATES[kind]


def _copy(kind: str, dst: str = STORE) -> Callable[[Path], None]:
    def build(base: Path) -> None:
        target = base / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(_template(kind), target)

    return build


def _then(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(base: Path) -> None:
        for step in steps:
            step(base)

    return build


def _anndata_store(
    obs: dict[str, Any] | None = None,
    X: Any = None,
    n_obs: int = N_CELLS,
    n_vars: int = N_GENES,
    obs_names: Sequence[str] | None = None,
) -> Callable[[Path], None]:
    """A store written by anndata's ``write_zarr`` (for obs columns atlasloader.data lacks)."""

    def build(base: Path) -> None:
        import anndata as ad
        import pandas as pd
        import scipy.sparse as sp

        rng = np.random.default_rng(0)
        x = X
        if x is None:
            x = sp.random(n_obs, n_vars, density=0.2, format="csr", rng=rng, dtype=np.float32)
            x.data[:] = rng.integers(1, 10, x.data.size)
        frame = pd.DataFrame(
            {"batch": pd.Categorical(rng.choice(["a", "b"], n_obs))} | dict(obs or {}),
            index=list(obs_names) if obs_names is not None else [f"c{i}" for i in range(n_obs)],
        )
        adata = ad.AnnData(X=x, obs=frame, var=pd.DataFrame(index=[f"g{i}" for i in range(n_vars)]))
        path = base / STORE
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata.write_zarr(path)

    return build


def _file(rel: str, edit: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(base: Path) -> None:
        edit(base / STORE / rel)

    return build


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble(path: Path) -> None:
    """Overwrite the start of a chunk (its codec header; a shard's first inner chunk)."""
    data = bytearray(path.read_bytes())
    data[:16] = b"\xff" * 16
    path.write_bytes(bytes(data))


def _index_past_end(path: Path) -> None:
    """Point the first inner chunk of a shard (index at the end, crc32c) past the file."""
    import google_crc32c

    data = bytearray(path.read_bytes())
    n = 2  # inner chunks per shard of the "sharded" template
    index_len = 16 * n
    start = len(data) - index_len - 4
    index = bytearray(data[start : start + index_len])
    _, nbytes = struct.unpack_from("<QQ", index, 0)
    struct.pack_into("<QQ", index, 0, len(data) + 4096, nbytes)
    data[start : start + index_len] = index
    data[start + index_len :] = struct.pack("<I", google_crc32c.value(bytes(index)))
    path.write_bytes(bytes(data))


def _delete(rel: str) -> Callable[[Path], None]:
    def build(base: Path) -> None:
        target = base / STORE / rel
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()

    return build


def _zarr_edit(edit: Callable[[Any], None], consolidate: bool = True) -> Callable[[Path], None]:
    """Change a store through zarr (arrays rewritten), then consolidate as anndata does."""

    def build(base: Path) -> None:
        import zarr

        root = zarr.open_group(str(base / STORE), mode="r+", use_consolidated=False)
        edit(root)
        if consolidate:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                zarr.consolidate_metadata(root.store)

    return build


def _replace_array(rel: str, values: np.ndarray, attrs: dict[str, Any] | None = None) -> Any:
    def edit(root: Any) -> None:
        parent, _, name = rel.rpartition("/")
        group = root[parent] if parent else root
        old = dict(group[name].attrs)
        del group[name]
        arr = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape)
        arr[...] = values
        arr.attrs.update(attrs if attrs is not None else old)

    return edit


def _set_values(rel: str, fn: Callable[[np.ndarray], np.ndarray]) -> Any:
    def edit(root: Any) -> None:
        arr = root[rel]
        arr[...] = fn(np.asarray(arr[...]))

    return edit


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


# --- actions ----------------------------------------------------------------------------------


def _store(base: Path) -> str:
    return str(base / STORE)


def _setup(path: str | Path, **kwargs: Any) -> None:
    from ..model import SCVI
    from ..store.lazy import read_lazy

    SCVI.setup_anndata(read_lazy(path), **kwargs)


def _api_setup(**kwargs: Any) -> Callable[[Path], Any]:
    return lambda base: _setup(_store(base), **kwargs)


def _cli_setup(*args: str) -> Callable[[Path], list[str]]:
    return lambda base: ["setup", _store(base), *args]


def _api_preprocess(base: Path) -> Any:
    from ..preprocess import preprocess

    return preprocess(_store(base))


def _cli_preprocess(base: Path) -> list[str]:
    return ["preprocess", _store(base)]


def _manager(base: Path) -> Any:
    from ..model import SCVI
    from ..store.lazy import read_lazy

    adata = read_lazy(_store(base))
    SCVI.setup_anndata(adata, batch_key="batch", labels_key="labels")  # reuses what is persisted
    return SCVI(adata).adata_manager


def _api_loader(**kwargs: Any) -> Callable[[Path], Any]:
    def action(base: Path) -> Any:
        from ..loading import AnnDataLoader

        loader = AnnDataLoader(_manager(base), **kwargs)
        return next(iter(loader))

    return action


def _api_field(field_factory: Callable[[], Any]) -> Callable[[Path], Any]:
    def action(base: Path) -> Any:
        from ..store.lazy import read_lazy

        field_factory().register_field(read_lazy(_store(base)))

    return action


def _api_manager(fields: Callable[[], list[Any]]) -> Callable[[Path], Any]:
    def action(base: Path) -> Any:
        from ..manager import AnnDataManager
        from ..store.lazy import read_lazy

        AnnDataManager(fields=fields()).register_fields(read_lazy(_store(base)))

    return action


def _cat(registry_key: str, obs_key: str) -> Callable[[], Any]:
    def make() -> Any:
        from ..fields import CategoricalObsField

        return CategoricalObsField(registry_key=registry_key, obs_key=obs_key)

    return make


def _api_view(base: Path) -> Any:
    from ..registry.model import Registry
    from ..store import records
    from ..store.open import open_root

    regs = records.load_registries(open_root(_store(base), mode="r"))
    return [Registry.from_json_dict(r) for r in regs.values()]


def _api_transfer(extend: bool) -> Callable[[Path], Any]:
    def action(base: Path) -> Any:
        from ..store.lazy import read_lazy

        query = read_lazy(str(base / "in/query.zarr"))
        return _manager(base).transfer_fields(query, extend_categories=extend)

    return action


def _api_convert(base: Path) -> Any:
    from ..conversion.convert import convert

    return convert([str(base / "in/a.h5ad"), str(base / "in/b.h5ad")], str(base / "out.zarr"))


def _api_obs_names(base: Path) -> Any:
    from ..store.lazy import read_lazy

    return read_lazy(_store(base)).obs_names


def _api_convert_store(base: Path) -> Any:
    from ..conversion.convert import convert

    return convert(_store(base), str(base / "out.zarr"))


def _cli_convert_store(base: Path) -> list[str]:
    return ["convert", _store(base), str(base / "out.zarr")]


def _h5ads(base: Path) -> None:
    from ..data import make_atlas_h5ad

    (base / "in").mkdir(parents=True, exist_ok=True)
    small: dict[str, Any] = {"n_cells": 100, "nnz_per_cell": 5, "n_batches": 2, "n_labels": 2}
    small["chunk_rows"] = 32
    make_atlas_h5ad(base / "in/a.h5ad", n_genes=N_GENES, **small)
    make_atlas_h5ad(base / "in/b.h5ad", n_genes=N_GENES - 10, **small)


def _make_h5ad_as_zarr(base: Path) -> None:
    from ..data import make_atlas_h5ad

    (base / "in").mkdir(parents=True, exist_ok=True)
    make_atlas_h5ad(
        base / STORE, n_cells=100, n_genes=20, nnz_per_cell=5, n_batches=2, n_labels=2,
        chunk_rows=32,
    )  # fmt: skip


def _plain_dir(base: Path) -> None:
    (base / STORE).mkdir(parents=True)
    (base / STORE / "notes.txt").write_text("not a store\n")


def _not_anndata(base: Path) -> None:
    import zarr

    (base / "in").mkdir(parents=True, exist_ok=True)
    root = zarr.open_group(str(base / STORE), mode="w")
    root.create_array("values", shape=(4,), dtype="f4")


def _string_x(root: Any) -> None:
    del root["X"]
    arr = root.create_array("X", shape=(N_CELLS, N_GENES), dtype=str, chunks=(64, N_GENES))
    arr[...] = np.full((N_CELLS, N_GENES), "1", dtype=object)
    arr.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})


def _string_column(root: Any) -> None:
    import anndata as ad

    values = np.array([str(i % 7) for i in range(N_CELLS)], dtype=object)
    ad.io.write_elem(root["obs"], "age", values)
    order = list(root["obs"].attrs["column-order"])
    root["obs"].attrs["column-order"] = [*order, "age"]


def _short_column(root: Any) -> None:
    import anndata as ad

    ad.io.write_elem(root["obs"], "age", np.arange(N_CELLS - 1, dtype=np.float32))
    order = list(root["obs"].attrs["column-order"])
    root["obs"].attrs["column-order"] = [*order, "age"]


def _x_rows(n_rows: int) -> Any:
    def edit(root: Any) -> None:
        import anndata as ad
        import scipy.sparse as sp

        del root["X"]
        x = sp.random(n_rows, N_GENES, density=0.2, format="csr", rng=0, dtype=np.float32)
        x.data[:] = 1
        ad.io.write_elem(root, "X", x)

    return edit


def _short_indptr(root: Any) -> None:
    values = np.asarray(root["X/indptr"][...])[:-1]
    del root["X/indptr"]
    arr = root["X"].create_array("indptr", shape=values.shape, dtype=values.dtype, chunks=(64,))
    arr[...] = values


def _swap_indptr(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b[10], b[11] = a[11], a[10]
    b[11] = a[10] - 3 if a[10] >= 3 else b[11]
    return b


def _index_oob(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b[7] = N_GENES + 5
    return b


def _index_negative(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b[7] = -1
    return b


def _negative(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b[:50] = -1
    return b


def _fractional(a: np.ndarray) -> np.ndarray:
    return a + 0.5


def _nan_codes(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b[5] = -1  # anndata's missing-value code
    return b


def _many_categories(root: Any) -> None:
    import anndata as ad
    import pandas as pd

    cats = [f"donor{i}" for i in range(100_001)]
    codes = np.arange(N_CELLS) % len(cats)
    ad.io.write_elem(root["obs"], "donor", pd.Categorical.from_codes(codes, categories=cats))
    order = list(root["obs"].attrs["column-order"])
    root["obs"].attrs["column-order"] = [*order, "donor"]


def _unicode_column(root: Any) -> None:
    import anndata as ad

    ad.io.write_elem(root["obs"], "lot_Ä", ad.io.read_elem(root["obs/batch"]))
    order = list(root["obs"].attrs["column-order"])
    root["obs"].attrs["column-order"] = [*order, "lot_Ä"]


def _user_scvi_column(root: Any) -> None:
    import anndata as ad

    ad.io.write_elem(root["obs"], "_scvi_batch", np.zeros(N_CELLS, dtype=np.int8))
    order = list(root["obs"].attrs["column-order"])
    root["obs"].attrs["column-order"] = [*order, "_scvi_batch"]


def _column_after_consolidation(root: Any) -> None:
    import anndata as ad

    ad.io.write_elem(root["obs"], "donor", ad.io.read_elem(root["obs/labels"]))
    order = list(root["obs"].attrs["column-order"])
    root["obs"].attrs["column-order"] = [*order, "donor"]


def _empty_categories(root: Any) -> None:
    import anndata as ad
    import pandas as pd

    codes = np.asarray(root["obs/batch/codes"][...])
    ad.io.write_elem(root["obs"], "batch", pd.Categorical.from_codes(codes, ["", "b1", "b2"]))


def _missing_categories(root: Any) -> None:
    import anndata as ad
    import pandas as pd

    values = pd.Series(["x", None, "y"] * (N_CELLS // 3), dtype=object)
    ad.io.write_elem(root["obs"], "batch", pd.Categorical(values))


def _mixed_categories(root: Any) -> None:
    import anndata as ad

    del root["obs/batch/categories"]
    cats = np.array(["1", "1.0", " 1"], dtype=object)  # look alike when mixed types collide
    ad.io.write_elem(root["obs/batch"], "categories", cats)


def _int_categories(root: Any) -> None:
    import anndata as ad
    import pandas as pd

    codes = np.asarray(root["obs/batch/codes"][...])
    ad.io.write_elem(root["obs"], "batch", pd.Categorical.from_codes(codes, [10, 20, 30]))


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


# --- the catalogue ----------------------------------------------------------------------------

_SETUP = "SCVI.setup_anndata(read_lazy(store), batch_key='batch')"
_PRE = "preprocess(store)"
_CORRUPT = r"(chunk|shard|c/\d)"

CASES: list[Case] = [
    # --- chunk and shard files of X and of obs columns --------------------------------------
    Case("x_data_shard_truncated", "chunks",
         _then(_copy("sharded"), _file("X/data/c/1", _truncate)),
         _api_preprocess, _cli_preprocess, E.CorruptChunkError, r"X/data.*" + _CORRUPT, _PRE),
    Case("x_data_shard_corrupted", "chunks", _then(_copy("sharded"), _file("X/data/c/0", _garble)),
         _api_preprocess, _cli_preprocess, E.CorruptChunkError, r"X/data.*" + _CORRUPT, _PRE),
    Case("x_indices_chunk_truncated", "chunks",
         _then(_copy("chunked"), _file("X/indices/c/1", _truncate)),
         _api_preprocess, _cli_preprocess, E.CorruptChunkError, r"X/indices.*" + _CORRUPT, _PRE),
    Case("x_indices_chunk_corrupted", "chunks",
         _then(_copy("chunked"), _file("X/indices/c/2", _garble)),
         _api_preprocess, _cli_preprocess, E.CorruptChunkError, r"X/indices.*" + _CORRUPT, _PRE),
    Case("x_indptr_chunk_corrupted", "chunks",
         _then(_copy("chunked"), _file("X/indptr/c/0", _garble)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.CorruptChunkError,
         r"X/indptr", _SETUP),
    Case("x_dense_chunk_truncated", "chunks", _then(_copy("dense"), _file("X/c/1/0", _truncate)),
         _api_preprocess, _cli_preprocess, E.CorruptChunkError, r"\bX\b.*" + _CORRUPT, _PRE),
    Case("x_shard_index_past_file", "chunks",
         _then(_copy("sharded"), _file("X/data/c/1", _index_past_end)),
         _api_preprocess, _cli_preprocess, E.CorruptChunkError, r"X/data.*" + _CORRUPT, _PRE),
    Case("x_indptr_chunk_missing", "chunks", _then(_copy("chunked"), _delete("X/indptr/c/0")),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.InvalidDataError,
         r"indptr", _SETUP),
    Case("x_indices_shard_missing", "chunks", _then(_copy("sharded"), _delete("X/indices/c/1")),
         _api_preprocess, _cli_preprocess, None, "", _PRE, cli_exit=0,
         note="a missing chunk reads as the fill value (column 0) by the Zarr spec; Zarr itself "
              "omits chunks that hold only it, so atlasloader validate does not report it "
              "either (a gap: detecting it needs a per-row sortedness check of indices)"),
    Case("x_data_shard_missing", "chunks", _then(_copy("sharded"), _delete("X/data/c/1")),
         _api_preprocess, _cli_preprocess, None, "", _PRE, cli_exit=0,
         note="a missing chunk is the fill value (0) by the Zarr spec, which omits all-zero "
              "chunks; anndata.read_zarr reads the same zeros"),
    Case("obs_codes_chunk_truncated", "chunks",
         _then(_copy("chunked"), _file("obs/batch/codes/c/0", _truncate)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.CorruptChunkError,
         r"obs/batch/codes", _SETUP),
    Case("obs_codes_chunk_corrupted", "chunks",
         _then(_copy("chunked"), _file("obs/labels/codes/c/0", _garble)),
         _api_setup(labels_key="labels"), _cli_setup("--labels-key", "labels"),
         E.CorruptChunkError, r"obs/labels/codes",
         "SCVI.setup_anndata(store, labels_key='labels')"),
    Case("obs_categories_chunk_corrupted", "chunks",
         _then(_copy("chunked"), _file("obs/batch/categories/c/0", _garble)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.CorruptChunkError,
         r"obs/batch/categories", _SETUP),
    Case("obs_numeric_chunk_truncated", "chunks",
         _then(_copy("chunked"), _file("obs/n_counts/c/0", _truncate)),
         _api_setup(continuous_covariate_keys=["n_counts"]),
         _cli_setup("--continuous-covariate-keys", "n_counts"), E.CorruptChunkError,
         r"obs/n_counts", "SCVI.setup_anndata(store, continuous_covariate_keys=['n_counts'])"),
    Case("obs_index_chunk_corrupted", "chunks",
         _then(_copy("chunked"), _file("obs/_index/c/0", _garble)),
         _api_obs_names, None, E.CorruptChunkError, r"obs/_index", "read_lazy(store).obs_names"),
    Case("obs_codes_chunk_missing", "chunks",
         _then(_copy("chunked"), _delete("obs/batch/codes/c/0")),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0,
         note="Zarr does not write a chunk holding only the fill value (codes 0), so a missing "
              "codes chunk is the first category by the Zarr spec, as anndata.read_zarr reads it"),
    Case("obs_categories_chunk_missing", "chunks",
         _then(_copy("chunked"), _delete("obs/batch/categories/c/0")),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.InvalidDataError,
         r"batch.*(categor|empty)", _SETUP),
    # --- dtypes --------------------------------------------------------------------------------
    Case("x_string_dtype", "dtypes", _then(_copy("chunked"), _zarr_edit(_string_x)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.InvalidTypeError,
         r"adata\.X.*(str|dtype)", _SETUP),
    Case("string_column_as_continuous", "dtypes",
         _then(_copy("chunked"), _zarr_edit(_string_column)),
         _api_setup(continuous_covariate_keys=["age"]),
         _cli_setup("--continuous-covariate-keys", "age"), E.InvalidDataError, r"age.*numbers",
         "SCVI.setup_anndata(store, continuous_covariate_keys=['age'])"),
    Case("categorical_as_size_factor", "dtypes", _copy("chunked"),
         _api_setup(size_factor_key="batch"), _cli_setup("--size-factor-key", "batch"),
         E.InvalidDataError, r"batch.*numbers",
         "SCVI.setup_anndata(store, size_factor_key='batch')"),
    # --- shapes --------------------------------------------------------------------------------
    Case("zero_cells", "shape", _anndata_store(n_obs=0), _api_setup(),
         _cli_setup(), E.InvalidDataError, r"(0 cells|no cells|zero cells|n_obs)",
         "SCVI.setup_anndata(store)"),
    Case("zero_genes", "shape", _anndata_store(n_vars=0), _api_setup(),
         _cli_setup(), E.InvalidDataError, r"(0 genes|no genes|zero genes|n_vars)",
         "SCVI.setup_anndata(store)"),
    Case("duplicate_obs_names", "shape", _anndata_store(obs_names=["c"] * N_CELLS),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0,
         note="anndata and scvi-tools accept duplicate obs names (anndata warns when it reads "
              "them in memory); nothing atlasloader does relies on unique cell names"),
    Case("obs_fewer_than_x_rows", "shape",
         _then(_copy("chunked"), _zarr_edit(_x_rows(N_CELLS + 10))),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.ShapeMismatchError,
         r"X.*310.*300|300.*310", _SETUP),
    Case("obs_column_short", "shape", _then(_copy("chunked"), _zarr_edit(_short_column)),
         _api_setup(continuous_covariate_keys=["age"]),
         _cli_setup("--continuous-covariate-keys", "age"), E.ShapeMismatchError, r"age.*299",
         "SCVI.setup_anndata(store, continuous_covariate_keys=['age'])"),
    Case("indptr_not_monotonic", "shape",
         _then(_copy("chunked"), _zarr_edit(_set_values("X/indptr", _swap_indptr))),
         _api_preprocess, _cli_preprocess, E.InvalidDataError, r"X.*indptr decreases at row 10",
         _PRE),
    Case("indptr_short", "shape", _then(_copy("chunked"), _zarr_edit(_short_indptr)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.InvalidDataError,
         r"indptr.*300", _SETUP),
    Case("indices_out_of_range", "shape",
         _then(_copy("chunked"), _zarr_edit(_set_values("X/indices", _index_oob))),
         _api_preprocess, _cli_preprocess, E.InvalidDataError,
         r"X.*column index 55.*out of range.*50 genes", _PRE),
    Case("indices_negative", "shape",
         _then(_copy("chunked"), _zarr_edit(_set_values("X/indices", _index_negative))),
         _api_preprocess, _cli_preprocess, E.InvalidDataError,
         r"X.*column index -1.*out of range.*50 genes", _PRE),
    Case("negative_counts", "counts",
         _then(_copy("chunked"), _zarr_edit(_set_values("X/data", _negative))),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0, warns=r"adata\.X does not contain unnormalized count data",
         note="scvi-tools warns (UserWarning) and registers: is_count_data is a check, not a "
              "refusal; the CLI prints it as one 'atlasloader: warning:' line"),
    Case("fractional_counts", "counts",
         _then(_copy("chunked"), _zarr_edit(_set_values("X/data", _fractional))),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0, warns=r"adata\.X does not contain unnormalized count data",
         note="as negative counts: scvi-tools' UserWarning, registration goes on"),
    # --- categories ----------------------------------------------------------------------------
    Case("nan_category", "categories",
         _then(_copy("chunked"), _zarr_edit(_set_values("obs/batch/codes", _nan_codes))),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.InvalidDataError,
         r"batch.*(NaN|missing)", _SETUP),
    Case("none_category", "categories", _then(_copy("chunked"), _zarr_edit(_missing_categories)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.InvalidDataError,
         r"batch.*(NaN|missing)", _SETUP),
    Case("empty_string_category", "categories",
         _then(_copy("chunked"), _zarr_edit(_empty_categories)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0,
         note="'' is a category like any other for pandas, anndata and scvi-tools; refusing it "
              "would break stores scvi-tools registers"),
    Case("mixed_type_categories", "categories",
         _then(_copy("chunked"), _zarr_edit(_mixed_categories)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0,
         note="stored categories are strings: '1', '1.0' and ' 1' are distinct labels "
              "(anndata cannot store a categorical mixing types)"),
    Case("integer_categories", "categories", _then(_copy("chunked"), _zarr_edit(_int_categories)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0, note="integer categories are valid in pandas and scvi-tools"),
    Case("too_many_categories", "categories", _then(_copy("chunked"), _zarr_edit(_many_categories)),
         _api_setup(batch_key="donor"), _cli_setup("--batch-key", "donor"), None, "",
         "SCVI.setup_anndata(store, batch_key='donor')", cli_exit=0,
         warns=r"adata\.obs\['donor'\] has fewer than 3 cells",
         note="scvi-tools registers any number of categories; the 100,001-entry mapping is "
              "computed with dask and persisted as JSON in seconds, with scvi-tools' warning "
              "about categories of fewer than 3 cells"),
    # --- keys ----------------------------------------------------------------------------------
    Case("unicode_obs_key", "keys", _then(_copy("chunked"), _zarr_edit(_unicode_column)),
         _api_setup(batch_key="lot_Ä"), _cli_setup("--batch-key", "lot_Ä"), None, "",
         "SCVI.setup_anndata(store, batch_key='lot_Ä')", cli_exit=0,
         note="non-ASCII column names are ordinary in anndata: they must work"),
    Case("unicode_registry_key", "keys", _copy("chunked"),
         _api_manager(lambda: [_cat("lot_ü", "batch")()]), None, None, "",
         "AnnDataManager([CategoricalObsField('lot_ü', 'batch')]).register_fields(store)",
         cli_exit=0, note="a unicode registry key writes obs/_scvi_lot_ü: it must work"),
    Case("obs_key_with_slash", "keys", _copy("chunked"),
         _api_setup(batch_key="batch/codes"), _cli_setup("--batch-key", "batch/codes"),
         E.MissingKeyError, r"batch/codes", "SCVI.setup_anndata(store, batch_key='batch/codes')"),
    Case("obs_key_dotdot", "keys", _copy("chunked"),
         _api_setup(batch_key="../obs/batch"), _cli_setup("--batch-key", "../obs/batch"),
         E.MissingKeyError, r"\.\./obs/batch",
         "SCVI.setup_anndata(store, batch_key='../obs/batch')"),
    Case("layer_key_dotdot", "keys", _copy("chunked"),
         _api_setup(layer="../X"), _cli_setup("--layer", "../X"), E.MissingKeyError, r"\.\./X",
         "SCVI.setup_anndata(store, layer='../X')"),
    Case("registry_key_escapes_store", "keys", _copy("chunked"),
         _api_field(_cat("/../../../escaped", "batch")), None, E.InvalidArgumentError,
         r"escaped",
         "CategoricalObsField('/../../../escaped', 'batch').register_field(store)"),
    Case("registry_key_with_slash", "keys", _copy("chunked"),
         _api_field(_cat("a/b", "batch")), None, E.InvalidArgumentError, r"a/b",
         "CategoricalObsField('a/b', 'batch').register_field(store)"),
    Case("registry_key_collision", "keys", _copy("chunked"),
         _api_manager(lambda: [_cat("batch", "batch")(), _cat("batch", "labels")()]), None,
         E.InvalidArgumentError, r"batch",
         "AnnDataManager([Cat('batch','batch'), Cat('batch','labels')]).register_fields"),
    Case("user_column_named_scvi", "keys", _then(_copy("chunked"), _zarr_edit(_user_scvi_column)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.ColumnExistsError,
         r"_scvi_batch", _SETUP),
    Case("missing_obs_key", "keys", _copy("chunked"),
         _api_setup(batch_key="donor"), _cli_setup("--batch-key", "donor"), E.MissingKeyError,
         r"donor.*batch", "SCVI.setup_anndata(store, batch_key='donor')"),
    Case("missing_x", "keys",
         _then(_copy("chunked"), _zarr_edit(lambda root: root.__delitem__("X"))),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.MissingKeyError,
         r"\bX\b", _SETUP),
    # --- stores --------------------------------------------------------------------------------
    Case("zarr_v2_store", "stores", _copy("v2"), _api_setup(batch_key="batch"),
         _cli_setup("--batch-key", "batch"), None, "", _SETUP, cli_exit=0,
         note="anndata writes Zarr v2 by default: such stores must register"),
    Case("stale_consolidated_metadata", "stores",
         _then(_copy("chunked"), _zarr_edit(_column_after_consolidation, consolidate=False)),
         _api_setup(batch_key="donor"), _cli_setup("--batch-key", "donor"), None, "",
         "SCVI.setup_anndata(store, batch_key='donor')", cli_exit=0,
         note="a column written after consolidation is read from the actual metadata"),
    Case("path_missing", "stores", lambda base: None, _api_setup(), _cli_setup(), E.StoreError,
         r"atlas\.zarr.*does not exist", "read_lazy(store)"),
    Case("path_not_a_store", "stores", _plain_dir, _api_setup(), _cli_setup(),
         E.NotAnnDataStoreError, r"atlas\.zarr", "read_lazy(store)"),
    Case("zarr_group_not_anndata", "stores", _not_anndata, _api_setup(), _cli_setup(),
         E.NotAnnDataStoreError, r"atlas\.zarr.*not an AnnData", "read_lazy(store)"),
    Case("h5ad_named_zarr", "stores", _make_h5ad_as_zarr, _api_setup(), _cli_setup(),
         E.NotAnnDataStoreError, r"atlas\.zarr.*(HDF5|h5ad).*convert", "read_lazy(store)"),
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
    # --- loader arguments ----------------------------------------------------------------------
    Case("loader_batch_size_zero", "arguments", _copy("registered"), _api_loader(batch_size=0),
         lambda base: ["bench", _store(base), "--batch-size", "0"], E.InvalidArgumentError,
         r"batch_size.*0", "AnnDataLoader(manager, batch_size=0)", cli_exit=2),
    Case("loader_rows_per_read_negative", "arguments", _copy("registered"),
         _api_loader(rows_per_read=-1), None, E.InvalidArgumentError, r"rows_per_read.*-1",
         "AnnDataLoader(manager, rows_per_read=-1)"),
    Case("loader_prefetch_negative", "arguments", _copy("registered"), _api_loader(prefetch=-1),
         None, E.InvalidArgumentError, r"prefetch.*-1", "AnnDataLoader(manager, prefetch=-1)"),
    Case("loader_indices_out_of_range", "arguments", _copy("registered"),
         _api_loader(indices=[0, N_CELLS + 7]), None, E.InvalidArgumentError, r"307",
         "AnnDataLoader(manager, indices=[0, 307])"),
    # --- transfer and convert ------------------------------------------------------------------
    Case("transfer_new_categories", "transfer",
         _then(_copy("registered"), _copy("query", "in/query.zarr")), _api_transfer(False),
         lambda base: ["transfer", str(base / "in/query.zarr"), "--reference", _store(base)],
         E.CategoryTransferError, r"batch.*(3|4)",
         "manager.transfer_fields(query, extend_categories=False)"),
    Case("convert_other_genes", "convert", _h5ads, _api_convert,
         lambda base: ["convert", str(base / "in/a.h5ad"), str(base / "in/b.h5ad"),
                       str(base / "out.zarr")],
         E.InvalidDataError, r"genes.*b\.h5ad.*a\.h5ad", "convert([a.h5ad, b.h5ad], out.zarr)"),
]  # fmt: skip


# Cases whose outcome is known to be wrong, with the reason (the test expects them to fail and
# says when one starts passing). Empty: every case holds.
OPEN_DEFECTS: dict[str, str] = {}

# --- running ----------------------------------------------------------------------------------


def snapshot(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Every file under ``folder`` (relative path) mapped to the sha256 of its bytes."""
    out: dict[str, str] = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if name in _IGNORED:
                continue
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, folder)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def _changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    keys = sorted(set(before) | set(after))
    return [k for k in keys if before.get(k) != after.get(k)]


def run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """``atlasloader ARGV`` in-process: ``(exit code, stdout, stderr)``."""
    from ..cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 2
    return int(code), out.getvalue(), err.getvalue()


def run_case(case: Case, tmp: str | os.PathLike[str]) -> Outcome:
    """Build the case's input under ``tmp``, run the API call and the command, check both."""
    base = Path(tmp) / "api"
    base.mkdir(parents=True)
    case.build(base)
    cli_base = Path(tmp) / "cli"
    shutil.copytree(base, cli_base)
    outcome = Outcome(case)
    before = snapshot(base)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            case.action(base)
        except Exception as e:
            outcome.error = e
            outcome.message = str(e)
    outcome.changed = _changed(before, snapshot(base))
    p = outcome.problems
    if case.error is None:
        if outcome.error is not None:
            p.append(f"must succeed, raised {type(outcome.error).__name__}: {outcome.message}")
        if case.warns is not None and not any(
            re.search(case.warns, str(w.message)) for w in caught
        ):
            p.append(f"no warning matching {case.warns!r}")
    else:
        if outcome.error is None:
            p.append(f"no error: expected {case.error.__name__}")
        elif not isinstance(outcome.error, case.error):
            p.append(
                f"raised {type(outcome.error).__module__}.{type(outcome.error).__name__}"
                f" ({outcome.message[:300]}), expected {case.error.__name__}"
            )
        else:
            if not re.search(case.match, outcome.message, re.DOTALL):
                p.append(f"message {outcome.message!r} does not match {case.match!r}")
            if not _ADVICE.search(outcome.message):
                p.append(f"message {outcome.message!r} does not say what to do")
        if outcome.changed:
            p.append(f"wrote {outcome.changed[:5]}")
    if case.cli is not None:
        before = snapshot(cli_base)
        code, _, err = run_cli(case.cli(cli_base))
        outcome.cli_exit, outcome.cli_stderr = code, err
        lines = [line for line in err.splitlines() if line.strip()]
        if code != case.cli_exit:
            p.append(f"CLI exit {code}, expected {case.cli_exit}: {err[-500:]!r}")
        if "Traceback" in err:
            p.append("CLI printed a traceback")
        if case.cli_exit == 3:
            if len(lines) != 1 or not lines[0].startswith("atlasloader: error: "):
                p.append(f"CLI stderr is not one 'atlasloader: error:' line: {err[-500:]!r}")
            elif case.error is not None and not re.search(case.match, lines[0]):
                p.append(f"CLI message {lines[0]!r} does not match {case.match!r}")
        if case.error is not None:
            changed = _changed(before, snapshot(cli_base))
            if changed:
                p.append(f"CLI wrote {changed[:5]}")
    return outcome
