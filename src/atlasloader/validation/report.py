"""What validation reports: each :class:`Problem` found and the :class:`ValidationReport`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Problem", "ValidationReport", "short_error"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store.

    Attributes
    ----------
    where
        The store key it concerns: an array (``X/data``), a chunk or shard (``X/data/c/3``),
        an element (``obs/batch``) or a registration (``registry 'SCVI', field 'batch'``).
    what
        What is wrong and, where it helps, what to do.
    kind
        ``"damage"`` (data or a registration cannot be used) or ``"incomplete"``: what a
        write that is running or was killed leaves (unpublished arrays, invisible to readers;
        a registration marked as under way, and the registrations it was replacing), mended
        by the next registration or ``preprocess`` of the store.
    """

    where: str
    what: str
    kind: str = "damage"  # or "incomplete": leftovers of an interrupted write, data intact

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`check_store` looked at and the problems it found.

    Attributes
    ----------
    path
        The store checked.
    problems
        What is wrong (empty for a sound store).
    n_arrays, n_chunks, n_bytes
        Arrays walked, stored objects (chunks, or shards) among them, decoded bytes read.
    registries
        Names of the persisted registries (``"SCVI"``...).
    n_field_records
        Persisted field records checked against the data.
    """

    path: str
    problems: tuple[Problem, ...]
    n_arrays: int
    n_chunks: int
    n_bytes: int
    registries: tuple[str, ...] = ()
    n_field_records: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def damaged(self) -> tuple[Problem, ...]:
        """The problems that are not leftovers of an interrupted write."""
        return tuple(p for p in self.problems if p.kind != "incomplete")


def short_error(e: BaseException, limit: int = 200) -> str:
    """``"TypeName: message"`` of ``e`` on one line, cut to ``limit`` characters."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
