"""Cases: loader arguments out of range, a query with new categories, h5ads of other genes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ... import errors as E
from .actions import _api_convert, _api_loader, _api_transfer, _store
from .build import _copy, _then
from .case import N_CELLS, N_GENES, Case


def _h5ads(base: Path) -> None:
    from ...data import make_atlas_h5ad

    (base / "in").mkdir(parents=True, exist_ok=True)
    small: dict[str, Any] = {"n_cells": 100, "nnz_per_cell": 5, "n_batches": 2, "n_labels": 2}
    small["chunk_rows"] = 32
    make_atlas_h5ad(base / "in/a.h5ad", n_genes=N_GENES, **small)
    make_atlas_h5ad(base / "in/b.h5ad", n_genes=N_GENES - 10, **small)


CASES: list[Case] = [
    # --- loader arguments ----------------------------------------------------------------------
    Case("loader_batch_size_zero", "arguments", _copy("registered"), _api_loader(batch_size=0),
         lambda base: ["bench", _store(base), "--batch-size", "0"], E.InvalidArgumentError,
         r"batch_size.*0", "AnnDataLoader(manager, batch_size=0)", cli_exit=2),
    Case("loader_rows_per_read_negative", "arguments", _copy("registered"),
         _api_loader(rows_per_read=-1), None, E.InvalidArgumentError, r"rows_per_read.*-1",
         "AnnDataLoader(manager, rows_per_read=-1)"),
    Case("loader_prefetch_negative", "arguments", _copy("registered"), _api_loader(prefetch=-1),
         None, E.InvalidArgumentError, r"prefetch.*-1", "AnnDataLoader(manager, prefetch=-1)"),
    Case("loader_indices_out_of_range", "arguments", _copy("registered"),
         _api_loader(indices=[0, N_CELLS + 7]), None, E.InvalidArgumentError, r"307",
         "AnnDataLoader(manager, indices=[0, 307])"),
    # --- transfer and convert ------------------------------------------------------------------
    Case("transfer_new_categories", "transfer",
         _then(_copy("registered"), _copy("query", "in/query.zarr")), _api_transfer(False),
         lambda base: ["transfer", str(base / "in/query.zarr"), "--reference", _store(base)],
         E.CategoryTransferError, r"batch.*(3|4)",
         "manager.transfer_fields(query, extend_categories=False)"),
    Case("convert_other_genes", "convert", _h5ads, _api_convert,
         lambda base: ["convert", str(base / "in/a.h5ad"), str(base / "in/b.h5ad"),
                       str(base / "out.zarr")],
         E.InvalidDataError, r"genes.*b\.h5ad.*a\.h5ad", "convert([a.h5ad, b.h5ad], out.zarr)"),
]  # fmt: skip
