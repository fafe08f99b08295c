"""Model-side helpers: the ``setup_anndata`` pattern and an example model."""

from .base import SetupMixin
from .scvi import SCVI

__all__ = ["SCVI", "SetupMixin"]
