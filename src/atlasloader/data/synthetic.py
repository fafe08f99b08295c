"""In-memory synthetic AnnData mirroring ``scvi.data.synthetic_iid``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ..errors import InvalidArgumentError
from ._model import check_int

__all__ = ["synthetic_iid"]

SPARSE_FORMATS = ("csr_matrix", "csc_matrix", "csr_array", "csc_array")


def synthetic_iid(
    batch_size: int = 200,
    n_genes: int = 100,
    n_proteins: int = 100,
    n_regions: int = 0,
    n_batches: int = 2,
    n_labels: int = 3,
    dropout_ratio: float = 0.7,
    sparse_format: str | None = None,
    generate_coordinates: bool = False,
    seed: int | np.random.Generator | None = None,
) -> AnnData:
    """Synthetic count data with batches, labels and protein counts, as in scvi-tools.

    Counts are negative binomial (``n=5, p=0.3``) multiplied by a Bernoulli mask; as in
    scvi-tools, an entry is *kept* with probability ``dropout_ratio``.

    Parameters
    ----------
    batch_size
        Cells per batch; there are ``batch_size * n_batches`` cells.
    n_genes
        Columns of ``X`` (``var_names`` ``gene_0``, ...).
    n_proteins
        Columns of ``obsm['protein_expression']`` (0 for none); names in
        ``uns['protein_names']``.
    n_regions
        Columns of ``obsm['accessibility']`` (0 for none).
    n_batches
        Number of ``obs['batch']`` categories ``batch_0``, ...; cells of a batch are contiguous.
    n_labels
        Number of ``obs['labels']`` categories ``label_0``, ... drawn at random (0: no column).
    dropout_ratio
        Probability in [0, 1] that an entry of ``X`` (and accessibility) is kept.
    sparse_format
        ``None`` (dense arrays) or a scipy sparse class name (``"csr_matrix"``, ``"csc_matrix"``,
        ``"csr_array"``, ``"csc_array"``) for ``X`` and the ``obsm`` count matrices.
    generate_coordinates
        Add standard normal ``obsm['coordinates']`` of shape ``(n_cells, 2)``.
    seed
        Seed or generator for :func:`numpy.random.default_rng`; the global RNG is never used.

    Returns
    -------
    AnnData with ``float32`` integer counts in ``X``.

    Examples
    --------
    >>> adata = synthetic_iid(seed=0)
    >>> adata.shape, list(adata.obs.columns)
    ((400, 100), ['batch', 'labels'])
    """
    for name, value, minimum in (
        ("batch_size", batch_size, 1),
        ("n_genes", n_genes, 1),
        ("n_proteins", n_proteins, 0),
        ("n_regions", n_regions, 0),
        ("n_batches", n_batches, 1),
        ("n_labels", n_labels, 0),
    ):
        check_int(name, value, minimum)
    if not 0.0 <= float(dropout_ratio) <= 1.0:
        msg = f"dropout_ratio must be in [0, 1], got {dropout_ratio}"
        raise InvalidArgumentError(msg)
    if sparse_format is not None and sparse_format not in SPARSE_FORMATS:
        msg = f"sparse_format must be None or one of {SPARSE_FORMATS}, got {sparse_format!r}"
        raise InvalidArgumentError(msg)
    rng = np.random.default_rng(seed)
    n_obs = batch_size * n_batches

    def counts(n_vars: int, *, masked: bool) -> Any:
        values = rng.negative_binomial(5, 0.3, size=(n_obs, n_vars))
        if masked:
            values = values * rng.binomial(1, dropout_ratio, size=(n_obs, n_vars))
        return values

    def as_format(values: np.ndarray) -> Any:
        return values if sparse_format is None else getattr(sp, sparse_format)(values)

    x = as_format(counts(n_genes, masked=True).astype(np.float32))
    obs = pd.DataFrame(index=pd.Index(np.arange(n_obs).astype(str)))
    batch = np.repeat(np.arange(n_batches), batch_size)
    obs["batch"] = pd.Categorical.from_codes(batch, [f"batch_{i}" for i in range(n_batches)])
    if n_labels > 0:
        codes = rng.integers(0, n_labels, size=n_obs)
        obs["labels"] = pd.Categorical.from_codes(codes, [f"label_{i}" for i in range(n_labels)])
    var = pd.DataFrame(index=pd.Index([f"gene_{i}" for i in range(n_genes)]))
    adata = AnnData(x, obs=obs, var=var)
    if n_proteins > 0:
        adata.obsm["protein_expression"] = as_format(counts(n_proteins, masked=False))
        adata.uns["protein_names"] = np.array([f"protein_{i}" for i in range(n_proteins)])
    if n_regions > 0:
        adata.obsm["accessibility"] = as_format(counts(n_regions, masked=True))
    if generate_coordinates:
        adata.obsm["coordinates"] = rng.normal(size=(n_obs, 2))
    return adata
