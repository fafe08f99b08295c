"""The contract every field fulfils, on the in-memory AnnData and on Zarr stores (format 2 and 3).

Each case registers one field class against the seed data (plus the columns the tutorial's
``setup_anndata`` example adds) and checks: the properties, validate/register/transfer,
summary stats, the state-registry table, that the state and the encoded data are the same on
both backings, and that the state survives the JSON codec unchanged.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from atlasloader import LazyAnnData
from atlasloader.errors import MissingKeyError
from atlasloader.fields import (
    BaseAnnDataField,
    CategoricalJointObsField,
    CategoricalObsField,
    LabelsWithUnlabeledObsField,
    LayerField,
    NumericalJointObsField,
    NumericalObsField,
    ObsmField,
    StringUnsField,
)
from atlasloader.store.codec import from_jsonable, to_jsonable


@dataclass
class Case:
    """One field configuration and what registering the prepared seed data must give."""

    make: Callable[[], BaseAnnDataField]
    attr_name: str
    attr_key: str | None
    stats: dict[str, int]
    table_rows: list[list[str]] | None  # body rows of view_state_registry, None: no table
    missing: Callable[[], BaseAnnDataField] | None = None  # same field on an absent key
    missing_key: str = ""
    state_keys: list[str] = field(default_factory=list)


def prepare(adata: ad.AnnData) -> ad.AnnData:
    """The seed data plus the columns the tutorial's setup_anndata example uses."""
    adata = adata.copy()
    n = adata.n_obs
    rng = np.random.default_rng(7)
    adata.layers["raw_counts"] = adata.X.copy()
    adata.obs["cat_cov"] = np.where(np.arange(n) < n // 2, "A", "B")
    adata.obs["cont_cov"] = rng.integers(0, 100, n)
    adata.obs["size"] = rng.random(n) + 0.5
    lab = adata.obs["labels"].astype(str).to_numpy().copy()
    lab[::7] = "Unknown"
    adata.obs["lab"] = pd.Categorical(lab)
    adata.uns["mtype"] = "latent_posterior_parameters"
    return adata


CASES: dict[str, Case] = {
    "layer_X": Case(
        lambda: LayerField("X", None, is_count_data=True),
        "X",
        None,
        {"n_cells": 400, "n_vars": 100},
        None,
        state_keys=["n_obs", "n_vars", "column_names"],
    ),
    "layer_counts": Case(
        lambda: LayerField("counts", "raw_counts", is_count_data=True),
        "layers",
        "raw_counts",
        {"n_counts": 100},
        None,
        missing=lambda: LayerField("counts", "absent_layer"),
        missing_key="absent_layer",
        state_keys=["n_obs", "n_vars", "column_names"],
    ),
    "categorical": Case(
        lambda: CategoricalObsField("batch", "batch"),
        "obs",
        "_scvi_batch",
        {"n_batch": 2},
        [["adata.obs['batch']", "batch_0", "0"], ["", "batch_1", "1"]],
        missing=lambda: CategoricalObsField("batch", "absent_col"),
        missing_key="absent_col",
        state_keys=["categorical_mapping", "original_key"],
    ),
    "categorical_default": Case(
        lambda: CategoricalObsField("batch", None),
        "obs",
        "_scvi_batch",
        {"n_batch": 1},
        [["adata.obs['_scvi_batch']", "0", "0"]],
        state_keys=["categorical_mapping", "original_key"],
    ),
    "numerical": Case(
        lambda: NumericalObsField("size_factor", "size"),
        "obs",
        "size",
        {},
        None,
        missing=lambda: NumericalObsField("size_factor", "absent_col"),
        missing_key="absent_col",
    ),
    "categorical_joint": Case(
        lambda: CategoricalJointObsField("extra_categorical_covs", ["cat_cov", "labels"]),
        "obsm",
        "_scvi_extra_categorical_covs",
        {"n_extra_categorical_covs": 2},
        [
            ["adata.obs['cat_cov']", "A", "0"],
            ["", "B", "1"],
            ["", "", ""],
            ["adata.obs['labels']", "label_0", "0"],
            ["", "label_1", "1"],
            ["", "label_2", "2"],
            ["", "", ""],
        ],
        missing=lambda: CategoricalJointObsField("extra_categorical_covs", ["cat_cov", "nope"]),
        missing_key="nope",
        state_keys=["mappings", "field_keys", "n_cats_per_key"],
    ),
    "numerical_joint": Case(
        lambda: NumericalJointObsField("extra_continuous_covs", ["cont_cov", "size"]),
        "obsm",
        "_scvi_extra_continuous_covs",
        {"n_extra_continuous_covs": 2},
        [["adata.obs['cont_cov']"], ["adata.obs['size']"]],
        missing=lambda: NumericalJointObsField("extra_continuous_covs", ["nope"]),
        missing_key="nope",
        state_keys=["columns"],
    ),
    "obsm": Case(
        lambda: ObsmField(
            "proteins", "protein_expression", colnames_uns_key="protein_names", is_count_data=True
        ),
        "obsm",
        "protein_expression",
        {"n_proteins": 100},
        None,
        missing=lambda: ObsmField("proteins", "absent_obsm"),
        missing_key="absent_obsm",
        state_keys=["column_names"],
    ),
    "labels_unlabeled": Case(
        lambda: LabelsWithUnlabeledObsField("labels", "lab", "Unknown"),
        "obs",
        "_scvi_labels",
        {"n_labels": 4},
        [
            ["adata.obs['lab']", "label_2", "0"],
            ["", "label_0", "1"],
            ["", "label_1", "2"],
            ["", "Unknown", "3"],
        ],
        missing=lambda: LabelsWithUnlabeledObsField("labels", "absent_col", "Unknown"),
        missing_key="absent_col",
        state_keys=["categorical_mapping", "original_key", "unlabeled_category"],
    ),
    "string_uns": Case(
        lambda: StringUnsField("minify_type", "mtype"),
        "uns",
        "mtype",
        {},
        None,
        missing=lambda: StringUnsField("minify_type", "absent_uns"),
        missing_key="absent_uns",
    ),
}


@pytest.fixture(params=sorted(CASES))
def case_id(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def case(case_id: str) -> Case:
    return CASES[case_id]


@pytest.fixture
def prepared(seed_adata: ad.AnnData) -> ad.AnnData:
    return prepare(seed_adata)


# --- helpers -------------------------------------------------------------------------------------
def normalise(value: Any) -> Any:
    """Comparable plain form of a state value; arrays keep a marker so lists != arrays."""
    if isinstance(value, np.ndarray):
        return ("ndarray", [normalise(v) for v in value.tolist()])
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def table_text(table: Any) -> str:
    from rich.console import Console

    console = Console(record=True, width=200, file=io.StringIO())
    console.print(table)
    return console.export_text()


def body_rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip()[1:-1].split("│")]
        for line in text.splitlines()
        if line.strip().startswith("│")
    ]


def encoded(adata: Any, attr_name: str, attr_key: str) -> np.ndarray:
    """An encoded column/matrix as a user reads it back (``anndata.read_zarr`` for stores)."""
    user = ad.read_zarr(adata.path) if isinstance(adata, LazyAnnData) else adata
    value = getattr(user, attr_name)[attr_key]
    return np.asarray(value)


def register(case: Case, adata: Any) -> tuple[BaseAnnDataField, dict]:
    f = case.make()
    f.validate_field(adata)
    return f, f.register_field(adata)


# --- the contract --------------------------------------------------------------------------------
def test_properties(case: Case) -> None:
    f = case.make()
    assert isinstance(f, BaseAnnDataField)
    assert f.attr_name == case.attr_name
    assert f.attr_key == case.attr_key
    assert f.is_empty is False
    assert isinstance(f.registry_key, str)
    assert f.registry_key
    assert f.get_data_registry() == {"attr_name": case.attr_name, "attr_key": case.attr_key}
    assert f.registry_key in repr(f)


@pytest.mark.parametrize(
    "empty",
    [
        lambda: NumericalObsField("size_factor", None, required=False),
        lambda: StringUnsField("minify_type", None, required=False),
        lambda: CategoricalJointObsField("extra_categorical_covs", None),
        lambda: NumericalJointObsField("extra_continuous_covs", []),
    ],
    ids=["numerical", "string_uns", "categorical_joint", "numerical_joint"],
)
def test_empty_fields_register_nothing(
    empty: Callable[[], BaseAnnDataField], backing: Any, backing_kind: str
) -> None:
    from atlasloader import AnnDataManager

    f = empty()
    assert f.is_empty
    assert f.get_data_registry() == {}
    manager = AnnDataManager(fields=[LayerField("X", None), f])
    manager.register_fields(backing)
    fr = manager.registry["field_registries"][f.registry_key]
    assert fr["data_registry"] == {}
    assert f.registry_key not in manager.data_registry
    written = [*backing.obs.columns, *backing.obsm.keys()]
    assert not [k for k in written if k.startswith("_scvi_")]


def test_validate_register_summary_table(
    case: Case, prepared: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    adata = to_backing(prepared, backing_kind)
    f, state = register(case, adata)
    assert isinstance(state, dict)
    assert list(state) == case.state_keys
    assert f.get_summary_stats(state) == case.stats
    table = f.view_state_registry(state)
    if case.table_rows is None:
        assert table is None
    else:
        text = table_text(table)
        assert f"{f.registry_key} State Registry" in " ".join(text.split())  # title may wrap
        assert body_rows(text) == case.table_rows


@pytest.mark.parametrize("missing_id", sorted(k for k, c in CASES.items() if c.missing))
def test_missing_key_names_it(
    missing_id: str, prepared: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    case = CASES[missing_id]
    assert case.missing is not None
    adata = to_backing(prepared, backing_kind)
    f = case.missing()
    with pytest.raises(KeyError, match=case.missing_key) as info:
        f.register_field(adata)
    assert isinstance(info.value, MissingKeyError)
    assert "adata." in str(info.value)
    written = [*adata.obs.columns, *adata.obsm.keys()]
    assert not [k for k in written if k.startswith("_scvi_")]  # nothing written


def test_same_state_and_data_on_both_backings(
    case: Case, prepared: ad.AnnData, store_kind: str, to_backing: Callable[..., Any]
) -> None:
    mem = to_backing(prepared, "memory")
    store = to_backing(prepared, store_kind)
    f_mem, state_mem = register(case, mem)
    f_store, state_store = register(case, store)
    assert normalise(state_mem) == normalise(state_store)
    assert f_mem.get_summary_stats(state_mem) == f_store.get_summary_stats(state_store)
    if case.table_rows is not None:
        assert table_text(f_mem.view_state_registry(state_mem)) == table_text(
            f_store.view_state_registry(state_store)
        )
    for attr_name, attr_key in f_store.output_locations():
        assert attr_key is not None
        a = encoded(mem, attr_name, attr_key)
        b = encoded(store, attr_name, attr_key)
        assert a.shape == b.shape
        assert a.shape[0] == prepared.n_obs
        np.testing.assert_array_equal(a, b)
        if attr_name == "obs":
            assert a.dtype == b.dtype, (a.dtype, b.dtype)


def test_transfer(
    case: Case,
    prepared: ad.AnnData,
    seed_factory: Callable[..., ad.AnnData],
    backing_kind: str,
    to_backing: Callable[..., Any],
) -> None:
    ref = to_backing(prepared, backing_kind, name="ref")
    _, state = register(case, ref)
    query = to_backing(prepare(seed_factory(seed=3)), backing_kind, name="query")
    g = case.make()
    new_state = g.transfer_field(state, query)
    assert normalise(new_state) == normalise(state)
    assert g.get_summary_stats(new_state) == case.stats
    for attr_name, attr_key in g.output_locations():
        assert attr_key is not None
        codes = encoded(query, attr_name, attr_key)
        assert codes.shape[0] == query.shape[0]
    if isinstance(g, CategoricalObsField) and not g.is_default:
        source = encoded(query, "obs", g._original_attr_key)
        codes = encoded(query, "obs", g.attr_key)
        mapping = np.asarray(new_state["categorical_mapping"])
        np.testing.assert_array_equal(mapping[codes], source.astype(object))


def test_json_round_trip(
    case: Case, prepared: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    adata = to_backing(prepared, backing_kind)
    _, state = register(case, adata)
    text = json.dumps(to_jsonable(state))
    back = from_jsonable(json.loads(text))
    assert normalise(back) == normalise(state)
    assert list(back) == list(state)
    for key, value in state.items():
        assert type(back[key]) is type(value), key
        if isinstance(value, np.ndarray):
            assert back[key].dtype == value.dtype, key
