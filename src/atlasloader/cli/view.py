"""``atlasloader view``: print the registries persisted in a store."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import EXIT_PROBLEMS, Ui, add_command, add_quiet, check_store_path

EXAMPLES = """\
  atlasloader view atlas.zarr
  atlasloader view s3://bucket/atlas.zarr"""


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "view",
        summary="print the registries persisted in a store (no data is read)",
        description=(
            "Print the registry tables persisted in a store by setup or transfer, as\n"
            "view_registry() prints them. Only metadata is read. Exits 1 when the store has\n"
            "no registration."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("store", metavar="STORE", help="AnnData Zarr store (path or URL)")
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ui: Ui) -> int:
    """Print the registries persisted in a store (no data is read)."""
    import rich
    from rich.markup import escape

    from ..registry import display
    from ..registry.model import Registry
    from ..store import records
    from ..store.open import open_root

    root = open_root(check_store_path(args.store), mode="r")
    regs = records.load_registries(root)
    if not regs:
        ui.print(f"{args.store}: no atlasloader registration persisted; run setup first")
        return EXIT_PROBLEMS
    for name, payload in regs.items():
        registry = Registry.from_json_dict(payload)
        if not ui.quiet:
            rich.print(f"[bold]{escape(name)}[/]")
            display.print_registry(registry, [])
    return 0
