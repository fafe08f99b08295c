"""``LabelsWithUnlabeledObsField``: the unlabeled category always takes the last code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from atlasloader import AnnDataManager, LazyAnnData
from atlasloader.errors import CategoryTransferError, InvalidTypeError
from atlasloader.fields import LabelsWithUnlabeledObsField


def user_view(adata: Any) -> ad.AnnData:
    return ad.read_zarr(adata.path) if isinstance(adata, LazyAnnData) else adata


def labelled(adata: ad.AnnData, values: Any) -> ad.AnnData:
    adata = adata.copy()
    adata.obs["cell_type"] = values
    return adata


# Sorted, "Unknown" comes first; scvi-tools swaps it with the last category.
CELL_TYPES = np.array(["b_cell", "Unknown", "t_cell", "nk"] * 100)


def test_unlabeled_is_last(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    adata = to_backing(labelled(seed_adata, pd.Categorical(CELL_TYPES)), backing_kind)
    manager = AnnDataManager(fields=[LabelsWithUnlabeledObsField("labels", "cell_type", "Unknown")])
    manager.register_fields(adata)
    state = manager.get_state_registry("labels")
    mapping = list(state.categorical_mapping)
    assert mapping[-1] == "Unknown"
    assert mapping == ["t_cell", "b_cell", "nk", "Unknown"]  # scvi-tools' swap
    assert state.unlabeled_category == "Unknown"
    assert state.original_key == "cell_type"
    assert manager.summary_stats.n_labels == 4
    codes = np.asarray(user_view(adata).obs["_scvi_labels"])
    np.testing.assert_array_equal(np.asarray(mapping, dtype=object)[codes], CELL_TYPES)
    assert (codes[CELL_TYPES == "Unknown"] == 3).all()


def test_unlabeled_absent_is_appended(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    values = np.array(["B", "T"] * 200)
    adata = to_backing(labelled(seed_adata, values), backing_kind)
    state = LabelsWithUnlabeledObsField("labels", "cell_type", "Unknown").register_field(adata)
    assert list(state["categorical_mapping"]) == ["B", "T", "Unknown"]
    codes = np.asarray(user_view(adata).obs["_scvi_labels"])
    assert set(codes.tolist()) == {0, 1}


def test_transfer_keeps_reference_mapping(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    f = LabelsWithUnlabeledObsField("labels", "cell_type", "Unknown")
    state = f.register_field(to_backing(labelled(seed_adata, CELL_TYPES), backing_kind, name="r"))
    query_values = np.array(["nk", "Unknown"] * 200)
    query = to_backing(labelled(seed_adata, query_values), backing_kind, name="q")
    new = f.transfer_field(state, query)
    assert list(new["categorical_mapping"]) == list(state["categorical_mapping"])
    codes = np.asarray(user_view(query).obs["_scvi_labels"])
    np.testing.assert_array_equal(codes, np.tile([2, 3], 200))

    novel = to_backing(labelled(seed_adata, np.array(["nk", "Mono"] * 200)), backing_kind, name="n")
    with pytest.raises(CategoryTransferError, match="Mono"):
        f.transfer_field(state, novel, extend_categories=True)  # labels never extend
    assert "_scvi_labels" not in user_view(novel).obs


def test_allow_missing_labels(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    f = LabelsWithUnlabeledObsField("labels", "cell_type", "Unknown")
    state = f.register_field(to_backing(labelled(seed_adata, CELL_TYPES), backing_kind, name="r"))
    query = to_backing(seed_adata, backing_kind, name="q")  # no cell_type column
    if backing_kind == "memory":
        with pytest.warns(UserWarning, match="Missing labels key cell_type"):
            new = f.transfer_field(state, query, allow_missing_labels=True)
        assert list(new["categorical_mapping"]) == list(state["categorical_mapping"])
        assert (query.obs["_scvi_labels"] == 3).all()
    else:
        with pytest.raises(TypeError, match="cell_type") as info:
            f.transfer_field(state, query, allow_missing_labels=True)
        assert isinstance(info.value, InvalidTypeError)
        assert "cell_type" not in user_view(query).obs
    with pytest.raises(KeyError, match="cell_type"):
        f.transfer_field(state, to_backing(seed_adata, backing_kind, name="q2"))
