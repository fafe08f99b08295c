"""SCVI and SCANVI encode the same labels differently in one ``obs/_scvi_labels``.

SCVI sorts the categories; SCANVI moves the unlabeled one last. Both persist their codes in the
same column of a store, so a registry must never read codes written with the other mapping:
each registration keeps the ownership token of the codes it read, ``validate()`` and the
loader compare it with the store (another process may have re-encoded the column), and a
stale registration is re-registered before any code is read.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import atlasloader
from atlasloader import AnnDataLoader
from atlasloader.errors import StaleRegistryError
from atlasloader.model import SCANVI, SCVI

from .conftest import synthetic, write_store

LABELS = np.array(["B cell", "Unknown", "T cell", "NK"])  # sorted: Unknown is not last


def _store(tmp_path: Path) -> Path:
    a = synthetic()
    rng = np.random.default_rng(0)
    a.obs["cell_type"] = pd.Categorical(LABELS[rng.integers(0, len(LABELS), a.n_obs)])
    return write_store(a, tmp_path / "atlas.zarr", zarr_format=3)


def _decoded_labels(manager) -> np.ndarray:
    loader = AnnDataLoader(manager, batch_size=64, data_and_attributes={"labels": np.int64})
    codes = np.concatenate([b["labels"].numpy().ravel() for b in loader])
    mapping = np.asarray(manager.get_state_registry("labels")["categorical_mapping"])
    return mapping[codes]


def _original(path: Path) -> np.ndarray:
    import anndata as ad

    return ad.read_zarr(path).obs["cell_type"].astype(str).to_numpy()


def _register_scanvi_in_another_process(path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import warnings; warnings.simplefilter("ignore")
        import atlasloader
        from atlasloader.model import SCANVI
        SCANVI.setup_anndata(atlasloader.read_lazy({str(path)!r}), "cell_type", "Unknown")
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_registration_replaced_by_another_process_is_re_registered(tmp_path: Path) -> None:
    path = _store(tmp_path)
    truth = _original(path)
    store = atlasloader.read_lazy(path)
    SCVI.setup_anndata(store, labels_key="cell_type")
    manager = SCVI(store).adata_manager
    scvi_mapping = list(manager.get_state_registry("labels")["categorical_mapping"])
    assert scvi_mapping == sorted(LABELS.tolist())
    np.testing.assert_array_equal(_decoded_labels(manager), truth)

    _register_scanvi_in_another_process(path)  # rewrites obs/_scvi_labels, unknown last

    # The other process's codes are on disk now: this registry notices ...
    assert manager.stale_encodings() == ["obs/_scvi_labels"]
    with pytest.raises(StaleRegistryError, match=r"obs/_scvi_labels"):
        manager.check_encodings()
    # ... and a loader re-registers before reading: every label is right (52.75 % were wrong).
    np.testing.assert_array_equal(_decoded_labels(manager), truth)
    assert manager.stale_encodings() == []
    assert list(manager.get_state_registry("labels")["categorical_mapping"]) == scvi_mapping


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_scvi_then_scanvi_on_one_store_each_read_their_own_codes(tmp_path: Path) -> None:
    """``SCANVI.from_scvi_model``'s workflow: SCVI's registry, then SCANVI's, on one store."""
    path = _store(tmp_path)
    truth = _original(path)
    store = atlasloader.read_lazy(path)
    SCVI.setup_anndata(store, labels_key="cell_type")
    scvi_manager = SCVI(store).adata_manager
    # A separately opened store, as a second script (or a DataModule) would open it.
    other = atlasloader.read_lazy(path)
    SCANVI.setup_anndata(other, "cell_type", "Unknown")
    scanvi_manager = SCANVI(other).adata_manager
    mapping = list(scanvi_manager.get_state_registry("labels")["categorical_mapping"])
    assert mapping[-1] == "Unknown"
    for manager in (scanvi_manager, scvi_manager, scanvi_manager):
        np.testing.assert_array_equal(_decoded_labels(manager), truth)
