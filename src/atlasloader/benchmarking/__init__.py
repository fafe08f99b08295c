"""Benchmarking: the library part of ``atlasloader bench``.

:mod:`.bench` measures any iterable of minibatches (cells/s, time to the first batch, peak RSS,
batch randomness) and renders the tables; the peer runners in ``benchmarks/peers`` load that
file by path, so it imports only numpy and the standard library at the top.

Imports: benchmarking may import :mod:`atlasloader.loading`, the manager, fields, the store and
:mod:`atlasloader.errors`; never the CLI (``atlasloader bench`` in :mod:`atlasloader.cli.bench`
imports it).
"""
