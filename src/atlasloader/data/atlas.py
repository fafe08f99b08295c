"""Synthetic atlases written straight to disk, a bounded number of rows at a time.

The data model is described in :mod:`atlasloader.data._model`: UMI counts drawn from skewed
(Zipf-like) gene weights, cell types and batch effects, cells grouped by batch in contiguous
blocks as in a concatenated atlas. Content depends only on ``seed`` and the shape arguments —
not on ``block_rows``, chunking, codec or file format — so a Zarr store and an ``.h5ad`` made
with the same seed hold the same data.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

import numpy as np

from ..errors import InvalidArgumentError
from ._model import AtlasModel, atlas_batch_layout, check_int
from ._writers import (
    ARRAY_ATTRS,
    CODECS,
    INDPTR_CHUNK,
    AlignedAppender,
    create_h5_dataset,
    create_zarr_array,
    stream_x,
    write_metadata,
)

__all__ = ["atlas_batch_layout", "make_atlas_h5ad", "make_atlas_store"]

CSR_ATTRS = {"encoding-type": "csr_matrix", "encoding-version": "0.1.0"}
# One stored X array: (name, shape, dtype, chunk length, bitshuffle?, grows?, values per row).
_Spec = tuple[str, tuple[int, ...], Any, int, bool, bool, int]


def _validate(
    n_cells: int,
    n_genes: int,
    n_batches: int,
    n_labels: int,
    nnz_per_cell: int,
    seed: int,
    block_rows: int,
    chunk_rows: int,
    codec: str | None,
    dtype: Any,
) -> np.dtype:
    for name, value, minimum in (
        ("n_cells", n_cells, 1),
        ("n_genes", n_genes, 1),
        ("n_batches", n_batches, 1),
        ("n_labels", n_labels, 1),
        ("nnz_per_cell", nnz_per_cell, 1),
        ("seed", seed, 0),
        ("block_rows", block_rows, 1),
        ("chunk_rows", chunk_rows, 1),
    ):
        check_int(name, value, minimum)
    if n_batches > n_cells:
        msg = f"n_batches ({n_batches}) must not exceed n_cells ({n_cells})"
        raise InvalidArgumentError(msg)
    if nnz_per_cell > max(1, n_genes // 2):
        msg = (
            f"nnz_per_cell ({nnz_per_cell}) must be at most half of n_genes ({n_genes}): "
            "denser cells would need huge library sizes under a skewed gene distribution"
        )
        raise InvalidArgumentError(msg)
    if codec not in CODECS:
        msg = f"codec must be one of {CODECS}, got {codec!r}"
        raise InvalidArgumentError(msg)
    try:
        np_dtype = np.dtype(dtype)
    except TypeError as e:
        msg = f"dtype must be a numeric dtype, got {dtype!r}"
        raise InvalidArgumentError(msg) from e
    if np_dtype.kind not in "fiu":
        msg = f"dtype must be a numeric (float or integer) dtype, got {dtype!r}"
        raise InvalidArgumentError(msg)
    return np_dtype


def _x_specs(
    n_cells: int, n_genes: int, nnz_per_cell: int, chunk_rows: int, dtype: np.dtype, dense: bool
) -> list[_Spec]:
    if dense:
        return [("X", (n_cells, n_genes), dtype, chunk_rows, False, False, 1)]
    chunk = chunk_rows * nnz_per_cell  # values of about chunk_rows cells
    # data/indices start empty and grow: their length is only known once generated.
    return [
        ("data", (0,), dtype, chunk, False, True, nnz_per_cell),
        ("indices", (0,), np.dtype(np.int32), chunk, True, True, nnz_per_cell),
        ("indptr", (n_cells + 1,), np.dtype(np.int64), INDPTR_CHUNK, False, False, 1),
    ]


def make_atlas_store(
    path: str | os.PathLike[str],
    n_cells: int = 100_000,
    n_genes: int = 2_000,
    n_batches: int = 10,
    n_labels: int = 8,
    nnz_per_cell: int = 200,
    seed: int = 0,
    block_rows: int = 16_384,
    chunk_rows: int = 256,
    shard_rows: int | None = None,
    codec: str | None = "lz4",
    zarr_format: int = 3,
    dense: bool = False,
    dtype: Any = "float32",
) -> str:
    """Write a synthetic atlas to an AnnData Zarr store without holding ``X`` in memory.

    ``X`` is CSR (``float32`` data, ``int32`` indices, ``int64`` indptr) of integer counts;
    ``obs`` has categorical ``batch`` (contiguous blocks) and ``labels``, and ``n_counts``.

    Parameters
    ----------
    path
        Directory of the store; an existing store there is replaced.
    n_cells, n_genes, n_batches, n_labels
        Shape and number of ``obs['batch']`` / ``obs['labels']`` categories.
    nnz_per_cell
        Mean number of detected genes per cell (at most ``n_genes // 2``).
    seed
        Non-negative integer; the same seed gives the same data whatever the other settings.
    block_rows
        Rows gathered before each write: bounds memory (about ``block_rows * nnz_per_cell``
        values per array, plus a few tiles of at most 4096 rows).
    chunk_rows
        Rows per chunk; CSR ``data``/``indices`` chunks hold ``chunk_rows * nnz_per_cell``.
    shard_rows
        Zarr v3 only: rows per shard (rounded up to whole chunks); ``None`` for no sharding.
    codec
        ``"lz4"`` (Blosc, shuffle; bitshuffle for indices), ``"zstd"`` (level 3) or ``None``.
    zarr_format
        2 or 3.
    dense
        Write ``X`` as a dense 2-D array chunked ``(chunk_rows, n_genes)`` (for small tests).
    dtype
        Dtype of the stored values (they are integer counts whatever the dtype).

    Returns
    -------
    The store path, as a string.

    Examples
    --------
    >>> import anndata, tempfile
    >>> path = make_atlas_store(tempfile.mkdtemp() + "/a.zarr", n_cells=500, n_genes=100,
    ...                         nnz_per_cell=20)
    >>> anndata.read_zarr(path).shape
    (500, 100)
    """
    import zarr

    np_dtype = _validate(
        n_cells, n_genes, n_batches, n_labels, nnz_per_cell, seed, block_rows, chunk_rows, codec,
        dtype,
    )  # fmt: skip
    if zarr_format not in (2, 3):
        msg = f"zarr_format must be 2 or 3, got {zarr_format!r}"
        raise InvalidArgumentError(msg)
    if shard_rows is not None:
        check_int("shard_rows", shard_rows, chunk_rows)
        if zarr_format != 3:
            msg = f"shard_rows={shard_rows} needs zarr_format=3 (Zarr v2 has no sharding)"
            raise InvalidArgumentError(msg)
    per_shard = None if shard_rows is None else -(-shard_rows // chunk_rows)
    model = AtlasModel(n_cells, n_genes, n_batches, n_labels, nnz_per_cell, seed)
    fmt: Literal[2, 3] = 3 if zarr_format == 3 else 2
    root = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    group = root
    if not dense:
        group = root.create_group("X")
        group.attrs.update({**CSR_ATTRS, "shape": [n_cells, n_genes]})
    appenders = {}
    for name, shape, dt, chunk, bitshuffle, grow, per_row in _x_specs(
        n_cells, n_genes, nnz_per_cell, chunk_rows, np_dtype, dense
    ):
        # indptr is small and read whole: it is never sharded.
        shard = None if per_shard is None or name == "indptr" else chunk * per_shard
        arr = create_zarr_array(
            group, name, shape=shape, dtype=dt, chunks=(chunk, *shape[1:]),
            shards=None if shard is None else (shard, *shape[1:]),
            codec=codec, zarr_format=zarr_format, bitshuffle=bitshuffle,
        )  # fmt: skip
        # Writes cover whole shards (or chunks): no chunk is ever read back and rewritten.
        appenders[name] = AlignedAppender(arr, shard or chunk, block_rows * per_row, grow=grow)
    if dense:
        appenders["X"].array.attrs.update(ARRAY_ATTRS)
    labels, n_counts = stream_x(model, appenders, np_dtype)
    write_metadata(root, model, labels, n_counts, zarr_v3=zarr_format == 3)
    with warnings.catch_warnings():
        # zarr notes that consolidated metadata is not in the v3 spec; anndata relies on it.
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        zarr.consolidate_metadata(root.store)  # as anndata's write_zarr: one metadata read
    return str(path)


def make_atlas_h5ad(
    path: str | os.PathLike[str],
    n_cells: int = 100_000,
    n_genes: int = 2_000,
    n_batches: int = 10,
    n_labels: int = 8,
    nnz_per_cell: int = 200,
    seed: int = 0,
    block_rows: int = 16_384,
    chunk_rows: int = 256,
    codec: str | None = "lz4",
    dense: bool = False,
    dtype: Any = "float32",
) -> str:
    """Write the same atlas as :func:`make_atlas_store` to an ``.h5ad`` file, in pieces.

    Arguments mean the same as for :func:`make_atlas_store` (there is no sharding or Zarr
    format). h5py has no lz4/zstd filter built in, so ``codec="lz4"`` uses HDF5 ``lzf`` and
    ``"zstd"`` uses ``gzip``; ``None`` stores uncompressed. An existing file is replaced.

    Examples
    --------
    >>> import anndata, tempfile
    >>> path = make_atlas_h5ad(tempfile.mkdtemp() + "/a.h5ad", n_cells=500, n_genes=100,
    ...                        nnz_per_cell=20)
    >>> anndata.read_h5ad(path).shape
    (500, 100)
    """
    import h5py

    np_dtype = _validate(
        n_cells, n_genes, n_batches, n_labels, nnz_per_cell, seed, block_rows, chunk_rows, codec,
        dtype,
    )  # fmt: skip
    model = AtlasModel(n_cells, n_genes, n_batches, n_labels, nnz_per_cell, seed)
    with h5py.File(path, "w") as f:
        group = f
        if not dense:
            group = f.create_group("X")
            group.attrs.update(CSR_ATTRS)
            group.attrs["shape"] = np.array([n_cells, n_genes], dtype=np.int64)
        appenders = {}
        for name, shape, dt, chunk, _, grow, per_row in _x_specs(
            n_cells, n_genes, nnz_per_cell, chunk_rows, np_dtype, dense
        ):
            ds = create_h5_dataset(
                group, name, shape=shape, dtype=dt, chunks=(chunk, *shape[1:]), codec=codec,
                grow=grow,
            )  # fmt: skip
            appenders[name] = AlignedAppender(ds, chunk, block_rows * per_row, grow=grow)
        if dense:
            appenders["X"].array.attrs.update(ARRAY_ATTRS)
        labels, n_counts = stream_x(model, appenders, np_dtype)
        write_metadata(f, model, labels, n_counts, zarr_v3=False)
    return str(path)
