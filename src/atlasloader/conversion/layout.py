"""Read back what :func:`atlasloader.convert` wrote: a matrix's layout, the original order."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import InvalidDataError, InvalidTypeError, MissingKeyError
from .obs import POSITION_KEY

__all__ = ["layout_of", "original_order"]


# --- reading back ------------------------------------------------------------------------------
def original_order(path: str | os.PathLike[str]) -> np.ndarray:
    """Rows of a converted store in the order of its inputs (undoes ``shuffle=True``).

    Parameters
    ----------
    path
        A store written by :func:`atlasloader.convert` (or any other AnnData Zarr store).

    Returns
    -------
    ``int64`` array ``order`` such that row ``order[i]`` of the store is cell ``i`` of the
    inputs (concatenated in order): ``adata[order]`` is in the input order. For a store
    written without ``shuffle`` (no ``obs["original_position"]``), ``arange(n_obs)``.

    Raises
    ------
    InvalidDataError
        ``obs["original_position"]`` is not a permutation of the rows.

    Examples
    --------
    >>> import anndata, tempfile
    >>> from atlasloader.data import make_atlas_h5ad
    >>> tmp = tempfile.mkdtemp()
    >>> h5ad = make_atlas_h5ad(tmp + "/a.h5ad", n_cells=100, n_genes=50, nnz_per_cell=5)
    >>> from atlasloader import convert
    >>> path = convert(h5ad, tmp + "/a.zarr", shuffle=True, seed=1)
    >>> adata = anndata.read_zarr(path)
    >>> list(adata[original_order(path)].obs_names[:3])
    ['cell_0', 'cell_1', 'cell_2']
    """
    from ..store.elements import read_elem
    from ..store.open import open_root

    root = open_root(path, mode="r")
    obs: Any = root["obs"]
    n = int(obs[obs.attrs.get("_index", "_index")].shape[0])
    if POSITION_KEY not in obs.attrs.get("column-order", []):
        return np.arange(n, dtype=np.int64)
    position = np.asarray(read_elem(obs[POSITION_KEY]))
    seen = np.zeros(n, dtype=bool)
    valid = position.shape == (n,) and position.dtype.kind in "iu"
    if valid and n:
        valid = bool(position.min() >= 0 and position.max() < n)
        if valid:
            seen[position] = True
            valid = bool(seen.all())
    if not valid:
        msg = (
            f"adata.obs[{POSITION_KEY!r}] of {str(path)!r} is not a permutation of its {n} rows, "
            "so the original order cannot be recovered (was the column changed, or the store "
            "subset or concatenated after shuffling?)"
        )
        raise InvalidDataError(msg)
    order = np.empty(n, dtype=np.int64)
    order[position] = np.arange(n, dtype=np.int64)
    return order


# --- layout -------------------------------------------------------------------------------------
def layout_of(path: str | os.PathLike[str], key: str = "X") -> dict[str, Any]:
    """How a matrix of an AnnData Zarr store is chunked, sharded and compressed.

    Parameters
    ----------
    path
        An AnnData Zarr store (any format or layout, not only converted ones).
    key
        The matrix: ``"X"``, ``"layers/counts"``, ``"obsm/X_pca"``, ``"raw/X"``...

    Returns
    -------
    A dict with ``zarr_format``, ``format`` (``"csr"``/``"dense"``), ``shape``, ``dtype``,
    ``nnz``, ``chunk_rows`` and ``shard_rows`` (rows per chunk and per shard; for CSR, derived
    from the mean values per row; ``shard_rows`` is None when unsharded), ``chunk_elems`` and
    ``shard_elems`` (lengths of the stored ``data`` chunks/shards), ``codec`` (``"lz4"``,
    ``"zstd"``, another name, or None), ``shuffle``, ``indices_dtype``, ``indptr_chunk``,
    ``indptr_shard`` and ``consolidated``.

    Examples
    --------
    >>> layout_of("atlas.zarr")  # doctest: +SKIP
    {'zarr_format': 3, 'format': 'csr', 'chunk_rows': 16, 'shard_rows': 5152, 'codec': 'lz4', ...}
    """
    from ..store.elements import encoding_type
    from ..store.open import open_root

    root = open_root(path, mode="r")
    if key not in root:
        msg = f"{key!r} not found in the store {str(path)!r}"
        raise MissingKeyError(msg)
    node: Any = root[key]
    enc = encoding_type(node)
    info: dict[str, Any] = {
        "zarr_format": int(root.metadata.zarr_format),
        "consolidated": root.metadata.consolidated_metadata is not None,
    }
    if enc == "csr_matrix" or enc == "csc_matrix":
        data: Any = node["data"]
        indptr: Any = node["indptr"]
        shape = tuple(int(s) for s in node.attrs["shape"])
        nnz = int(indptr[-1]) if indptr.shape[0] else 0
        per_row = max(nnz / max(1, shape[0]), 1e-12)
        chunk = int(data.chunks[0])
        shard = int(data.shards[0]) if data.shards else None
        info |= {
            "format": enc.removesuffix("_matrix"),
            "shape": shape,
            "dtype": str(data.dtype),
            "nnz": nnz,
            "chunk_rows": max(1, round(chunk / per_row)),
            "shard_rows": None if shard is None else max(1, round(shard / per_row)),
            "chunk_elems": chunk,
            "shard_elems": shard,
            "indices_dtype": str(node["indices"].dtype),
            "indptr_chunk": int(indptr.chunks[0]),
            "indptr_shard": int(indptr.shards[0]) if indptr.shards else None,
        }
        arr = data
    elif hasattr(node, "chunks"):
        arr = node
        chunk = int(arr.chunks[0])
        shard = int(arr.shards[0]) if arr.shards else None
        info |= {
            "format": "dense",
            "shape": tuple(int(s) for s in arr.shape),
            "dtype": str(arr.dtype),
            "nnz": int(np.prod(arr.shape, dtype=np.int64)),
            "chunk_rows": chunk,
            "shard_rows": shard,
            "chunk_elems": chunk,
            "shard_elems": shard,
            "indices_dtype": None,
            "indptr_chunk": None,
            "indptr_shard": None,
        }
    else:
        msg = f"{key!r} in {str(path)!r} has encoding {enc!r}; expected a matrix"
        raise InvalidTypeError(msg)
    info["codec"], info["shuffle"] = _codec_of(arr)
    return info


def _codec_of(arr: Any) -> tuple[str | None, str | None]:
    compressors = arr.compressors
    if not compressors:
        return None, None
    codec = compressors[0]
    kind = type(codec).__name__.lower().removesuffix("codec")
    if kind == "blosc":
        cname = getattr(codec.cname, "value", codec.cname)
        shuffle = getattr(codec.shuffle, "value", codec.shuffle)
        if isinstance(shuffle, int):  # numcodecs (Zarr v2) uses integers
            shuffle = {-1: "auto", 0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}.get(shuffle)
        return str(cname), None if shuffle is None else str(shuffle)
    return kind, None
