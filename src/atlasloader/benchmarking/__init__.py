"""Benchmarking: the library part of ``atlasloader bench``.

The room owns:

- :mod:`.measure`: :func:`~.measure.measure_loader` measures any iterable of minibatches
  (cells/s, time to the first batch, peak RSS, batch randomness) into a
  :class:`~.measure.BenchResult`. The peer runners in ``benchmarks/peers`` load that file by
  path, in a virtual environment without atlasloader, so it imports only numpy and the
  standard library (psutil where used) and nothing of atlasloader;
- :mod:`.tables`: the results as a rich or Markdown table;
- :mod:`.bench`: :func:`~.bench.bench_store` (atlasloader's loader on one store), which also
  exports the names of the other two.

The command line (``atlasloader bench``, its options and output) is :mod:`atlasloader.cli.bench`.

Imports: benchmarking may import :mod:`atlasloader.loading`, the manager, fields, the store and
:mod:`atlasloader.errors`; never the CLI (:mod:`atlasloader.cli.bench` imports it).
"""
