"""scvi-tools integration: train ``scvi.model.SCVI``/``SCANVI`` from atlasloader stores.

>>> import scvi, atlasloader  # doctest: +SKIP
>>> dm = atlasloader.scvi.DataModule("atlas.zarr", batch_key="batch")  # doctest: +SKIP
>>> model = scvi.model.SCVI(registry=dm.registry)  # doctest: +SKIP
>>> model.train(max_epochs=20, datamodule=dm)  # doctest: +SKIP

Imports: scvi may import :mod:`atlasloader.lightning`, :mod:`atlasloader.model`,
the store and errors/constants; scvi-tools itself only lazily (an optional extra).
"""

from .datamodule import (
    DataModule,
    check_registry,
    scanvi_from_scvi_model,
    scvi_dtypes,
    scvi_registry,
)

__all__ = [
    "DataModule",
    "check_registry",
    "scanvi_from_scvi_model",
    "scvi_dtypes",
    "scvi_registry",
]
