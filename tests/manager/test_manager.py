"""The seed tutorial (scvi-tools' data handling tutorial) end to end, on both backings.

Every step runs on the in-memory AnnData and on the same data written with ``write_zarr``
(Zarr format 2 and 3) and reopened with :func:`atlasloader.read_lazy`; only the imports differ
from the tutorial.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import atlasloader
from atlasloader import AnnDataManager, LazyAnnData
from atlasloader.errors import (
    AtlasLoaderError,
    CategoryTransferError,
    InvalidArgumentError,
    InvalidTypeError,
    MissingKeyError,
    NotRegisteredError,
    ViewError,
)
from atlasloader.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
)
from atlasloader.registry.attrdict import attrdict

SEED_REGISTRY_KEYS = ["scvi_version", "model_name", "setup_args", "field_registries", "_scvi_uuid"]
SEED_DATA_REGISTRY = (
    "attrdict({'x': attrdict({'attr_name': 'X', 'attr_key': None}), "
    "'batch': attrdict({'attr_name': 'obs', 'attr_key': '_scvi_batch'})})"
)
SEED_STATE = (
    "{'categorical_mapping': array(['batch_0', 'batch_1'], dtype=object), 'original_key': 'batch'}"
)


def tutorial_fields() -> list[Any]:
    return [
        LayerField(registry_key="x", layer=None, is_count_data=True),
        CategoricalObsField(registry_key="batch", obs_key="batch"),
    ]


def registered(adata: Any) -> AnnDataManager:
    manager = AnnDataManager(fields=tutorial_fields())
    manager.register_fields(adata)
    return manager


def obs_column(adata: Any, key: str) -> np.ndarray:
    """An obs column as the user reads it back (``anndata.read_zarr`` for stores)."""
    if isinstance(adata, LazyAnnData):
        return ad.read_zarr(adata.path).obs[key].to_numpy()
    return adata.obs[key].to_numpy()


# --- part 1: the registry ------------------------------------------------------------------------
def test_registry_keys_and_components(backing: Any) -> None:
    manager = registered(backing)
    assert list(manager.registry.keys()) == SEED_REGISTRY_KEYS
    assert str(manager.registry.keys()) == f"dict_keys({SEED_REGISTRY_KEYS})"
    assert manager.registry["scvi_version"] == atlasloader.__version__
    assert manager.registry["model_name"] is None
    assert manager.registry["setup_args"] is None
    assert list(manager.registry["field_registries"]) == ["x", "batch"]
    for fr in manager.registry["field_registries"].values():
        assert list(fr) == ["data_registry", "state_registry", "summary_stats"]


def test_data_registry_attrdict(backing: Any) -> None:
    data_registry = registered(backing).data_registry
    assert isinstance(data_registry, attrdict)
    assert repr(data_registry) == SEED_DATA_REGISTRY
    assert repr(data_registry.batch) == "attrdict({'attr_name': 'obs', 'attr_key': '_scvi_batch'})"
    assert data_registry.batch.attr_name == "obs"
    assert data_registry.batch.attr_key == "_scvi_batch"
    assert data_registry.x.attr_name == "X"
    assert data_registry.x.attr_key is None
    assert list(data_registry.keys()) == ["x", "batch"]
    with pytest.raises(AttributeError, match="labels"):
        _ = data_registry.labels


def test_state_registry(backing: Any) -> None:
    state = registered(backing).get_state_registry("batch")
    assert str(state.keys()) == "dict_keys(['categorical_mapping', 'original_key'])"
    assert list(state.categorical_mapping) == ["batch_0", "batch_1"]
    assert f"{state.categorical_mapping}" == "['batch_0' 'batch_1']"
    assert state.categorical_mapping.dtype == object
    assert state.original_key == "batch"


def test_summary_stats(backing: Any) -> None:
    stats = registered(backing).summary_stats
    assert stats == {"n_cells": 400, "n_vars": 100, "n_batch": 2}
    assert repr(stats) == "attrdict({'n_cells': 400, 'n_vars': 100, 'n_batch': 2})"
    assert stats.n_batch == 2
    assert all(type(v) is int for v in stats.values())


def test_view_registry_seed_rows(
    backing: Any, render: Callable[..., str], rows_of: Callable[[str], list[list[str]]]
) -> None:
    text = render(registered(backing))
    for title in ("Summary Statistics", "Data Registry", "batch State Registry"):
        assert title in text
    assert text.startswith("Anndata setup with atlasloader version")
    rows = rows_of(text)
    expected = [
        ["Summary Stat Key", "Value"],
        ["n_cells", "400"],
        ["n_vars", "100"],
        ["n_batch", "2"],
        ["Registry Key", "scvi-tools Location"],
        ["x", "adata.X"],
        ["batch", "adata.obs['_scvi_batch']"],
        ["Source Location", "Categories", "scvi-tools Encoding"],
        ["adata.obs['batch']", "batch_0", "0"],
        ["", "batch_1", "1"],
    ]
    assert rows == expected
    assert "│ adata.obs['batch'] │  batch_0   │          0          │" in text
    hidden = rows_of(render(registered(backing), hide_state_registries=True))
    assert ["adata.obs['batch']", "batch_0", "0"] not in hidden
    assert ["n_batch", "2"] in hidden


def test_view_registry_identical_across_backings(
    seed_adata: ad.AnnData,
    store_kind: str,
    to_backing: Callable[..., Any],
    render: Callable[..., str],
) -> None:
    in_memory = render(registered(seed_adata.copy()))
    on_store = render(registered(to_backing(seed_adata, store_kind)))
    assert in_memory == on_store
    assert "batch_1" in on_store


# --- part 2: fields ------------------------------------------------------------------------------
def test_register_field_adds_encoded_column(backing: Any, backing_kind: str) -> None:
    manager = AnnDataManager(fields=tutorial_fields())
    assert len(manager.fields) == 2
    batch_field = manager.fields[1]
    assert repr(batch_field) == "CategoricalObsField(registry_key='batch', attr_key='_scvi_batch')"
    before = repr(backing)
    assert "obs: 'batch', 'labels'\n" in before + "\n"
    assert "_scvi_batch" not in before
    assert "uns: 'protein_names'" in before
    assert "obsm: 'protein_expression'" in before

    state = batch_field.register_field(backing)

    after = repr(backing)
    assert "obs: 'batch', 'labels', '_scvi_batch'" in after
    assert after.splitlines()[0].startswith("AnnData object with n_obs × n_vars = 400 × 100")
    assert str(state) == SEED_STATE
    codes = obs_column(backing, "_scvi_batch")
    np.testing.assert_array_equal(codes, np.repeat([0, 1], 200))
    if backing_kind != "memory":
        reread = ad.read_zarr(backing.path)
        assert list(reread.obs.columns) == ["batch", "labels", "_scvi_batch"]


def test_user_columns_unchanged(backing: Any, seed_adata: ad.AnnData) -> None:
    registered(backing)
    batch = obs_column(backing, "batch")
    assert list(batch) == list(seed_adata.obs["batch"])
    user = ad.read_zarr(backing.path) if isinstance(backing, LazyAnnData) else backing
    assert isinstance(user.obs["batch"].dtype, pd.CategoricalDtype)
    assert list(user.obs["batch"].cat.categories) == ["batch_0", "batch_1"]
    assert list(user.obs["labels"]) == list(seed_adata.obs["labels"])
    np.testing.assert_array_equal(np.asarray(user.X), seed_adata.X)


def test_transfer_with_new_category(
    backing: Any,
    backing_kind: str,
    to_backing: Callable[..., Any],
    seed_factory: Callable[..., ad.AnnData],
    render: Callable[..., str],
    rows_of: Callable[[str], list[list[str]]],
) -> None:
    manager = registered(backing)
    query = seed_factory(seed=1, n_batches=3)
    adata3 = to_backing(query, backing_kind, name="query")
    with pytest.raises(ValueError, match="batch_2") as info:
        manager.transfer_fields(adata_target=adata3)
    assert str(info.value) == (
        "Category batch_2 not found in source registry. "
        "Cannot transfer setup without `extend_categories = True`."
    )
    assert isinstance(info.value, CategoryTransferError)
    # Nothing was written by the failed transfer.
    assert "_scvi_batch" not in repr(adata3)
    if isinstance(adata3, LazyAnnData):
        assert "_scvi_batch" not in ad.read_zarr(adata3.path).obs

    adata3_manager = manager.transfer_fields(adata_target=adata3, extend_categories=True)
    rows = rows_of(render(adata3_manager))
    assert ["n_cells", "600"] in rows
    assert ["n_batch", "3"] in rows
    assert rows[-3:] == [
        ["adata.obs['batch']", "batch_0", "0"],
        ["", "batch_1", "1"],
        ["", "batch_2", "2"],
    ]
    assert adata3_manager.summary_stats == {"n_cells": 600, "n_vars": 100, "n_batch": 3}
    state = adata3_manager.get_state_registry("batch")
    assert list(state.categorical_mapping) == ["batch_0", "batch_1", "batch_2"]
    np.testing.assert_array_equal(obs_column(adata3, "_scvi_batch"), np.repeat([0, 1, 2], 200))
    # The reference registration is unchanged.
    assert list(manager.get_state_registry("batch").categorical_mapping) == ["batch_0", "batch_1"]


def test_transfer_follows_reference_order(
    backing_kind: str, to_backing: Callable[..., Any], seed_factory: Callable[..., ad.AnnData]
) -> None:
    """A query holding a subset of categories in another order is encoded with the reference."""
    ref = seed_factory(seed=0, n_batches=3)
    manager = registered(to_backing(ref, backing_kind, name="ref"))
    query = seed_factory(seed=2, n_batches=2)
    query.obs["batch"] = pd.Categorical(
        np.where(query.obs["batch"] == "batch_0", "batch_2", "batch_1"),
        categories=["batch_2", "batch_1"],
    )
    target = to_backing(query, backing_kind, name="query")
    new = manager.transfer_fields(target)
    assert list(new.get_state_registry("batch").categorical_mapping) == [
        "batch_0",
        "batch_1",
        "batch_2",
    ]
    assert new.summary_stats.n_batch == 3
    np.testing.assert_array_equal(obs_column(target, "_scvi_batch"), np.repeat([2, 1], 200))


def test_transfer_store_to_store_and_memory_agree(
    store_kind: str, to_backing: Callable[..., Any], seed_factory: Callable[..., ad.AnnData]
) -> None:
    ref = seed_factory(seed=0)
    query = seed_factory(seed=1, n_batches=3)
    mem = registered(ref.copy()).transfer_fields(query.copy(), extend_categories=True)
    store_target = to_backing(query, store_kind, name="query")
    store = registered(to_backing(ref, store_kind, name="ref")).transfer_fields(
        store_target, extend_categories=True
    )
    np.testing.assert_array_equal(
        mem.get_state_registry("batch").categorical_mapping,
        store.get_state_registry("batch").categorical_mapping,
    )
    assert mem.summary_stats == store.summary_stats
    np.testing.assert_array_equal(
        mem.adata.obs["_scvi_batch"].to_numpy(), obs_column(store_target, "_scvi_batch")
    )


# --- part 4: setup_anndata -----------------------------------------------------------------------
def tutorial_setup_adata(adata: ad.AnnData) -> ad.AnnData:
    adata = adata.copy()
    adata.layers["raw_counts"] = adata.X.copy()
    adata.obs["my_categorical_covariate"] = ["A"] * 200 + ["B"] * 200
    adata.obs["my_continuous_covariate"] = np.random.default_rng(0).integers(0, 100, 400)
    return adata


def scvi_setup_manager(adata: Any) -> AnnDataManager:
    setup_args = {
        "layer": "raw_counts",
        "batch_key": "batch",
        "labels_key": "labels",
        "size_factor_key": None,
        "categorical_covariate_keys": ["my_categorical_covariate"],
        "continuous_covariate_keys": ["my_continuous_covariate"],
    }
    fields = [
        LayerField("X", "raw_counts", is_count_data=True),
        CategoricalObsField("batch", "batch"),
        CategoricalObsField("labels", "labels"),
        CategoricalJointObsField("extra_categorical_covs", ["my_categorical_covariate"]),
        NumericalJointObsField("extra_continuous_covs", ["my_continuous_covariate"]),
    ]
    manager = AnnDataManager(
        fields=fields, setup_method_args={"model_name": "SCVI", "setup_args": setup_args}
    )
    manager.register_fields(adata)
    return manager


def test_setup_anndata_registry(
    backing_kind: str,
    seed_adata: ad.AnnData,
    to_backing: Callable[..., Any],
    render: Callable[..., str],
    rows_of: Callable[[str], list[list[str]]],
) -> None:
    adata = to_backing(tutorial_setup_adata(seed_adata), backing_kind, name="setup")
    if backing_kind == "memory":
        assert "layers: 'raw_counts'" in repr(adata)
    manager = scvi_setup_manager(adata)
    text = render(manager)
    assert "Setup via `SCVI.setup_anndata` with arguments:" in text
    assert "'continuous_covariate_keys': ['my_continuous_covariate']" in text
    rows = rows_of(text)
    for row in (
        ["n_cells", "400"],
        ["n_vars", "100"],
        ["n_batch", "2"],
        ["n_labels", "3"],
        ["n_extra_categorical_covs", "1"],
        ["n_extra_continuous_covs", "1"],
        ["X", "adata.layers['raw_counts']"],
        ["labels", "adata.obs['_scvi_labels']"],
        ["extra_categorical_covs", "adata.obsm['_scvi_extra_categorical_covs']"],
        ["extra_continuous_covs", "adata.obsm['_scvi_extra_continuous_covs']"],
        ["adata.obs['labels']", "label_0", "0"],
        ["", "label_2", "2"],
        ["adata.obs['my_categorical_covariate']", "A", "0"],
        ["", "B", "1"],
        ["", "", ""],
        ["adata.obs['my_continuous_covariate']"],
    ):
        assert row in rows, row
    for title in (
        "labels State Registry",
        "extra_categorical_covs State Registry",
        "extra_continuous_covs State Registry",
    ):
        assert title in text
    user = ad.read_zarr(adata.path) if isinstance(adata, LazyAnnData) else adata
    cat = np.asarray(user.obsm["_scvi_extra_categorical_covs"])
    np.testing.assert_array_equal(cat[:, 0], np.repeat([0, 1], 200))
    cont = np.asarray(user.obsm["_scvi_extra_continuous_covs"], dtype=np.float64)
    np.testing.assert_array_equal(
        cont[:, 0], tutorial_setup_adata(seed_adata).obs["my_continuous_covariate"].to_numpy()
    )


def test_setup_anndata_tables_identical_across_backings(
    seed_adata: ad.AnnData,
    store_kind: str,
    to_backing: Callable[..., Any],
    render: Callable[..., str],
) -> None:
    adata = tutorial_setup_adata(seed_adata)
    in_memory = render(scvi_setup_manager(adata.copy()))
    on_store = render(scvi_setup_manager(to_backing(adata, store_kind)))
    assert in_memory == on_store


def test_update_setup_method_args(backing: Any) -> None:
    manager = AnnDataManager(
        fields=tutorial_fields(),
        setup_method_args={"model_name": "SCVI", "setup_args": {"layer": None}},
    )
    manager.register_fields(backing)
    manager.update_setup_method_args({"batch_key": "batch"})
    assert manager.registry["setup_args"] == {"layer": None, "batch_key": "batch"}
    assert manager.registry["model_name"] == "SCVI"
    manager.update_setup_method_args({"layer": "counts"})
    assert manager.registry["setup_args"]["layer"] == "counts"


def test_get_from_registry(backing: Any, seed_adata: ad.AnnData) -> None:
    manager = registered(backing)
    x = manager.get_from_registry("x")
    batch = manager.get_from_registry("batch")
    if isinstance(backing, LazyAnnData):
        x = x[:]
        batch = batch.compute()
    np.testing.assert_array_equal(np.asarray(x), seed_adata.X)
    assert batch.shape == (400, 1)
    np.testing.assert_array_equal(batch[:, 0], np.repeat([0, 1], 200))
    with pytest.raises(KeyError, match="labels") as info:
        manager.get_from_registry("labels")
    assert isinstance(info.value, MissingKeyError)
    with pytest.raises(KeyError, match="'x', 'batch'"):
        manager.get_state_registry("labels")


def test_uuid_assigned(backing: Any) -> None:
    manager = registered(backing)
    uuid = manager.adata_uuid
    assert manager.registry["_scvi_uuid"] == uuid
    assert len(uuid) == 36
    if isinstance(backing, LazyAnnData):
        again = registered(type(backing)(backing.path, mode="r+"))
        assert again.adata_uuid == uuid  # persisted in the store
    else:
        assert backing.uns["_scvi_uuid"] == uuid


# --- misuse --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "use",
    [
        lambda m: m.data_registry,
        lambda m: m.summary_stats,
        lambda m: m.get_state_registry("batch"),
        lambda m: m.get_from_registry("batch"),
        lambda m: m.transfer_fields(ad.AnnData(np.zeros((2, 2), dtype=np.float32))),
        lambda m: m.adata_uuid,
        lambda m: m.validate(),
        lambda m: m.register_new_fields([LayerField("y", None)]),
    ],
    ids=[
        "data_registry",
        "summary_stats",
        "get_state_registry",
        "get_from_registry",
        "transfer_fields",
        "adata_uuid",
        "validate",
        "register_new_fields",
    ],
)
def test_unregistered_manager(use: Callable[[AnnDataManager], Any]) -> None:
    manager = AnnDataManager(fields=tutorial_fields())
    with pytest.raises(NotRegisteredError, match="register_fields") as info:
        use(manager)
    assert isinstance(info.value, AssertionError)
    assert isinstance(info.value, AtlasLoaderError)
    assert "unregistered" in repr(manager)


def test_duplicate_registry_keys(seed_adata: ad.AnnData) -> None:
    with pytest.raises(ValueError, match="'batch'") as info:
        AnnDataManager(
            fields=[CategoricalObsField("batch", "batch"), CategoricalObsField("batch", "labels")]
        )
    assert isinstance(info.value, InvalidArgumentError)
    assert "unique" in str(info.value)
    manager = registered(seed_adata)
    with pytest.raises(ValueError, match="'x'"):
        manager.register_new_fields([LayerField("x", None)])


def test_register_twice_and_wrong_input(backing: Any) -> None:
    manager = registered(backing)
    with pytest.raises(AssertionError, match="Existing AnnData"):
        manager.register_fields(backing)
    other = AnnDataManager(fields=tutorial_fields())
    with pytest.raises(TypeError, match="dict") as info:
        other.register_fields({"X": np.zeros((2, 2))})
    assert isinstance(info.value, InvalidTypeError)
    with pytest.raises(TypeError, match="extend_categories"):
        other.register_fields(backing, extend_categories=True)


def test_view_rejected(seed_adata: ad.AnnData) -> None:
    view = seed_adata[:100]
    manager = AnnDataManager(fields=tutorial_fields())
    with pytest.raises(ValueError, match="view") as info:
        manager.register_fields(view)
    assert isinstance(info.value, ViewError)
    assert "adata.copy()" in str(info.value)
    assert "_scvi_batch" not in seed_adata.obs
    # A registered manager also refuses a view as transfer target.
    ref = registered(seed_adata)
    with pytest.raises(ViewError, match="copy"):
        ref.transfer_fields(seed_adata[:10].copy()[:5])


def test_missing_obs_key_names_the_column(backing: Any) -> None:
    manager = AnnDataManager(fields=[CategoricalObsField("batch", "donor")])
    with pytest.raises(KeyError, match="donor") as info:
        manager.register_fields(backing)
    assert isinstance(info.value, MissingKeyError)
    assert "batch" in str(info.value)  # lists the available columns
    assert manager.adata is None


def test_missing_layer_names_the_layer(backing: Any) -> None:
    manager = AnnDataManager(fields=[LayerField("X", "counts")])
    with pytest.raises(KeyError, match="counts") as info:
        manager.register_fields(backing)
    assert isinstance(info.value, MissingKeyError)
    assert "layers" in str(info.value)


def test_register_new_fields(backing: Any) -> None:
    manager = AnnDataManager(fields=[LayerField("x", None)])
    manager.register_fields(backing)
    manager.register_new_fields([CategoricalObsField("labels", "labels")])
    assert list(manager.registry["field_registries"]) == ["x", "labels"]
    assert manager.summary_stats.n_labels == 3
    assert list(manager.data_registry) == ["x", "labels"]


def test_validate_reregisters_after_another_manager(backing: Any) -> None:
    first = registered(backing)
    second = AnnDataManager(fields=[CategoricalObsField("batch", "labels")])
    second.register_fields(backing)
    # ``second`` overwrote ``_scvi_batch`` with label codes; validating ``first`` restores it.
    first.validate()
    assert list(first.get_state_registry("batch").categorical_mapping) == ["batch_0", "batch_1"]
    np.testing.assert_array_equal(obs_column(backing, "_scvi_batch"), np.repeat([0, 1], 200))
