"""What a bad-input case is (:class:`Case`) and what running one gave (:class:`Outcome`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["N_CELLS", "N_GENES", "STORE", "Case", "Outcome"]

N_CELLS, N_GENES = 300, 50
STORE = "in/atlas.zarr"  # nested: a key escaping the store lands inside the snapshotted folder


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes
    ----------
    name, group
        Identifier and topic (``chunks``, ``dtypes``, ``shape``, ...).
    build
        Writes the input under the given folder (the store at :data:`STORE` by convention).
    action
        The Python API call, given the folder.
    cli
        The equivalent ``atlasloader`` arguments, given the folder (``None``: no CLI form).
    error
        The expected error class, or ``None`` when the input must be accepted.
    match
        A regex the error message must match (searched), naming what is wrong.
    api
        The API call, as shown in the table.
    cli_exit
        The expected exit code (3 for bad input, 2 for argparse's usage errors, 0 success).
    warns
        For accepted inputs: a warning the call must give (message regex), or ``None``.
    note
        Why this outcome is the expected one (for inputs judged not to be errors).
    """

    name: str
    group: str
    build: Callable[[Path], None]
    action: Callable[[Path], Any]
    cli: Callable[[Path], list[str]] | None
    error: type[BaseException] | None
    match: str
    api: str
    cli_exit: int = 3
    warns: str | None = None
    note: str = ""


@dataclass
class Outcome:
    """What running a :class:`Case` gave."""

    case: Case
    error: BaseException | None = None
    message: str = ""
    changed: list[str] = field(default_factory=list)
    cli_exit: int | None = None
    cli_stderr: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def nothing_written(self) -> bool:
        return not self.changed
