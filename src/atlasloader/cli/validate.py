"""``atlasloader validate``: every chunk readable, registrations consistent with the data."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import (
    EXIT_PROBLEMS,
    Ui,
    add_cluster_options,
    add_command,
    add_quiet,
    check_store_path,
)

EXAMPLES = """\
  atlasloader validate atlas.zarr
  atlasloader validate atlas.zarr --quiet || echo "atlas.zarr is damaged"
  atlasloader validate atlas.zarr --workers 4"""


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "validate",
        summary="check that every chunk decodes and the registrations match the data",
        description=(
            "Read every chunk (or shard) of every array of a store, check that the elements'\n"
            "shapes agree with obs and var, and that each persisted registration is still\n"
            "valid for the data (what setup read is unchanged and what it wrote is intact).\n"
            "Prints the problems and exits 1 if there are any (on stderr with --quiet), else\n"
            "prints a short summary and exits 0."
        ),
        examples=EXAMPLES,
        cluster=True,
    )
    p.add_argument("store", metavar="STORE", help="AnnData Zarr store (path or URL)")
    add_cluster_options(p)
    add_quiet(p)
    p.set_defaults(func=run)


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:,.0f} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} GB"


def run(args: argparse.Namespace, ui: Ui) -> int:
    """Validate; list the problems (exit 1) or summarise (exit 0)."""
    from ..validation.validate import check_store

    report = check_store(check_store_path(args.store), progress=ui.progress)
    if report.problems:
        out = sys.stderr if ui.quiet else sys.stdout
        n = len(report.problems)
        print(f"{args.store}: {n} problem{'s' if n > 1 else ''}", file=out)
        for problem in report.problems:
            print(f"  {problem}", file=out)
        return EXIT_PROBLEMS
    registered = (
        f"registries: {', '.join(report.registries)} ({report.n_field_records} field records "
        "consistent with the data)"
        if report.registries
        else "no registration"
    )
    ui.print(
        f"{args.store}: OK: {report.n_arrays} arrays, {report.n_chunks:,} chunks or shards "
        f"decoded ({_bytes(report.n_bytes)}); {registered}"
    )
    return 0
