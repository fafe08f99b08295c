"""Conversion: ``.h5ad`` files and AnnData Zarr stores into the layout atlasloader reads fastest.

:func:`~.convert.convert` (``atlasloader.convert``) is the entry point. Its parts, in the order
a conversion uses them: :mod:`.source` reads an input in row blocks, :mod:`.plan` matches genes
and plans the matrices, :mod:`.obs` concatenates ``obs`` in windows of rows (:mod:`.columns`
unites each column, :mod:`.names` checks the cell names for collisions, :mod:`.windows` writes
the windows, through bucket files when shuffled), :mod:`.state` spills per-cell state
(permutation, row pointers) to files, :mod:`.tasks` are the copying dask tasks, run by
:mod:`.graph`; :mod:`.sink` and :mod:`.shards` write the chunk and shard layout, and
:mod:`.shuffle` a random row order with bounded memory; :mod:`.safety` writes under a partial
store and publishes it whole, :mod:`.upload` to a remote URL; :mod:`.layout` reads back what a
conversion wrote.

Imports: conversion may import :mod:`atlasloader.store`, :mod:`atlasloader.reading`,
:mod:`atlasloader.data` (the array writers) and :mod:`atlasloader.errors`; only the CLI and
the package root import it.
"""
