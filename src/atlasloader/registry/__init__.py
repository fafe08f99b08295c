"""The registry model, its JSON persistence and its display."""

from .attrdict import attrdict
from .model import DataLocation, FieldRegistry, Registry

__all__ = ["DataLocation", "FieldRegistry", "Registry", "attrdict"]
