"""The registry model, its JSON persistence and its display.

Imports: the registry may import :mod:`atlasloader.fields` (its sibling: fields build
registry entries), :mod:`atlasloader.store` (persisted records, the codec) and
:mod:`atlasloader.errors`/``constants``.
"""

from .attrdict import attrdict
from .model import DataLocation, FieldRegistry, Registry

__all__ = ["DataLocation", "FieldRegistry", "Registry", "attrdict"]
