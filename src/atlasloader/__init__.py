"""atlasloader: scvi-tools' data registration and loading, out of core on Zarr AnnData stores.

Public names are imported lazily so ``import atlasloader`` stays fast (torch, dask and rich
load only when used).
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

_LAZY = {
    "AnnDataManager": ".manager",
    "AnnDataManagerValidationCheck": ".manager",
    "REGISTRY_KEYS": ".constants",
    "read_lazy": ".store.lazy",
    "LazyAnnData": ".store.lazy",
    "AnnDataLoader": ".loading",
    "convert": ".conversion.convert",
    "preprocess": ".preprocess._export",
    "fields": ".fields",
    "data": ".data",
    "model": ".model",
    "errors": ".errors",
    "scvi": ".scvi",
    "lightning": ".lightning",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'atlasloader' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name], __name__)
    # A subpackage (fields, data, ...) is itself the attribute; otherwise take the name
    # from the module (convert lives in conversion/convert.py).
    value = getattr(module, name, module)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
