"""Rich tables of a registry, laid out as scvi-tools prints them."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import rich.table

    from .model import Registry

_COL = {"justify": "center", "no_wrap": True, "overflow": "fold"}

# A mapping longer than this prints its first and last SHOWN_AT_EACH_END categories around one
# row saying how many are left out: a 100,000-donor column prints in milliseconds, not minutes
# of terminal output (the full mapping stays in the registry's ``categorical_mapping``).
MAX_CATEGORIES_SHOWN = 100
SHOWN_AT_EACH_END = 10


def new_table(title: str, *columns: tuple[str, str]) -> rich.table.Table:
    """A table with centred, non-wrapping columns given as ``(header, style)`` pairs."""
    import rich.table

    t = rich.table.Table(title=title)
    for header, style in columns:
        t.add_column(header, style=style, **_COL)  # type: ignore[arg-type]
    return t


def summary_stats_table(summary_stats: Mapping[str, Any]) -> rich.table.Table:
    t = new_table(
        "Summary Statistics", ("Summary Stat Key", "dodger_blue1"), ("Value", "dark_violet")
    )
    for key, value in summary_stats.items():
        t.add_row(key, str(value))
    return t


def data_registry_table(data_registry: Mapping[str, Mapping[str, Any]]) -> rich.table.Table:
    t = new_table(
        "Data Registry", ("Registry Key", "dodger_blue1"), ("scvi-tools Location", "dark_violet")
    )
    for key, loc in data_registry.items():
        attr_key = loc["attr_key"]
        where = f"adata.{loc['attr_name']}" + ("" if attr_key is None else f"['{attr_key}']")
        t.add_row(key, where)
    return t


def categorical_mapping_table(
    registry_key: str, source_rows: Iterable[tuple[str, Iterable[Any]]], blank_after: bool = False
) -> rich.table.Table:
    """Table of ``(source location, categories)`` groups with their integer encodings."""
    t = new_table(
        f"{registry_key} State Registry",
        ("Source Location", "dodger_blue1"),
        ("Categories", "green"),
        ("scvi-tools Encoding", "dark_violet"),
    )
    for source, categories in source_rows:
        cats = list(categories)
        n = len(cats)
        cut = n > MAX_CATEGORIES_SHOWN
        for i in range(SHOWN_AT_EACH_END if cut else n):
            t.add_row(source if i == 0 else "", str(cats[i]), str(i))
        if cut:
            t.add_row("", f"… {n - 2 * SHOWN_AT_EACH_END:,} more", "…")
            for i in range(n - SHOWN_AT_EACH_END, n):
                t.add_row("", str(cats[i]), str(i))
        if blank_after:
            t.add_row("", "")
    return t


def source_locations_table(registry_key: str, sources: Iterable[str]) -> rich.table.Table:
    t = new_table(f"{registry_key} State Registry", ("Source Location", "dodger_blue1"))
    for s in sources:
        t.add_row(s)
    return t


def make_console() -> Any:
    import rich.console

    force_jupyter = True if "google.colab" in sys.modules else None
    return rich.console.Console(force_jupyter=force_jupyter)


def print_setup_args(registry: Registry) -> None:
    import rich
    import rich.pretty

    if registry.model_name is not None and registry.setup_args is not None:
        rich.print(f"Setup via `{registry.model_name}.setup_anndata` with arguments:")
        rich.pretty.pprint(dict(registry.setup_args))
        rich.print()


def print_registry(
    registry: Registry,
    state_tables: Iterable[rich.table.Table | None],
    hide_state_registries: bool = False,
) -> None:
    """Print the header, setup arguments, summary stats, data registry and state tables."""
    import rich

    rich.print(f"Anndata setup with atlasloader version {registry.scvi_version}.")
    rich.print()
    print_setup_args(registry)
    console = make_console()
    console.print(summary_stats_table(registry.summary_stats()))
    console.print(data_registry_table(registry.data_registry()))
    if not hide_state_registries:
        for t in state_tables:
            if t is not None:
                console.print(t)
