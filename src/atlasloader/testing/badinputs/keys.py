"""Cases: obs, layer and registry keys that are missing, collide, or try to leave the store."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import errors as E
from .actions import _SETUP, _api_field, _api_manager, _api_setup, _cat, _cli_setup
from .build import _copy, _then, _zarr_edit
from .case import N_CELLS, Case


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


CASES: list[Case] = [
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
]  # fmt: skip
