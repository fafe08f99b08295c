"""Cases: paths that are not (or not only) AnnData Zarr stores, Zarr v2, stale consolidation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ... import errors as E
from .actions import _SETUP, _api_setup, _cli_setup
from .build import _copy, _then, _zarr_edit
from .case import STORE, Case


def _make_h5ad_as_zarr(base: Path) -> None:
    from ...data import make_atlas_h5ad

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


def _column_after_consolidation(root: Any) -> None:
    import anndata as ad

    ad.io.write_elem(root["obs"], "donor", ad.io.read_elem(root["obs/labels"]))
    order = list(root["obs"].attrs["column-order"])
    root["obs"].attrs["column-order"] = [*order, "donor"]


CASES: list[Case] = [
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
]  # fmt: skip
