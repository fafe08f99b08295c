"""Preprocessing passes for batch scripts, computed chunk-wise with dask and persisted.

:func:`preprocess` computes, in one pass over ``X`` (or a layer), per-cell library sizes and
size factors, per-gene means, variances and detection counts, and, when ``n_top_genes`` is
given, Seurat v3 highly variable genes (a second pass only where values exceed their clip);
it writes them into the store as ordinary anndata ``obs``/``var`` columns, never replacing a
user's column, and reuses them on a second call with unchanged data. The loader restricts
``X`` to the selected genes with ``LayerField(..., var_subset="highly_variable")``; the size
factors register with ``NumericalObsField("size_factor", "size_factor")``.

The compute-only functions return DataFrames and write nothing:

* :func:`library_size`: ``total_counts``, ``n_genes_by_counts``, ``size_factor``;
* :func:`gene_stats`: ``mean_counts``, ``var_counts``, ``n_cells_by_counts``;
* :func:`highly_variable_genes`: ``highly_variable``, ``highly_variable_rank``,
  ``variances_norm`` (and ``highly_variable_nbatches`` with a batch key).

Modules: :mod:`.source` (row blocks read inside tasks), :mod:`.graph` (dask plumbing),
:mod:`.stats` (the statistics pass), :mod:`.loess` (:func:`~.loess.loess`), :mod:`.hvg`
(Seurat v3 selection),
:mod:`.persist` (atomic writes and the "written by us" records), :mod:`.pipeline`.

Imports: preprocess may import :mod:`atlasloader.fields`, :mod:`atlasloader.store`,
:mod:`atlasloader.reading`, the cluster helpers and errors; only the CLI and the root import
it.

Examples
--------
>>> import atlasloader
>>> from atlasloader.preprocess import preprocess
>>> out = preprocess("atlas.zarr", n_top_genes=2000, batch_key="batch")  # doctest: +SKIP
>>> adata = atlasloader.read_lazy("atlas.zarr")  # doctest: +SKIP
>>> adata.obs["size_factor"].median()  # doctest: +SKIP
1.0
"""

from __future__ import annotations

from .hvg import highly_variable_genes
from .pipeline import preprocess
from .stats import gene_stats, library_size

__all__ = ["gene_stats", "highly_variable_genes", "library_size", "preprocess"]
