"""scvi-tools integration: train ``scvi.model.SCVI``/``SCANVI`` from atlasloader stores.

>>> import scvi, atlasloader  # doctest: +SKIP
>>> dm = atlasloader.scvi.DataModule("atlas.zarr", batch_key="batch")  # doctest: +SKIP
>>> model = scvi.model.SCVI(registry=dm.registry)  # doctest: +SKIP
>>> model.train(max_epochs=20, datamodule=dm)  # doctest: +SKIP
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
