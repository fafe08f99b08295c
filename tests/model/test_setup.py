"""The seed tutorial's ``SCVI.setup_anndata`` section, on in-memory AnnData and Zarr stores."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import atlasloader
from atlasloader import AnnDataLoader, AnnDataManager
from atlasloader.errors import AtlasLoaderError, NotRegisteredError
from atlasloader.fields import CategoricalObsField, LayerField
from atlasloader.model import SCVI, PoissonAE, SetupMixin

from .conftest import BACKINGS, seed_setup_adata, synthetic, write_store

SETUP_KWARGS = {
    "layer": "raw_counts",
    "batch_key": "batch",
    "labels_key": "labels",
    "size_factor_key": None,
    "categorical_covariate_keys": ["my_categorical_covariate"],
    "continuous_covariate_keys": ["my_continuous_covariate"],
}

SUMMARY_ROWS = [
    ["Summary Stat Key", "Value"],
    ["n_cells", "400"],
    ["n_vars", "100"],
    ["n_batch", "2"],
    ["n_labels", "3"],
    ["n_extra_categorical_covs", "1"],
    ["n_extra_continuous_covs", "1"],
]
DATA_REGISTRY_ROWS = [
    ["Registry Key", "scvi-tools Location"],
    ["X", "adata.layers['raw_counts']"],
    ["batch", "adata.obs['_scvi_batch']"],
    ["labels", "adata.obs['_scvi_labels']"],
    ["extra_categorical_covs", "adata.obsm['_scvi_extra_categorical_covs']"],
    ["extra_continuous_covs", "adata.obsm['_scvi_extra_continuous_covs']"],
]
STATE_ROWS = [
    ["Source Location", "Categories", "scvi-tools Encoding"],
    ["adata.obs['batch']", "batch_0", "0"],
    ["", "batch_1", "1"],
    ["Source Location", "Categories", "scvi-tools Encoding"],
    ["adata.obs['labels']", "label_0", "0"],
    ["", "label_1", "1"],
    ["", "label_2", "2"],
    ["Source Location", "Categories", "scvi-tools Encoding"],
    ["adata.obs['my_categorical_covariate']", "A", "0"],
    ["", "B", "1"],
    ["", "", ""],
    ["Source Location"],
    ["adata.obs['my_continuous_covariate']"],
]


def setup(adata, cls: type[SCVI] = SCVI) -> SCVI:
    cls.setup_anndata(adata, **SETUP_KWARGS)
    return cls(adata)


@pytest.mark.parametrize("kind", BACKINGS)
def test_view_anndata_setup_as_in_the_seed(on_backing, printed, rows_of, kind: str) -> None:
    adata = on_backing(seed_setup_adata(), kind)
    model = setup(adata)
    text = printed(model.view_anndata_setup)

    lines = [line.strip() for line in text.splitlines()]
    assert lines[0].startswith("Anndata setup with atlasloader version")
    assert "Setup via `SCVI.setup_anndata` with arguments:" in lines
    for key, value in SETUP_KWARGS.items():
        assert any(line.startswith(f"│   {key!r}: {value!r}") for line in text.splitlines()), key
    for title in (
        "Summary Statistics",
        "Data Registry",
        "batch State Registry",
        "labels State Registry",
        "extra_categorical_covs State Registry",
        "extra_continuous_covs State Registry",
    ):
        assert title in lines
    rows = rows_of(text)
    assert rows == SUMMARY_ROWS + DATA_REGISTRY_ROWS + STATE_ROWS


def test_view_is_identical_on_every_backing(on_backing, printed) -> None:
    source = seed_setup_adata()
    texts = {}
    for kind in BACKINGS:
        model = setup(on_backing(source, kind))
        texts[kind] = printed(model.view_anndata_setup)
    assert texts["memory"] == texts["zarr2"] == texts["zarr3"]
    assert "adata.layers['raw_counts']" in texts["memory"]


@pytest.mark.parametrize("kind", BACKINGS)
def test_registry_contents(on_backing, kind: str) -> None:
    model = setup(on_backing(seed_setup_adata(), kind))
    manager = model.adata_manager
    assert dict(model.summary_stats) == {
        "n_cells": 400,
        "n_vars": 100,
        "n_batch": 2,
        "n_labels": 3,
        "n_extra_categorical_covs": 1,
        "n_extra_continuous_covs": 1,
    }
    registry = manager.registry
    assert registry["model_name"] == "SCVI"
    assert registry["setup_args"] == SETUP_KWARGS
    dr = manager.data_registry
    assert list(dr.keys()) == [
        "X",
        "batch",
        "labels",
        "extra_categorical_covs",
        "extra_continuous_covs",
    ]
    assert dr.X.attr_name == "layers"
    assert dr.X.attr_key == "raw_counts"
    assert dr.extra_categorical_covs.attr_name == "obsm"
    batch_state = manager.get_state_registry("batch")
    assert list(batch_state.categorical_mapping) == ["batch_0", "batch_1"]
    assert batch_state.original_key == "batch"


@pytest.mark.parametrize("kind", BACKINGS)
def test_hide_state_registries(on_backing, printed, rows_of, kind: str) -> None:
    model = setup(on_backing(seed_setup_adata(), kind))
    text = printed(lambda: model.view_anndata_setup(hide_state_registries=True))
    assert "State Registry" not in text
    assert rows_of(text) == SUMMARY_ROWS + DATA_REGISTRY_ROWS


@pytest.mark.parametrize("kind", BACKINGS)
def test_loaded_tensors_follow_the_registry(on_backing, kind: str) -> None:
    source = seed_setup_adata()
    model = setup(on_backing(source, kind))
    batch = next(iter(AnnDataLoader(model.adata_manager, batch_size=400, shuffle=False)))
    assert set(batch) == {"X", "batch", "labels", "extra_categorical_covs", "extra_continuous_covs"}
    np.testing.assert_array_equal(batch["X"].numpy(), np.asarray(source.layers["raw_counts"]))
    np.testing.assert_array_equal(
        batch["batch"].numpy().ravel(), source.obs["batch"].cat.codes.to_numpy()
    )
    np.testing.assert_array_equal(
        batch["extra_categorical_covs"].numpy().ravel(), np.repeat([0, 1], 200)
    )
    np.testing.assert_array_equal(
        batch["extra_continuous_covs"].numpy().ravel(),
        source.obs["my_continuous_covariate"].to_numpy().astype(np.float32),
    )


# --- manager store ------------------------------------------------------------------------------
def test_manager_store_is_per_class(on_backing) -> None:
    class FirstModel(SCVI):
        pass

    class SecondModel(SCVI):
        pass

    adata = on_backing(seed_setup_adata(), "memory")
    FirstModel.setup_anndata(adata, batch_key="batch")
    first = FirstModel(adata)
    assert first.summary_stats["n_batch"] == 2
    assert first.adata_manager.registry["model_name"] == "FirstModel"

    uuid = first.adata_manager.adata_uuid
    assert uuid in FirstModel._setup_adata_manager_store
    assert uuid not in SecondModel._setup_adata_manager_store
    assert uuid not in SCVI._setup_adata_manager_store
    with pytest.raises(NotRegisteredError, match=r"SecondModel\.setup_anndata"):
        SecondModel(adata)


def test_store_per_class_on_mixin_subclasses(on_backing) -> None:
    class Tiny(SetupMixin):
        @classmethod
        def setup_anndata(cls, adata, layer=None):
            args = cls._get_setup_method_args(**locals())
            manager = AnnDataManager([LayerField("X", layer)], setup_method_args=args)
            manager.register_fields(adata)
            cls.register_manager(manager)

    class Other(SetupMixin):
        pass

    adata = on_backing(seed_setup_adata(), "zarr3")
    Tiny.setup_anndata(adata, layer="raw_counts")
    model = Tiny(adata)
    assert model.adata_manager.registry["setup_args"] == {"layer": "raw_counts"}
    assert Other._setup_adata_manager_store == {}
    with pytest.raises(NotRegisteredError):
        Other(adata)


@pytest.mark.parametrize("kind", BACKINGS)
def test_model_on_data_never_set_up(on_backing, kind: str) -> None:
    adata = on_backing(seed_setup_adata(seed=3), kind)
    with pytest.raises(NotRegisteredError, match="setup_anndata") as err:
        SCVI(adata)
    assert isinstance(err.value, AtlasLoaderError)
    assert "SCVI" in str(err.value)


@pytest.mark.parametrize("kind", BACKINGS)
def test_latest_setup_wins(on_backing, kind: str) -> None:
    adata = on_backing(seed_setup_adata(), kind)
    SCVI.setup_anndata(adata, layer="raw_counts")
    assert SCVI(adata).summary_stats["n_batch"] == 1
    SCVI.setup_anndata(adata, **SETUP_KWARGS)
    model = SCVI(adata)
    assert model.summary_stats["n_batch"] == 2
    assert model.adata_manager.registry["setup_args"] == SETUP_KWARGS


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("mode", ["r+", "r"])
def test_reopened_store_finds_registration(
    tmp_path: Path, printed, zarr_format: int, mode: str
) -> None:
    path = write_store(seed_setup_adata(), tmp_path / "seed.zarr", zarr_format)
    first = setup(atlasloader.read_lazy(path))
    before = printed(first.view_anndata_setup)

    reopened = atlasloader.read_lazy(path, mode=mode)
    model = SCVI(reopened)
    assert model.adata_manager.adata is reopened
    assert model.adata_manager.adata_uuid == first.adata_manager.adata_uuid
    assert dict(model.summary_stats) == dict(first.summary_stats)
    assert model.adata_manager.registry["setup_args"] == SETUP_KWARGS
    assert printed(model.view_anndata_setup) == before
    batch = next(
        iter(
            AnnDataLoader(
                model.adata_manager, batch_size=10, data_and_attributes={"batch": np.int64}
            )
        )
    )
    assert batch["batch"].ravel().tolist() == [0] * 10


# --- training -----------------------------------------------------------------------------------
def test_train_two_epochs_on_every_backing(on_backing) -> None:
    source = seed_setup_adata()
    histories = {}
    for kind in BACKINGS:
        model = setup(on_backing(source, kind), PoissonAE)
        history = model.train(max_epochs=2, batch_size=64, seed=0)
        assert len(history) == 2
        assert all(math.isfinite(v) for v in history)
        assert model.module is not None
        histories[kind] = history
    # Same data, seed and order on each backing: the same losses.
    np.testing.assert_allclose(histories["zarr2"], histories["memory"], rtol=1e-4)
    np.testing.assert_allclose(histories["zarr3"], histories["memory"], rtol=1e-4)


def test_training_reduces_the_loss(on_backing) -> None:
    model = setup(on_backing(seed_setup_adata(), "zarr3"), PoissonAE)
    history = model.train(max_epochs=6, batch_size=32, lr=1e-2, seed=0)
    assert history[-1] < history[0]


@pytest.mark.parametrize("kind", BACKINGS)
def test_seed_toy_linear_regression(on_backing, kind: str) -> None:
    """The seed's 'Using the DataLoader' loop: 10 genes, 3 labels, 5 iterations."""
    n_genes = 10
    try:
        from atlasloader.data import synthetic_iid

        source = synthetic_iid(n_genes=n_genes, n_labels=3, seed=0)
    except ImportError:  # pragma: no cover
        source = synthetic()[:, :n_genes].copy()
    adata = on_backing(source, kind)
    manager = AnnDataManager(
        fields=[
            LayerField(registry_key="x", layer=None, is_count_data=True),
            CategoricalObsField(registry_key="labels", obs_key="labels"),
        ]
    )
    manager.register_fields(adata)

    torch.manual_seed(0)
    linear_reg_model = torch.nn.Linear(n_genes, 1)
    loss_fn = torch.nn.MSELoss(reduction="sum")
    optim = torch.optim.Adam(linear_reg_model.parameters(), lr=0.05)

    def train(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        label_pred = linear_reg_model(x).squeeze(-1)
        loss = loss_fn(label_pred, labels.squeeze())
        optim.zero_grad()
        loss.backward()
        optim.step()
        return loss

    data_loader = AnnDataLoader(manager, batch_size=128, shuffle=True, drop_last=3)
    losses = []
    for _ in range(5):
        for data in data_loader:
            assert data["x"].shape[1] == n_genes
            loss = train(data["x"], data["labels"])
        losses.append(loss.item())
    assert len(losses) == 5
    assert all(math.isfinite(v) for v in losses)
    # The seed's losses fall by an order of magnitude; ours must at least fall.
    assert min(losses[1:]) < losses[0]


def test_setup_warns_on_non_count_layer(on_backing) -> None:
    adata = seed_setup_adata()
    adata.layers["raw_counts"] = adata.layers["raw_counts"] + 0.5
    store = on_backing(adata, "zarr3")
    with pytest.warns(UserWarning, match="count data"):
        SCVI.setup_anndata(store, layer="raw_counts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert SCVI(store).summary_stats["n_vars"] == 100


def test_setup_with_a_var_subset_trains_on_those_genes(tmp_path: Path) -> None:
    a = synthetic()
    a.var["highly_variable"] = np.arange(a.n_vars) % 4 == 0
    store = atlasloader.read_lazy(write_store(a, tmp_path / "hvg.zarr", zarr_format=3))
    PoissonAE.setup_anndata(store, batch_key="batch", var_subset="highly_variable")
    model = PoissonAE(store)
    assert model.summary_stats["n_vars"] == 25
    assert model.adata_manager.registry["setup_args"]["var_subset"] == "highly_variable"
    history = model.train(max_epochs=1, batch_size=128)
    assert len(history) == 1
    assert math.isfinite(history[0])
