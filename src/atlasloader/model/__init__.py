"""Model-side helpers: the ``setup_anndata`` pattern, scvi-tools' registrations, an example model.

``SCVI`` and ``SCANVI`` register data as scvi-tools' models do (their registries feed
``scvi.model.SCVI(registry=...)``, see :mod:`atlasloader.scvi`); ``PoissonAE`` is a small
example model that trains from the loader without scvi-tools.

Imports: model may import the manager, fields, loading, store and errors/constants;
:mod:`atlasloader.scvi` and the CLI import it.
"""

from .base import SetupMixin
from .example import PoissonAE
from .scanvi import SCANVI
from .scvi import SCVI

__all__ = ["SCANVI", "SCVI", "PoissonAE", "SetupMixin"]
