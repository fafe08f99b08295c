"""Registrations persisted inside a store: format, reuse, staleness, read-only, crashes, bad stores.

Everything runs on real Zarr stores in ``tmp_path`` (format 2 and 3); nothing is mocked. Crashes
are real: a child process registers and dies with ``os._exit`` at a chosen point of the write.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr

from atlasloader import AnnDataManager, LazyAnnData, read_lazy
from atlasloader.errors import (
    ColumnExistsError,
    CorruptChunkError,
    InvalidDataError,
    NotAnnDataStoreError,
    ReadOnlyStoreError,
    StoreError,
)
from atlasloader.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
)
from atlasloader.registry.model import Registry
from atlasloader.store.elements import write_elem
from atlasloader.store.records import TOKEN_ATTR
from atlasloader.store.write import (
    RESERVE_NAME,
    RESERVE_SLACK,
    STAGING,
    reserve_rollback_space,
)

FMT = {"zarr2": 2, "zarr3": 3}

pytestmark = pytest.mark.filterwarnings(
    # the tests edit stores with anndata/zarr directly, as a user would
    "ignore:zarr v3 autosharding:UserWarning",
    "ignore:Consolidated metadata:UserWarning",
)


def fields() -> list[Any]:
    return [
        LayerField("X", None, is_count_data=True),
        CategoricalObsField("batch", "batch"),
        CategoricalObsField("labels", "labels"),
        CategoricalJointObsField("extra_categorical_covs", ["batch", "labels"]),
        NumericalJointObsField("extra_continuous_covs", ["n_genes"]),
    ]


def prepared(adata: ad.AnnData) -> ad.AnnData:
    adata = adata.copy()
    adata.obs["n_genes"] = np.asarray((np.asarray(adata.X) > 0).sum(1)).ravel()
    return adata


def register(adata: Any) -> AnnDataManager:
    manager = AnnDataManager(fields=fields())
    manager.register_fields(adata)
    return manager


@pytest.fixture
def store(seed_adata: ad.AnnData, store_kind: str, to_backing: Callable[..., Any]) -> LazyAnnData:
    return to_backing(prepared(seed_adata), store_kind)


def raw_group(path: str | Path) -> zarr.Group:
    """The store as it is on disk (no consolidated metadata)."""
    return zarr.open_group(str(path), mode="r", use_consolidated=False)


def token(path: str | Path, node: str) -> str | None:
    return raw_group(path)[node].attrs.get(TOKEN_ATTR)


def mtimes(path: str | Path) -> dict[str, int]:
    root = Path(path)
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def normalise(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ("ndarray", [normalise(v) for v in value.tolist()])
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v) for v in value]
    return value


def codes(path: str | Path, key: str) -> np.ndarray:
    # Not through consolidated metadata: tests overwrite columns with anndata's write_elem.
    obs = zarr.open_group(str(path), mode="r", use_consolidated=False)["obs"]
    return np.asarray(ad.io.read_elem(obs[key]))


# --- the persisted format ------------------------------------------------------------------------
def test_persisted_format_round_trip(store: LazyAnnData) -> None:
    manager = register(store)
    meta = raw_group(store.path).attrs["atlasloader"]
    assert meta["encoding-type"] == "atlasloader-store"
    assert meta["encoding-version"] == "0.1.0"
    assert meta["uuid"] == manager.adata_uuid
    assert json.loads(json.dumps(meta)) == meta  # plain JSON: no pickle anywhere
    records = meta["fields"]
    assert sorted(r["registry_key"] for r in records.values()) == sorted(
        f.registry_key for f in fields()
    )
    batch = next(r for r in records.values() if r["registry_key"] == "batch")
    assert batch["inputs"].keys() == {"obs/batch"}
    assert batch["outputs"] == {"obs/_scvi_batch": token(store.path, "obs/_scvi_batch")}
    assert batch["state"]["categorical_mapping"] == {
        "__ndarray__": ["batch_0", "batch_1"],
        "dtype": "object",
    }
    saved = Registry.from_json_dict(meta["registries"]["AnnDataManager"])
    assert normalise(saved.to_dict()) == normalise(manager.registry)
    assert saved.to_dict()["_scvi_uuid"] == manager.adata_uuid
    encoded = raw_group(store.path)["obs/_scvi_batch"]
    if encoded.metadata.zarr_format == 3:  # on local disk read in place by the loader
        assert encoded.compressors == ()


def test_no_pickle_in_store(store: LazyAnnData) -> None:
    register(store)
    for p in Path(store.path).rglob("*"):
        if p.is_file():
            assert b"\x80\x04\x95" not in p.read_bytes()[:16], p  # pickle protocol 4 header


def test_anndata_still_reads_registered_store(store: LazyAnnData, seed_adata: ad.AnnData) -> None:
    register(store)
    adata = ad.read_zarr(store.path)
    assert adata.shape == (400, 100)
    assert list(adata.obs.columns) == ["batch", "labels", "n_genes", "_scvi_batch", "_scvi_labels"]
    assert sorted(adata.obsm) == [
        "_scvi_extra_categorical_covs",
        "_scvi_extra_continuous_covs",
        "protein_expression",
    ]
    np.testing.assert_array_equal(adata.obs["_scvi_labels"], seed_adata.obs["labels"].cat.codes)
    np.testing.assert_array_equal(np.asarray(adata.X), seed_adata.X)
    group = raw_group(store.path)
    assert not [k for k in [*group.keys(), *group["obs"].keys()] if "staging" in k]
    # anndata wrote consolidated metadata; it is still there, and up to date
    consolidated = zarr.open_consolidated(store.path, mode="r")
    assert "_scvi_batch" in consolidated["obs"].attrs["column-order"]
    assert "_scvi_extra_continuous_covs" in consolidated["obsm"]
    assert consolidated.attrs["atlasloader"] == raw_group(store.path).attrs["atlasloader"]
    lazy = read_lazy(store.path, mode="r")
    assert "_scvi_batch" in lazy.obs.columns


def test_wrong_versions_rejected(store: LazyAnnData) -> None:
    manager = register(store)
    d = manager.typed_registry.to_json_dict()
    with pytest.raises(ValueError, match=r"encoding-version '9\.9'") as info:
        Registry.from_json_dict({**d, "encoding-version": "9.9"})
    assert isinstance(info.value, InvalidDataError)
    assert "upgrade atlasloader" in str(info.value)
    with pytest.raises(InvalidDataError, match="not an atlasloader registry"):
        Registry.from_json_dict({**d, "encoding-type": "pickle"})
    group = zarr.open_group(store.path, mode="r+", use_consolidated=False)
    meta = dict(group.attrs["atlasloader"])
    group.attrs["atlasloader"] = {**meta, "encoding-version": "9.9"}
    with pytest.raises(InvalidDataError, match=r"9\.9"):
        register(read_lazy(store.path))


# --- reuse ---------------------------------------------------------------------------------------
def test_reregistration_reuses_persisted_state(store: LazyAnnData) -> None:
    first = register(store)
    tokens = {k: token(store.path, k) for k in ("obs/_scvi_batch", "obs/_scvi_labels")}
    before = mtimes(store.path)
    time.sleep(0.01)
    second = register(read_lazy(store.path))
    assert {k: token(store.path, k) for k in tokens} == tokens
    assert mtimes(store.path) == before  # nothing at all was rewritten
    assert normalise(second.registry) == normalise(first.registry)
    assert second.adata_uuid == first.adata_uuid


def test_reuse_after_reopen_read_only(store: LazyAnnData) -> None:
    first = register(store)
    before = mtimes(store.path)
    ro = read_lazy(store.path, mode="r")
    assert not ro.writable
    second = register(ro)
    assert normalise(second.registry) == normalise(first.registry)
    assert mtimes(store.path) == before


def test_other_configuration_is_not_reused(store: LazyAnnData) -> None:
    register(store)
    manager = AnnDataManager(fields=[CategoricalObsField("batch", "labels")])
    manager.register_fields(read_lazy(store.path))
    assert list(manager.get_state_registry("batch").categorical_mapping) == [
        "label_0",
        "label_1",
        "label_2",
    ]
    np.testing.assert_array_equal(
        codes(store.path, "_scvi_batch"), ad.read_zarr(store.path).obs["labels"].cat.codes
    )


# --- staleness -----------------------------------------------------------------------------------
def test_changed_source_column_is_recomputed(store: LazyAnnData) -> None:
    register(store)
    old = token(store.path, "obs/_scvi_batch")
    swapped = pd.Categorical(
        np.repeat(["batch_1", "batch_0"], 200), categories=["batch_0", "batch_1"]
    )
    group = zarr.open_group(store.path, mode="r+", use_consolidated=False)
    write_elem(group["obs"], "batch", swapped)

    manager = register(read_lazy(store.path))
    assert token(store.path, "obs/_scvi_batch") != old
    np.testing.assert_array_equal(codes(store.path, "_scvi_batch"), np.repeat([1, 0], 200))
    joint = np.asarray(ad.read_zarr(store.path).obsm["_scvi_extra_categorical_covs"])
    np.testing.assert_array_equal(joint[:, 0], np.repeat([1, 0], 200))
    assert list(manager.get_state_registry("batch").categorical_mapping) == ["batch_0", "batch_1"]


def test_new_category_in_source_is_recomputed(store: LazyAnnData) -> None:
    register(store)
    values = pd.Categorical(np.repeat(["batch_0", "batch_1", "batch_9"], [100, 200, 100]))
    group = zarr.open_group(store.path, mode="r+", use_consolidated=False)
    write_elem(group["obs"], "batch", values)
    manager = register(read_lazy(store.path))
    assert manager.summary_stats.n_batch == 3
    np.testing.assert_array_equal(codes(store.path, "_scvi_batch"), values.codes)


def test_changed_shape_is_recomputed(store: LazyAnnData, seed_adata: ad.AnnData) -> None:
    register(store)
    group = zarr.open_group(store.path, mode="r+", use_consolidated=False)
    write_elem(group, "X", np.asarray(seed_adata.X)[:, :60])
    write_elem(group, "var", seed_adata.var.iloc[:60])
    manager = register(read_lazy(store.path))
    assert manager.summary_stats.n_vars == 60
    assert len(manager.get_state_registry("X").column_names) == 60


def test_deleted_encoded_column_is_recomputed(store: LazyAnnData) -> None:
    register(store)
    group = zarr.open_group(store.path, mode="r+", use_consolidated=False)
    del group["obs/_scvi_batch"]
    order = [c for c in group["obs"].attrs["column-order"] if c != "_scvi_batch"]
    group["obs"].attrs["column-order"] = order
    zarr.consolidate_metadata(group.store)
    assert "_scvi_batch" not in ad.read_zarr(store.path).obs

    register(read_lazy(store.path))
    np.testing.assert_array_equal(codes(store.path, "_scvi_batch"), np.repeat([0, 1], 200))


def test_overwritten_encoded_column_is_refused_then_recomputed(
    store: LazyAnnData,
) -> None:
    register(store)
    group = zarr.open_group(store.path, mode="r+", use_consolidated=False)
    write_elem(group["obs"], "_scvi_batch", np.full(400, 7, dtype=np.int8))  # no token
    # Someone else's values now: never replaced, and the error says what to do.
    with pytest.raises(ColumnExistsError, match=r"rename or delete obs/_scvi_batch"):
        register(read_lazy(store.path))
    np.testing.assert_array_equal(codes(store.path, "_scvi_batch"), np.full(400, 7))
    del group["obs"]["_scvi_batch"]  # as the message says; then it is encoded again
    order = [c for c in group["obs"].attrs["column-order"] if c != "_scvi_batch"]
    group["obs"].attrs["column-order"] = order
    register(read_lazy(store.path))
    np.testing.assert_array_equal(codes(store.path, "_scvi_batch"), np.repeat([0, 1], 200))


def test_change_in_any_chunk_of_a_long_column_is_detected(store_kind: str, tmp_path: Path) -> None:
    """A relabelled cell far from the first, middle and last chunk still makes codes stale."""
    n = 3_000_000  # anndata writes this column in 8 chunks of 375,000 cells
    obs = pd.DataFrame(
        {"batch": pd.Categorical.from_codes(np.repeat([0, 1, 2], n // 3), ["a", "b", "c"])},
        index=pd.RangeIndex(n).astype(str),
    )
    data = ad.AnnData(sp.csr_matrix((n, 2), dtype=np.float32), obs=obs)
    path = tmp_path / "long.zarr"
    with warnings.catch_warnings(), ad.settings.override(zarr_write_format=FMT[store_kind]):
        warnings.simplefilter("ignore", UserWarning)
        data.write_zarr(path)
    assert raw_group(path)["obs/batch/codes"].nchunks >= 6

    manager = AnnDataManager(fields=[CategoricalObsField("batch", "batch")])
    manager.register_fields(read_lazy(path))
    changed = obs["batch"].cat.codes.to_numpy().copy()
    changed[800_000:800_010] = 2  # chunk 2 of 8
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    write_elem(group["obs"], "batch", pd.Categorical.from_codes(changed, ["a", "b", "c"]))

    again = AnnDataManager(fields=[CategoricalObsField("batch", "batch")])
    again.register_fields(read_lazy(path))
    got = raw_group(path)["obs/_scvi_batch"][799_990:800_020]
    np.testing.assert_array_equal(got, changed[799_990:800_020])


def test_transfer_onto_store_is_persisted(
    seed_adata: ad.AnnData,
    seed_factory: Callable[..., ad.AnnData],
    store_kind: str,
    to_backing: Callable[..., Any],
) -> None:
    ref = AnnDataManager(fields=[LayerField("X", None), CategoricalObsField("batch", "batch")])
    ref.register_fields(to_backing(seed_adata, store_kind, name="ref"))
    query = to_backing(seed_factory(seed=1, n_batches=3), store_kind, name="query")
    first = ref.transfer_fields(query, extend_categories=True)
    tok = token(query.path, "obs/_scvi_batch")
    before = mtimes(query.path)
    again = ref.transfer_fields(read_lazy(query.path), extend_categories=True)
    assert token(query.path, "obs/_scvi_batch") == tok  # reused
    assert mtimes(query.path) == before
    assert normalise(again.registry["field_registries"]) == normalise(
        first.registry["field_registries"]
    )
    # Registering the query on its own is another configuration: its own (sorted) mapping.
    own = AnnDataManager(fields=[CategoricalObsField("batch", "batch")])
    own.register_fields(read_lazy(query.path))
    assert token(query.path, "obs/_scvi_batch") != tok
    assert list(own.get_state_registry("batch").categorical_mapping) == [
        "batch_0",
        "batch_1",
        "batch_2",
    ]


# --- read-only stores ----------------------------------------------------------------------------
def test_read_only_without_persisted_registration(store: LazyAnnData) -> None:
    before = mtimes(store.path)
    ro = read_lazy(store.path, mode="r")
    manager = AnnDataManager(fields=fields())
    with pytest.raises(PermissionError, match=re.escape(str(store.path))) as info:
        manager.register_fields(ro)
    assert isinstance(info.value, ReadOnlyStoreError)
    assert "_scvi_batch" in str(info.value)
    assert "mode='r+'" in str(info.value)  # says what to do
    assert mtimes(store.path) == before
    # Fields that write nothing register fine on a read-only store.
    only_x = AnnDataManager(fields=[LayerField("X", None)])
    only_x.register_fields(read_lazy(store.path, mode="r"))
    assert only_x.summary_stats == {"n_cells": 400, "n_vars": 100}


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions"
)
def test_read_only_files(store: LazyAnnData, tmp_path: Path) -> None:
    copy = tmp_path / "ro.zarr"
    shutil.copytree(store.path, copy)
    subprocess.run(["chmod", "-R", "a-w", str(copy)], check=True)
    try:
        with pytest.raises(ReadOnlyStoreError, match=r"ro\.zarr"):
            register(read_lazy(copy))
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(copy)], check=True)


# --- crashes -------------------------------------------------------------------------------------
CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import atlasloader.store.write as w
    from atlasloader import AnnDataManager, read_lazy
    from atlasloader.fields import CategoricalObsField, LayerField

    point = sys.argv[2]
    if point == "mid-chunks":
        import dask
        dask.config.set(scheduler="synchronous")
        real_store = w.da.store
        def store(values, target, **kwargs):
            done = [0]
            def block(b):
                done[0] += 1
                if done[0] == 2:  # one block of the staged array written, then the power goes
                    os._exit(17)
                return b
            return real_store(values.map_blocks(block, dtype=values.dtype), target, **kwargs)
        w.da.store = store
    elif point == "before-publish":
        w._publish = lambda *a, **k: os._exit(17)
    elif point == "before-commit":
        real_order = w.set_column_order
        def order(root, frame, key, present):
            if present:
                os._exit(17)
            return real_order(root, frame, key, present)
        w.set_column_order = order
    real_write = w.write_array
    def write_array(root, target, values, attrs=None, chunk_rows=32):
        return real_write(root, target, values, attrs, chunk_rows)  # several chunks and blocks
    w.write_array = write_array
    m = AnnDataManager(fields=[LayerField("X", None), CategoricalObsField("batch", "batch")])
    m.register_fields(read_lazy(sys.argv[1]))
    print("finished without crashing")
    """
)


@pytest.mark.parametrize("point", ["mid-chunks", "before-publish", "before-commit"])
def test_crash_mid_registration(
    point: str, seed_adata: ad.AnnData, store_kind: str, to_backing: Callable[..., Any]
) -> None:
    store = to_backing(seed_adata, store_kind)
    user_files = {k: v for k, v in mtimes(store.path).items()}
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, store.path, point],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 17, proc.stdout + proc.stderr
    # The store still opens with anndata, and shows no half-written column.
    adata = ad.read_zarr(store.path)
    assert adata.shape == (400, 100)
    assert list(adata.obs.columns) in (["batch", "labels"], ["batch", "labels", "_scvi_batch"])
    if "_scvi_batch" in adata.obs:
        np.testing.assert_array_equal(adata.obs["_scvi_batch"], np.repeat([0, 1], 200))
    assert list(adata.obs["batch"]) == list(seed_adata.obs["batch"])
    for name, mtime in user_files.items():  # the user's own data untouched
        if name.startswith(("X", "obs/batch", "obs/labels", "var")):
            assert mtimes(store.path).get(name) == mtime, name
    # A new registration succeeds, is correct, and cleans up.
    manager = AnnDataManager(fields=[LayerField("X", None), CategoricalObsField("batch", "batch")])
    manager.register_fields(read_lazy(store.path))
    assert manager.summary_stats == {"n_cells": 400, "n_vars": 100, "n_batch": 2}
    np.testing.assert_array_equal(codes(store.path, "_scvi_batch"), np.repeat([0, 1], 200))
    group = raw_group(store.path)
    assert not [k for k in [*group.keys(), *group["obs"].keys()] if "staging" in k]


def test_failed_registration_leaves_store_consistent(
    seed_adata: ad.AnnData, store_kind: str, to_backing: Callable[..., Any]
) -> None:
    """An error in the second field leaves the first field's column complete (or absent)."""
    data = seed_adata.copy()
    values = data.obs["labels"].astype(object).to_numpy().copy()
    values[399] = np.nan
    data.obs["bad"] = pd.Categorical(values)
    store = to_backing(data, store_kind)
    manager = AnnDataManager(
        fields=[CategoricalObsField("batch", "batch"), CategoricalObsField("labels", "bad")]
    )
    with pytest.raises(InvalidDataError, match="bad"):
        manager.register_fields(store)
    adata = ad.read_zarr(store.path)
    assert "_scvi_labels" not in adata.obs
    if "_scvi_batch" in adata.obs:
        np.testing.assert_array_equal(adata.obs["_scvi_batch"], np.repeat([0, 1], 200))
    fixed = AnnDataManager(fields=[CategoricalObsField("batch", "batch")])
    fixed.register_fields(read_lazy(store.path))
    assert fixed.summary_stats.n_batch == 2


def test_registration_holds_the_space_to_undo_itself_until_it_ends(
    seed_adata: ad.AnnData, store_kind: str, to_backing: Callable[..., Any]
) -> None:
    """While a registration writes, the disk its rollback needs is held in the staging area
    (a full disk cannot leave the "under way" mark behind); it is freed on commit and on
    rollback."""
    held: list[int] = []

    class Probe(CategoricalObsField):
        def register_field(self, adata: Any) -> dict:
            reserve = Path(adata.path) / STAGING / RESERVE_NAME
            held.append(sum(f.stat().st_size for f in reserve.rglob("*") if f.is_file()))
            return super().register_field(adata)

    store = to_backing(seed_adata, store_kind)
    data = seed_adata.copy()
    labels = data.obs["labels"].astype(object)
    data.obs["bad"] = pd.Categorical(labels.where(data.obs_names != data.obs_names[7]))
    bad = to_backing(data, store_kind)
    with pytest.raises(InvalidDataError, match="bad"):
        AnnDataManager([Probe("batch", "batch"), Probe("labels", "bad")]).register_fields(bad)
    assert len(held) == 2
    assert min(held) >= RESERVE_SLACK
    group = raw_group(bad.path)
    assert "pending" not in group.attrs.get("atlasloader", {})
    assert not (Path(bad.path) / STAGING).exists()
    held.clear()
    AnnDataManager([Probe("batch", "batch"), Probe("labels", "labels")]).register_fields(store)
    assert len(held) == 2
    assert min(held) >= RESERVE_SLACK
    assert not (Path(store.path) / STAGING).exists()
    assert "pending" not in raw_group(store.path).attrs["atlasloader"]


def test_a_dead_registrations_reserve_is_removed_by_the_next_writer(store: LazyAnnData) -> None:
    """The rollback space of a registration that was killed is a leftover like its staged
    arrays: the next write (here a preprocess, not a registration) removes it."""
    from atlasloader.preprocess import preprocess
    from atlasloader.validation import check_store

    reserve_rollback_space(zarr.open_group(store.path, mode="r+", use_consolidated=False))
    assert (Path(store.path) / STAGING / RESERVE_NAME).is_dir()
    assert [p.kind for p in check_store(store.path).problems] == ["incomplete"]
    preprocess(read_lazy(store.path, mode="r+"))
    assert not (Path(store.path) / STAGING).exists()
    assert check_store(store.path).ok


# --- not AnnData stores --------------------------------------------------------------------------
def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.zarr"
    with pytest.raises(OSError, match=r"nope\.zarr") as info:
        read_lazy(path)
    assert isinstance(info.value, StoreError)
    assert not path.exists()


def test_empty_directory(tmp_path: Path) -> None:
    path = tmp_path / "empty.zarr"
    path.mkdir()
    for mode in ("r", "r+"):
        with pytest.raises(NotAnnDataStoreError, match=r"empty\.zarr") as info:
            read_lazy(path, mode=mode)
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, OSError)
    assert list(path.iterdir()) == []  # nothing created


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_group_without_obs(tmp_path: Path, zarr_format: int) -> None:
    path = tmp_path / "plain.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    group.create_array("data", shape=(3,), dtype="i4")
    with pytest.raises(NotAnnDataStoreError, match=r"plain\.zarr") as info:
        read_lazy(path)
    assert "write_zarr" in str(info.value)  # says how to make one


def test_random_file(tmp_path: Path) -> None:
    path = tmp_path / "random.zarr"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(StoreError, match=r"random\.zarr"):
        read_lazy(path)


def test_garbage_metadata(tmp_path: Path) -> None:
    path = tmp_path / "garbage.zarr"
    path.mkdir()
    (path / "zarr.json").write_text("{not json")
    with pytest.raises(NotAnnDataStoreError, match=r"garbage\.zarr"):
        read_lazy(path)


def test_h5ad_file_is_not_a_store(seed_adata: ad.AnnData, tmp_path: Path) -> None:
    path = tmp_path / "data.h5ad"
    seed_adata.write_h5ad(path)
    with pytest.raises(StoreError, match=r"data\.h5ad"):
        read_lazy(path)


@pytest.mark.parametrize("registered_before", [False, True], ids=["fresh", "persisted"])
def test_corrupt_column_chunk_names_the_column(store: LazyAnnData, registered_before: bool) -> None:
    if registered_before:
        register(store)  # then the stale check is what reads the broken chunk
    codes_dir = Path(store.path) / "obs" / "batch" / "codes"
    metadata = ("zarr.json", ".zarray", ".zattrs")
    chunk = next(p for p in codes_dir.rglob("*") if p.is_file() and p.name not in metadata)
    chunk.write_bytes(b"not a chunk" * 20)
    with pytest.raises(CorruptChunkError, match="obs/batch/codes") as info:
        register(read_lazy(store.path))
    assert isinstance(info.value, OSError)
    assert Path(store.path).name in str(info.value)
    assert "restore" in str(info.value)  # says what to do


# --- a large store -------------------------------------------------------------------------------
MEASURE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from atlasloader import AnnDataManager, read_lazy
    from atlasloader.fields import CategoricalObsField, LayerField
    import anndata, dask.array, zarr  # imported before the baseline

    def status(field):  # bytes; VmHWM is this process's own peak (ru_maxrss is not: it keeps
        with open("/proc/self/status") as f:  # the parent's size across fork + exec)
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field))

    adata = read_lazy(sys.argv[1])
    x = adata.X
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current size
    before = status("VmRSS:")
    t = time.perf_counter()
    m = AnnDataManager(fields=[
        LayerField("X", None, is_count_data=True),
        CategoricalObsField("batch", "batch"),
        CategoricalObsField("labels", "labels"),
    ])
    m.register_fields(adata)
    seconds = time.perf_counter() - t
    peak = status("VmHWM:")
    print(json.dumps({"delta": peak - before, "seconds": seconds, "nbytes":
        int(sum(x.node[k].nbytes for k in ("data", "indices", "indptr"))),
        "stats": dict(m.summary_stats)}))
    """
)


@pytest.mark.slow
def test_million_cells_register_in_little_memory(tmp_path: Path) -> None:
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("peak memory is measured through Linux /proc")
    data = pytest.importorskip("atlasloader.data")
    if not hasattr(data, "make_atlas_store"):
        pytest.skip("atlasloader.data.make_atlas_store is not available")
    path = data.make_atlas_store(
        tmp_path / "atlas.zarr",
        n_cells=1_000_000,
        n_genes=2_000,
        n_batches=10,
        n_labels=8,
        nnz_per_cell=50,
        seed=0,
    )
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["stats"] == {"n_cells": 1_000_000, "n_vars": 2_000, "n_batch": 10, "n_labels": 8}
    assert out["nbytes"] >= 400_000_000  # 50 M values and indices
    # ~60 MB today (row pointers, obs codes, dask and import overhead) against 410 MB of X
    assert out["delta"] < 0.25 * out["nbytes"], out
    codes_ = raw_group(path)["obs/_scvi_batch"]
    assert codes_.shape == (1_000_000,)
    got = np.asarray(codes_[::1000])
    want = np.asarray(ad.io.read_elem(raw_group(path)["obs/batch"]).codes)[::1000]
    np.testing.assert_array_equal(got, want)
