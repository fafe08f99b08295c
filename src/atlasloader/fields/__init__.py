"""Fields: each maps one registry key onto part of an AnnData or a lazily opened store.

Imports: fields may import :mod:`atlasloader.registry` (the entries they build),
:mod:`atlasloader.store` and :mod:`atlasloader.errors`/``constants``; the manager, preprocess
and the models import them. A new field type is a module here subclassing
:class:`~.base.BaseAnnDataField`.
"""

from .base import BaseAnnDataField
from .categorical import CategoricalObsField
from .joint import CategoricalJointObsField, NumericalJointObsField
from .labels import LabelsWithUnlabeledObsField
from .layer import LayerField
from .numerical import NumericalObsField
from .obsm import ObsmField
from .uns import StringUnsField

AnnDataField = type[BaseAnnDataField]

__all__ = [
    "AnnDataField",
    "BaseAnnDataField",
    "CategoricalJointObsField",
    "CategoricalObsField",
    "LabelsWithUnlabeledObsField",
    "LayerField",
    "NumericalJointObsField",
    "NumericalObsField",
    "ObsmField",
    "StringUnsField",
]
