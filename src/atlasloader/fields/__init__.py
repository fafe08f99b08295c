"""Fields: each maps one registry key onto part of an AnnData or a lazily opened store."""

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
