"""Fields that write nothing: numerical obs columns and strings in ``uns``; and joint numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anndata as ad
import numpy as np
import pytest

from atlasloader import LazyAnnData
from atlasloader.errors import InvalidArgumentError, InvalidDataError, MissingKeyError
from atlasloader.fields import NumericalJointObsField, NumericalObsField, StringUnsField


def user_view(adata: Any) -> ad.AnnData:
    return ad.read_zarr(adata.path) if isinstance(adata, LazyAnnData) else adata


def test_numerical_needs_numbers(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    adata = to_backing(seed_adata, backing_kind)
    with pytest.raises(ValueError, match=r"adata\.obs\['batch'\]") as info:
        NumericalObsField("size_factor", "batch").register_field(adata)
    assert isinstance(info.value, InvalidDataError)
    assert "categorical field" in str(info.value)  # says what to do
    with pytest.raises(InvalidDataError, match="labels"):
        NumericalJointObsField("extra_continuous_covs", ["labels"]).register_field(adata)
    assert "_scvi_extra_continuous_covs" not in user_view(adata).obsm


def test_numerical_reads_column_in_place(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    data = seed_adata.copy()
    data.obs["lib"] = np.linspace(1.0, 2.0, 400)
    adata = to_backing(data, backing_kind)
    f = NumericalObsField("size_factor", "lib")
    assert f.register_field(adata) == {}
    assert f.get_data_registry() == {"attr_name": "obs", "attr_key": "lib"}
    assert list(user_view(adata).obs.columns) == ["batch", "labels", "lib"]


def test_joint_numerical_values(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    data = seed_adata.copy()
    data.obs["age"] = np.arange(400)
    data.obs["dose"] = np.linspace(0, 1, 400)
    adata = to_backing(data, backing_kind)
    state = NumericalJointObsField("covs", ["age", "dose"]).register_field(adata)
    assert list(state["columns"]) == ["age", "dose"]
    values = np.asarray(user_view(adata).obsm["_scvi_covs"], dtype=np.float64)
    np.testing.assert_allclose(values, np.stack([np.arange(400), np.linspace(0, 1, 400)], 1))


def test_string_uns(
    seed_adata: ad.AnnData, backing_kind: str, to_backing: Callable[..., Any]
) -> None:
    data = seed_adata.copy()
    data.uns["mtype"] = "latent_posterior_parameters"
    adata = to_backing(data, backing_kind)
    assert StringUnsField("minify_type", "mtype").register_field(adata) == {}
    with pytest.raises(InvalidDataError, match=r"adata\.uns\['protein_names'\] must be a string"):
        StringUnsField("minify_type", "protein_names").register_field(adata)
    with pytest.raises(MissingKeyError, match="absent"):
        StringUnsField("minify_type", "absent").register_field(adata)


def test_required_keys() -> None:
    with pytest.raises(ValueError, match="attr_key") as info:
        NumericalObsField("size_factor", None)
    assert isinstance(info.value, InvalidArgumentError)
    with pytest.raises(InvalidArgumentError, match="uns_key"):
        StringUnsField("minify_type", None)
