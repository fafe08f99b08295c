"""Rendering measured runs: the results table as rich (terminal) or Markdown (README)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

    from .measure import BenchResult

__all__ = ["COLUMNS", "format_markdown", "format_table"]

COLUMNS = ("loader", "cells/s", "time to 1st batch", "peak RSS", "batch entropy / ideal")


def _cells(v: float) -> str:
    if not math.isfinite(v):
        return "–"
    return f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def _row(r: BenchResult) -> tuple[str, str, str, str, str]:
    ratio = "–" if not math.isfinite(r.entropy_ratio) else f"{r.entropy_ratio:.2f}"
    return (
        r.loader,
        _cells(r.cells_per_s),
        f"{r.time_to_first_batch_s:.2f} s",
        f"{r.peak_rss_gb:.2f} GB",
        ratio,
    )


def format_table(results: Sequence[BenchResult], title: str | None = None) -> Table:
    """The results as a rich table (the columns of the loader issue's table).

    Examples
    --------
    >>> from rich.console import Console
    >>> Console().print(format_table([result]))  # doctest: +SKIP
    """
    from rich.table import Table

    table = Table(title=title)
    table.add_column(COLUMNS[0])
    for col in COLUMNS[1:]:
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(*_row(r))
    return table


def format_markdown(results: Sequence[BenchResult]) -> str:
    """The same table in Markdown (for a README)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in results]
    return "\n".join(lines) + "\n"
