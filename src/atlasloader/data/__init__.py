"""Synthetic data: small in-memory AnnData objects and large on-disk atlases.

Imports: data may import only :mod:`atlasloader.errors`; conversion uses its array
writers.

Examples
--------
>>> from atlasloader.data import synthetic_iid
>>> synthetic_iid(seed=0).shape
(400, 100)
"""

from __future__ import annotations

from .atlas import atlas_batch_layout, make_atlas_h5ad, make_atlas_store
from .synthetic import synthetic_iid

__all__ = ["atlas_batch_layout", "make_atlas_h5ad", "make_atlas_store", "synthetic_iid"]
