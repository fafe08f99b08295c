"""``CategoricalObsField`` and ``CategoricalJointObsField`` specifics, on both backings."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import zarr

from atlasloader import AnnDataManager, LazyAnnData, read_lazy
from atlasloader.errors import CategoryTransferError, InvalidDataError
from atlasloader.fields import CategoricalJointObsField, CategoricalObsField, LayerField
from atlasloader.store.elements import write_elem

pytestmark = pytest.mark.filterwarnings(
    # the tests edit stores with anndata/zarr directly, as a user would
    "ignore:zarr v3 autosharding:UserWarning",
    "ignore:Consolidated metadata:UserWarning",
)


def user_view(adata: Any) -> ad.AnnData:
    return ad.read_zarr(adata.path) if isinstance(adata, LazyAnnData) else adata


def codes_of(adata: Any, key: str) -> np.ndarray:
    return np.asarray(user_view(adata).obs[key])


def with_column(adata: ad.AnnData, key: str, values: Any) -> ad.AnnData:
    adata = adata.copy()
    adata.obs[key] = values
    return adata


def add_plain_column(store: LazyAnnData, key: str, values: np.ndarray) -> LazyAnnData:
    """Add a non-categorical obs column to a store (anndata's writer would make it categorical)."""
    group = zarr.open_group(store.path, mode="r+", use_consolidated=False)
    write_elem(group["obs"], key, values)
    order = list(group["obs"].attrs["column-order"])
    group["obs"].attrs["column-order"] = [*order, key]
    zarr.consolidate_metadata(group.store)
    return read_lazy(store.path)


def test_missing_values_are_an_error(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    values = seed_adata.obs["batch"].astype(object).to_numpy().copy()
    values[[3, 250]] = np.nan
    adata = to_backing(with_column(seed_adata, "b2", pd.Categorical(values)), backing_kind)
    manager = AnnDataManager(fields=[LayerField("X", None), CategoricalObsField("batch", "b2")])
    with pytest.raises(ValueError, match=r"adata\.obs\['b2'\] has 2 missing value") as info:
        manager.register_fields(adata)
    assert isinstance(info.value, InvalidDataError)
    assert "fillna" in str(info.value)  # says what to do
    assert "_scvi_batch" not in user_view(adata).obs
    assert manager.adata is None


def test_missing_float_values_are_an_error(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    values = np.repeat([1.0, 2.0], 200)
    values[7] = np.nan
    adata = to_backing(with_column(seed_adata, "dose", values), backing_kind)
    with pytest.raises(InvalidDataError, match=r"adata\.obs\['dose'\] has 1 missing"):
        CategoricalObsField("dose", "dose").register_field(adata)
    assert "_scvi_dose" not in user_view(adata).obs


def test_unseen_category_on_transfer(
    seed_adata: ad.AnnData,
    seed_factory: Callable[..., ad.AnnData],
    backing_kind: str,
    to_backing: Callable[..., Any],
) -> None:
    ref = to_backing(seed_adata, backing_kind, name="ref")
    f = CategoricalObsField("batch", "batch")
    state = f.register_field(ref)
    query = to_backing(seed_factory(seed=4, n_batches=4), backing_kind, name="query")
    with pytest.raises(CategoryTransferError, match="batch_2 not found") as info:
        f.transfer_field(state, query)
    assert "extend_categories = True" in str(info.value)
    assert "_scvi_batch" not in user_view(query).obs
    new = f.transfer_field(state, query, extend_categories=True)
    assert list(new["categorical_mapping"]) == ["batch_0", "batch_1", "batch_2", "batch_3"]
    np.testing.assert_array_equal(codes_of(query, "_scvi_batch"), np.repeat(np.arange(4), 200))


def test_joint_unseen_category_without_extend(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    ref = with_column(seed_adata, "donor", np.where(np.arange(400) < 200, "d1", "d2"))
    query = with_column(seed_adata, "donor", np.where(np.arange(400) < 100, "d3", "d1"))
    f = CategoricalJointObsField("extra_categorical_covs", ["donor", "labels"])
    state = f.register_field(to_backing(ref, backing_kind, name="ref"))
    target = to_backing(query, backing_kind, name="query")
    with pytest.raises(ValueError, match="donor") as info:
        f.transfer_field(state, target)
    assert isinstance(info.value, InvalidDataError)
    assert "d3" in str(info.value)
    assert "_scvi_extra_categorical_covs" not in user_view(target).obsm
    new = f.transfer_field(state, target, extend_categories=True)
    assert list(new["mappings"]["donor"]) == ["d1", "d2", "d3"]
    assert new["n_cats_per_key"] == [3, 3]
    cov = np.asarray(user_view(target).obsm["_scvi_extra_categorical_covs"])
    np.testing.assert_array_equal(cov[:, 0], np.where(np.arange(400) < 100, 2, 0))


def test_small_category_warns(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    values = np.array(["big"] * 398 + ["tiny"] * 2)
    adata = to_backing(with_column(seed_adata, "grp", values), backing_kind)
    with pytest.warns(UserWarning, match=r"adata\.obs\['grp'\] has fewer than 3 cells"):
        state = CategoricalObsField("grp", "grp").register_field(adata)
    assert list(state["categorical_mapping"]) == ["big", "tiny"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # three cells: no warning
        CategoricalObsField("batch", "batch").register_field(adata)


def test_unused_categories_are_kept(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    values = pd.Categorical(np.where(np.arange(400) < 100, "c", "a"), categories=["c", "b", "a"])
    adata = to_backing(with_column(seed_adata, "grp", values), backing_kind)
    manager = AnnDataManager(fields=[CategoricalObsField("grp", "grp")])
    manager.register_fields(adata)
    state = manager.get_state_registry("grp")
    assert list(state.categorical_mapping) == ["c", "b", "a"]  # stored order, unused kept
    assert manager.summary_stats.n_grp == 3
    want = np.where(np.arange(400) < 100, 0, 2)
    np.testing.assert_array_equal(codes_of(adata, "_scvi_grp"), want)
    user = user_view(adata)
    assert list(user.obs["grp"].cat.categories) == ["c", "b", "a"]  # the user's column as it was


def test_plain_string_column_sorted(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    values = np.array(["zeta", "alpha", "mid", "alpha"] * 100, dtype=object)
    if backing_kind == "memory":
        adata = with_column(seed_adata, "s", values)
        assert adata.obs["s"].dtype == object
    else:
        adata = add_plain_column(to_backing(seed_adata, backing_kind), "s", values)
        assert not adata.obs.column("s").is_categorical  # really a plain string array
    state = CategoricalObsField("s", "s").register_field(adata)
    assert list(state["categorical_mapping"]) == ["alpha", "mid", "zeta"]
    np.testing.assert_array_equal(codes_of(adata, "_scvi_s"), np.tile([2, 0, 1, 0], 100))
    assert list(np.asarray(user_view(adata).obs["s"])) == list(values)


def test_integer_categories(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    values = np.tile([12, 10, 11, 10], 100)
    adata = to_backing(with_column(seed_adata, "plate", values), backing_kind)
    state = CategoricalObsField("plate", "plate").register_field(adata)
    mapping = state["categorical_mapping"]
    assert mapping.tolist() == [10, 11, 12]
    assert mapping.dtype.kind == "i", mapping.dtype
    np.testing.assert_array_equal(codes_of(adata, "_scvi_plate"), np.tile([2, 0, 1, 0], 100))


def test_plain_and_categorical_sources_agree(
    seed_adata: ad.AnnData, store_kind: str, to_backing: Callable[..., Any]
) -> None:
    """The dask code path for a plain column gives the pandas path's mapping and codes."""
    rng = np.random.default_rng(5)
    values = rng.choice(np.array(["t", "b", "q", "a"], dtype=object), size=400)
    mem = with_column(seed_adata, "s", values)
    store = add_plain_column(to_backing(seed_adata, store_kind), "s", values)
    s_mem = CategoricalObsField("s", "s").register_field(mem)
    s_store = CategoricalObsField("s", "s").register_field(store)
    assert s_mem["categorical_mapping"].tolist() == s_store["categorical_mapping"].tolist()
    np.testing.assert_array_equal(codes_of(mem, "_scvi_s"), codes_of(store, "_scvi_s"))


def test_default_field_is_all_zeros(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    adata = to_backing(seed_adata, backing_kind)
    manager = AnnDataManager(fields=[CategoricalObsField("batch", None)])
    manager.register_fields(adata)
    assert manager.summary_stats.n_batch == 1
    assert manager.get_state_registry("batch").original_key == "_scvi_batch"
    np.testing.assert_array_equal(codes_of(adata, "_scvi_batch"), np.zeros(400))


def test_original_column_never_changed(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    values = pd.Categorical(np.where(np.arange(400) % 3 == 0, "x", "y"), categories=["y", "x"])
    adata = to_backing(with_column(seed_adata, "grp", values), backing_kind)
    f = CategoricalJointObsField("covs", ["grp", "batch"])
    f.register_field(adata)
    user = user_view(adata)
    assert list(user.obs["grp"].cat.categories) == ["y", "x"]
    assert list(user.obs["grp"]) == list(values)
    assert list(user.obs["batch"]) == list(seed_adata.obs["batch"])
    assert list(user.obs.columns) == ["batch", "labels", "grp"]
