"""Validation: check that a store is whole (every chunk decodes, shapes agree, registrations
match the data) and name what is wrong; leftovers of an interrupted write are reported as
``incomplete``, not as damage.

The room owns:

- :mod:`.validate`: the entry points :func:`~.validate.validate_store` and
  :func:`~.validate.check_store`, and the walk of the store's hierarchy;
- :mod:`.chunks`: reading every chunk (or shard) as dask tasks, narrowing a failure to the
  stored object and its inner chunks;
- :mod:`.layout`: the AnnData layout (element shapes against ``obs`` and ``var``, CSR/CSC);
- :mod:`.registrations`: persisted registrations checked against the data;
- :mod:`.report`: :class:`~.report.Problem` and :class:`~.report.ValidationReport`.

``validate_store``, ``check_store``, ``Problem`` and ``ValidationReport`` are also exported
here, imported on first use.

Imports: validation may import :mod:`atlasloader.store`, :mod:`atlasloader.registry`,
:mod:`atlasloader.cluster` and :mod:`atlasloader.errors`; never loading, conversion or the
CLI, which import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .report import Problem, ValidationReport
    from .validate import check_store, validate_store

__all__ = ["Problem", "ValidationReport", "check_store", "validate_store"]

_LAZY = {
    "Problem": ".report",
    "ValidationReport": ".report",
    "check_store": ".validate",
    "validate_store": ".validate",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
