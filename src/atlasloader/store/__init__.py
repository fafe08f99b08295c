"""Store access: open Zarr AnnData stores lazily, read columns as dask, write atomically."""

from .lazy import LazyAnnData, LazyFrame, read_lazy
from .matrix import LazyMatrix

__all__ = ["LazyAnnData", "LazyFrame", "LazyMatrix", "read_lazy"]
