"""Store access: open Zarr AnnData stores lazily, read columns as dask, write atomically.

The names below are imported on first use, so that reading the persisted records (``atlasloader
view``) does not pay for importing dask and pandas.

Modules: :mod:`.open` (roots, local or remote), :mod:`.lazy` and :mod:`.elements` (lazy
AnnData, obs/var columns as dask), :mod:`.matrix` (``X`` and layers), :mod:`.backing`, :mod:`.write`
(atomic, staged writes), :mod:`.records` and :mod:`.codec` (persisted registrations, their
JSON), :mod:`.lock` (the write lock).

Imports: store may import :mod:`atlasloader.reading` (row reads of ``X``) and
:mod:`atlasloader.errors`; never fields, the registry or the loader, which import it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lazy import LazyAnnData, LazyFrame, read_lazy
    from .matrix import LazyMatrix

_EXPORTS = {
    "LazyAnnData": ".lazy",
    "LazyFrame": ".lazy",
    "read_lazy": ".lazy",
    "LazyMatrix": ".matrix",
}

__all__ = ["LazyAnnData", "LazyFrame", "LazyMatrix", "read_lazy"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
