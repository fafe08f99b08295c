"""Harnesses that drive the whole package, the CLI included, for its tests and for code using it.

The room owns three harnesses:

- the bad-input catalogue, :mod:`.badinputs` (a package): ``case`` (what a case is),
  ``build`` and ``actions`` (building inputs, the API calls and CLI arguments), one module of
  cases per group (``chunks``, ``data``, ``keys``, ``stores``, ``registry``, ``arguments``),
  ``runner`` (:func:`~.badinputs.run_case` and its checks); the package re-exports ``CASES``,
  ``OPEN_DEFECTS``, ``Case``, ``Outcome``, ``run_case``, ``run_cli`` and ``snapshot``;
- the crash harness: :mod:`.crash` (kill points, their checks, ``run_op``; it re-exports the
  names below), :mod:`.ops` (the operations, their child process, ``OPS``, the store checks
  both harnesses share), :mod:`.nowrite` (``can_mount``, ``full_disk``, ``read_only``,
  ``NoWriteReport``: a full disk, a read-only mount);
- :mod:`.s3`, a loopback S3 test server with latency and faults (``S3Server``, ``FaultProxy``).

Imports: testing is the top room and may import anything in the package (the CLI included);
nothing in the package imports testing. Its modules import each other with relative imports.
"""
