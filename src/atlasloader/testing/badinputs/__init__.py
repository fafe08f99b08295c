"""A catalogue of bad inputs, each checked through the Python API and the command line.

Every :class:`Case` builds a real input in a temporary folder (Zarr stores written by
:mod:`atlasloader.data` or anndata, then damaged by editing their files on disk), runs one
Python API call on it, and names what must happen: an :class:`~atlasloader.errors.AtlasLoaderError`
subclass whose message matches a pattern naming the key, column, chunk or file and saying what
to do, with nothing written (every file of the folder hashes the same before and after); or,
for inputs a scanpy/scvi-tools user rightly expects to work (unicode keys, Zarr v2), success.
The equivalent ``atlasloader`` command is run in-process on a fresh copy of the input: it
must exit with the case's code (3 for bad input) and print exactly one
``atlasloader: error: ...`` line on stderr, without a traceback.

Examples
--------
>>> from atlasloader.testing.badinputs import CASES, run_case
>>> outcome = run_case(CASES[0], tmp_dir)  # doctest: +SKIP
>>> outcome.problems  # doctest: +SKIP
[]

Modules
-------
``case``
    :class:`Case`, :class:`Outcome`, and the store's size and place (``N_CELLS``, ``STORE``).
``build``
    Building inputs: template stores copied per case, anndata-written stores, zarr edits.
``actions``
    The API calls and ``atlasloader`` arguments the cases run.
``chunks``, ``data``, ``keys``, ``stores``, ``registry``, ``arguments``
    The cases, one module per group of topics, each with the edits that damage its inputs:
    chunk and shard files; dtypes, shapes, counts and categories; obs, layer and registry
    keys; paths that are not stores; the persisted registry JSON; loader arguments, transfer
    and convert. :data:`CASES` joins them in that order.
``runner``
    :func:`run_case` and its checks, :func:`snapshot`, :func:`run_cli`.
"""

from __future__ import annotations

from . import arguments, chunks, data, keys, registry, stores
from .case import Case, Outcome
from .runner import run_case, run_cli, snapshot

__all__ = ["CASES", "OPEN_DEFECTS", "Case", "Outcome", "run_case", "run_cli", "snapshot"]

CASES: list[Case] = [
    *chunks.CASES,
    *data.CASES,
    *keys.CASES,
    *stores.CASES,
    *registry.CASES,
    *arguments.CASES,
]

# Cases whose outcome is known to be wrong, with the reason (the test expects them to fail and
# says when one starts passing). Empty: every case holds.
OPEN_DEFECTS: dict[str, str] = {}
