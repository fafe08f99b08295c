"""Helpers shared by the command-line tests: the gene count of their inputs, the result type."""

from __future__ import annotations

from dataclasses import dataclass

N_GENES = 40


@dataclass(frozen=True)
class Result:
    """What one in-process ``atlasloader`` run returned and printed (ANSI codes removed)."""

    code: int
    out: str
    err: str
