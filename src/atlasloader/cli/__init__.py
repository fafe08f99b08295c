"""The ``atlasloader`` command line.

One module per command (``convert``, ``setup``, ``view``, ``transfer``, ``preprocess``,
``validate``, ``bench``, ``demo``), each with ``add_parser(subparsers)`` and ``run(args, ui)``;
:func:`main` parses, chooses the dask scheduler (``--scheduler``/``--workers``), runs the
command and turns errors into exit codes:

==== ======================================================================================
0    success
1    ``validate`` found problems (``view``: the store has no registration)
2    usage error (argparse)
3    bad input or data: any :class:`~atlasloader.errors.AtlasLoaderError` or ``OSError``,
     reported as one ``atlasloader: error: ...`` line on stderr, without a traceback
4    internal error (a bug): the traceback is printed
130  interrupted (Ctrl-C)
==== ======================================================================================

Imports: the CLI sits on top and may import every room (never :mod:`atlasloader.testing`);
nothing in the package imports it.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from .._version import __version__
from ..errors import AtlasLoaderError
from . import bench, convert, demo, preprocess, setup, transfer, validate, view
from ._common import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    Ui,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

_COMMANDS = (convert, setup, view, transfer, preprocess, validate, bench, demo)

DESCRIPTION = """\
Prepare single-cell atlases for out-of-core training: convert .h5ad files to a store in the
loader's layout, preprocess and register it, check it, and measure the loader on it.

typical sequence:
  atlasloader convert a.h5ad b.h5ad atlas.zarr
  atlasloader preprocess atlas.zarr --n-top-genes 2000
  atlasloader setup atlas.zarr --batch-key batch --labels-key labels
  atlasloader validate atlas.zarr
  atlasloader view atlas.zarr

`atlasloader COMMAND --help` describes a command, with examples."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    parser = argparse.ArgumentParser(
        prog="atlasloader",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"atlasloader {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (argparse exits with 2 on usage errors).

    Examples
    --------
    >>> main(["validate", "atlas.zarr", "--quiet"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(None if argv is None else list(argv))
    ui = Ui(quiet=getattr(args, "quiet", False))
    try:
        with ui.session():
            return int(_run(args, ui))
    except KeyboardInterrupt:
        print("atlasloader: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (AtlasLoaderError, OSError) as e:
        # OSError: a file system problem atlasloader did not anticipate (disk full,
        # permission denied): still the input or environment, not a bug.
        ui.error(str(e) or type(e).__name__)
        return EXIT_BAD_INPUT
    except Exception:
        traceback.print_exc()
        ui.error("internal error (a bug in atlasloader); please report it with the traceback")
        return EXIT_INTERNAL


def _run(args: argparse.Namespace, ui: Ui) -> int:
    if not hasattr(args, "scheduler"):
        return int(args.func(args, ui))
    from ..cluster import describe, scheduler

    with scheduler(args.scheduler, args.workers) as client:
        if client is not None:
            ui.note(f"running on the {describe(client)}")
        return int(args.func(args, ui))
