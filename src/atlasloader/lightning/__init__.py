"""Lightning integration: a ``LightningDataModule`` over atlasloader's loader.

For models you bring yourself; scvi-tools' models use :mod:`atlasloader.scvi`, built on this.

Imports: lightning may import :mod:`atlasloader.loading` and :mod:`atlasloader.errors`;
:mod:`atlasloader.scvi` builds on it.
"""

from .datamodule import DataModule, random_split
from .loader import TrainLoader

__all__ = ["DataModule", "TrainLoader", "random_split"]
