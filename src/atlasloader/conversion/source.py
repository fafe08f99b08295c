"""Read the input of :func:`atlasloader.convert` (``.h5ad`` or AnnData Zarr) in row blocks.

Both kinds of input are walked through the same small interface: a :class:`Source` names the
elements, and a :class:`SourceMatrix` returns rows ``start:stop`` of ``X``, a layer, an obsm
or obsp array, as a dense block or as the three CSR arrays of those rows. Nothing reads a
whole matrix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InvalidTypeError, NotAnnDataStoreError, StoreError
from ..store.open import is_url

ACCEPTED = (
    "an .h5ad file (HDF5, as written by anndata's write_h5ad) or an AnnData Zarr store "
    "(a directory or URL, Zarr format 2 or 3, as written by anndata's write_zarr)"
)

# A CSR row block: row pointers starting at 0 (int64, one more than the rows), data, indices.
CsrBlock = tuple[np.ndarray, np.ndarray, np.ndarray]


def _attr_str(attrs: Any, name: str) -> str | None:
    value = attrs.get(name)
    if value is None:
        return None
    # h5py returns bytes for attributes written by some older writers.
    return value.decode() if isinstance(value, bytes) else str(value)


def node_encoding(node: Any) -> str | None:
    """The anndata ``encoding-type`` of a Zarr or HDF5 node, if any.

    Files written by anndata < 0.7 mark sparse groups with ``h5sparse_format`` only.
    """
    enc = _attr_str(node.attrs, "encoding-type")
    if enc is None:
        legacy = _attr_str(node.attrs, "h5sparse_format")
        if legacy in ("csr", "csc"):
            return f"{legacy}_matrix"
    return enc


def is_array(node: Any) -> bool:
    """True for a Zarr array or an HDF5 dataset (as opposed to a group)."""
    return hasattr(node, "shape") and hasattr(node, "dtype") and not hasattr(node, "keys")


@dataclass
class SourceMatrix:
    """Row access to one stored matrix of the input (``X``, a layer, an obsm/obsp array).

    Parameters
    ----------
    where
        Location for messages, e.g. ``"adata.layers['counts']"``.
    format
        ``"csr"`` or ``"dense"``.
    shape, dtype, nnz
        Matrix metadata (``nnz`` is the number of stored values; for dense, the size).
    node
        The underlying HDF5/Zarr node.
    kind
        ``"h5ad"`` or ``"zarr"``.
    """

    where: str
    format: Literal["csr", "dense"]
    shape: tuple[int, ...]
    dtype: np.dtype
    nnz: int
    node: Any
    kind: Literal["h5ad", "zarr"]
    _lazy: Any = None

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    def read_dense(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of a dense matrix."""
        if self._lazy is not None:
            return np.asarray(self._lazy.read_rows(start, stop))
        return np.asarray(self.node[start:stop])

    def read_indptr(self, start: int, stop: int) -> np.ndarray:
        """Row pointers ``start:stop + 1`` of a CSR matrix (int64, as stored)."""
        if self._lazy is not None:
            return np.asarray(self._lazy._indptr_slice(start, stop), dtype=np.int64)
        return np.asarray(self.node["indptr"][start : stop + 1], dtype=np.int64)

    def read_csr(self, start: int, stop: int) -> CsrBlock:
        """Rows ``start:stop`` of a CSR matrix as ``(indptr from 0, data, indices)``."""
        if self._lazy is not None:
            block = self._lazy.read_rows(start, stop)
            return np.asarray(block.indptr, dtype=np.int64), block.data, block.indices
        # h5py: one read of the row pointers, then one contiguous read of data and indices.
        ptr = np.asarray(self.node["indptr"][start : stop + 1], dtype=np.int64)
        lo, hi = int(ptr[0]), int(ptr[-1])
        data = np.asarray(self.node["data"][lo:hi])
        indices = np.asarray(self.node["indices"][lo:hi])
        return ptr - lo, data, indices


class Source:
    """An opened ``.h5ad`` file or AnnData Zarr store.

    Parameters
    ----------
    path
        The input path (or URL, for Zarr).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.kind: Literal["h5ad", "zarr"]
        self._file: Any = None
        if is_url(self.path):
            self.kind = "zarr"
        else:
            p = Path(self.path)
            if not p.exists():
                msg = f"cannot convert {self.path!r}: the path does not exist"
                raise StoreError(msg)
            self.kind = "zarr" if p.is_dir() else "h5ad"
        self.root = self._open_h5ad() if self.kind == "h5ad" else self._open_zarr()

    def _open_h5ad(self) -> Any:
        import h5py

        try:
            is_hdf5 = h5py.is_hdf5(self.path)
        except OSError as e:
            msg = f"cannot read {self.path!r}: {e}"
            raise StoreError(msg) from e
        if not is_hdf5:
            msg = (
                f"{self.path!r} is neither an HDF5 file nor a directory; convert accepts {ACCEPTED}"
            )
            raise NotAnnDataStoreError(msg)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as e:
            msg = f"cannot open the HDF5 file {self.path!r}: {e}"
            raise StoreError(msg) from e
        root = self._file
        if "obs" not in root or "var" not in root:
            members = sorted(root.keys())[:8]
            self.close()
            msg = (
                f"{self.path!r} is an HDF5 file but not AnnData (no obs/var groups; members "
                f"{members}); convert accepts {ACCEPTED}"
            )
            raise NotAnnDataStoreError(msg)
        return root

    def _open_zarr(self) -> Any:
        from ..store.open import open_root

        try:
            return open_root(self.path, mode="r")
        except NotAnnDataStoreError as e:
            msg = f"{e}; convert accepts {ACCEPTED}"
            raise NotAnnDataStoreError(msg) from e

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- elements -----------------------------------------------------------------------------
    def members(self, group: str = "") -> list[str]:
        node = self.root[group] if group else self.root
        return sorted(node.keys()) if hasattr(node, "keys") else []

    def node(self, path: str) -> Any:
        return self.root[path]

    def has(self, path: str) -> bool:
        return path in self.root

    def read_elem(self, path: str) -> Any:
        from ..store.elements import read_elem

        return read_elem(self.root[path])

    def matrix(self, path: str, where: str) -> SourceMatrix | None:
        """The element at ``path`` as a streamable matrix, or None if it is not one.

        Not streamable (and copied whole with anndata's ``read_elem``/``write_elem``):
        dataframes, string arrays and other encodings. CSC raises, because reading it by rows
        would read the whole matrix once per block.
        """
        node = self.root[path]
        enc = node_encoding(node)
        if enc == "csc_matrix":
            msg = (
                f"{where} (key {path!r} in {self.path!r}) is stored as CSC (column-major), "
                "which cannot be converted row block by row block without reading the whole "
                "matrix once per block. Make it CSR first (in memory with anndata: "
                "matrix.tocsr(), then write_h5ad/write_zarr) and convert that"
            )
            raise InvalidTypeError(msg)
        if enc == "csr_matrix":
            shape = tuple(int(s) for s in node.attrs["shape"])
            dtype = np.dtype(node["data"].dtype)
            # The values in use end at indptr[-1] (scipy allows longer data arrays).
            ptr = node["indptr"]
            nnz = int(ptr[-1]) - int(ptr[0]) if ptr.shape[0] else 0
            lazy = self._lazy(node, where)
            return SourceMatrix(where, "csr", shape, dtype, nnz, node, self.kind, lazy)
        if is_array(node) and enc in (None, "array") and len(node.shape) >= 1:
            dtype = np.dtype(node.dtype)
            if dtype.kind not in "biufc":  # strings, objects: anndata copies them whole
                return None
            shape = tuple(int(s) for s in node.shape)
            size = int(np.prod(shape))
            lazy = self._lazy(node, where)
            return SourceMatrix(where, "dense", shape, dtype, size, node, self.kind, lazy)
        return None

    def _lazy(self, node: Any, where: str) -> Any:
        # Zarr input goes through the loader's own reader (one read per underlying array, and
        # errors that name the corrupt chunk); h5py nodes are sliced directly.
        if self.kind != "zarr":
            return None
        from ..store.matrix import LazyMatrix

        return LazyMatrix(node, where=where)
