"""Gene subsets: a boolean ``var`` column or a list of gene names, resolved to positions.

One resolution for everything that selects genes by name: ``LayerField(var_subset=...)``
(registering, transferring) and ``convert(var_subset=...)`` (writing a store of those genes).
Imports numpy, pandas and :mod:`atlasloader.errors` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InvalidDataError, MissingKeyError, ShapeMismatchError


def positions_of(genes: Sequence[str], var_names: Any, where: str = "adata") -> np.ndarray:
    """Positions of ``genes`` (in their order) in ``var_names``; all must be there.

    Genes absent from a registration's data are a :class:`MissingKeyError` (keys the data does
    not hold); a query missing genes of its reference (``where="adata_target"``) is a
    :class:`ShapeMismatchError`, as scvi-tools' own transfer onto other genes.
    """
    pos = pd.Index(np.asarray(var_names).astype(str)).get_indexer(list(genes))
    if (pos < 0).any():
        missing = [g for g, p in zip(genes, pos) if p < 0]
        msg = (
            f"{len(missing)} gene(s) of the var_subset are not in {where}.var_names, e.g. "
            f"{missing[:5]}; register with genes the data holds"
        )
        if where == "adata_target":
            raise ShapeMismatchError(msg)
        raise MissingKeyError(msg)
    return pos.astype(np.int64)


def subset_positions(
    var: pd.DataFrame, subset: str | Sequence[str], where: str = "adata"
) -> np.ndarray:
    """Positions of the genes ``subset`` selects in ``var`` (a ``var`` DataFrame).

    ``subset`` is the name of a boolean column of ``var`` (e.g. ``"highly_variable"``, written
    by :func:`atlasloader.preprocess.preprocess`) or a list of gene names (kept in their order).
    """
    if isinstance(subset, str):
        if subset not in var.columns:
            msg = (
                f"var_subset column '{subset}' not found in {where}.var; available columns: "
                f"{list(var.columns)}. Run atlasloader.preprocess.preprocess(..., "
                "n_top_genes=...) to write 'highly_variable', or pass a list of genes"
            )
            raise MissingKeyError(msg)
        values = np.asarray(var[subset])
        if values.dtype != bool:
            msg = (
                f"var_subset column '{subset}' must be boolean (True for the genes to keep), "
                f"got dtype {values.dtype}"
            )
            raise InvalidDataError(msg)
        cols = np.flatnonzero(values)
        if cols.size == 0:
            raise InvalidDataError(f"var_subset column '{subset}' selects no genes")
        return cols.astype(np.int64)
    return positions_of([str(g) for g in subset], var.index, where)
