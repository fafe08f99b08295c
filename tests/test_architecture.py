"""The rooms of the package and the one direction of their imports (README, "Architecture").

Every ``import`` in ``src/atlasloader`` (at the top of a module or inside a function) is read
with :mod:`ast`; a module of one room may import another room only if that room is lower in
:data:`LAYERS`, or is the same room. Rooms on one layer do not import each other, except the
pairs in :data:`SIBLINGS`. A new module goes in a room; a new room gets a layer here and a line
in the README.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "atlasloader"

# Lowest first. A room may import the rooms of the layers below it.
LAYERS: list[set[str]] = [
    {"errors", "constants", "_version"},
    {"sampling", "reading", "data", "cluster"},  # no atlasloader imports but errors
    {"store"},  # store access: open, lazy elements, atomic writes, persisted records
    {"fields", "registry"},
    {"manager", "loading", "conversion", "preprocess", "validation"},
    {"model", "lightning", "benchmarking"},
    {"scvi"},
    {"cli"},
    {"testing"},  # harnesses that drive the whole package, the CLI included
]
SIBLINGS = {frozenset({"fields", "registry"})}  # a field builds its registry entry, and back
RANK = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
MAX_LINES = 450  # "files of about 400 lines or fewer"; a file past this needs a real reason
KNOWN_LARGE: dict[str, int] = {}  # files allowed past MAX_LINES (none now)


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "atlasloader" else None


def _module(path: Path) -> tuple[str, str]:
    """``(module name, package)`` of a file of the package."""
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every atlasloader import of ``path``."""
    _, package = _module(path)
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "atlasloader":  # from atlasloader import constants
                out += [(node.lineno, f"atlasloader.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, target))
    return [(line, t) for line, t in out if t.startswith("atlasloader")]


def _files() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def test_every_room_has_a_layer() -> None:
    rooms = {_room(_module(p)[0]) for p in _files()} - {None}
    missing = sorted(r for r in rooms if r not in RANK and r != "__main__")
    assert not missing, f"rooms without a layer in LAYERS: {missing}"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path: Path) -> None:
    name, _ = _module(path)
    room = _room(name)
    if room is None:
        return  # the package root re-exports everything
    if room not in RANK:
        return  # atlasloader.__main__ and the like
    wrong = []
    for line, target in _imports(path):
        other = _room(target)
        if other is None or other == room or other not in RANK:
            continue
        if RANK[other] < RANK[room] or frozenset({room, other}) in SIBLINGS:
            continue
        wrong.append(f"line {line}: {target} (layer {RANK[other]}, this room {RANK[room]})")
    assert not wrong, f"{name} imports up or across: {wrong}"


def test_every_room_says_what_it_owns() -> None:
    """Each subpackage's ``__init__`` opens with a docstring naming what it may import."""
    silent = []
    for init in sorted(PKG.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if "import" not in doc.lower():
            silent.append(init.parent.name)
    assert not silent, f"rooms whose __init__ docstring does not say what they may import: {silent}"


def test_files_stay_small() -> None:
    big = {
        str(p.relative_to(PKG)): n
        for p in _files()
        if (n := len(p.read_text().splitlines()))
        > KNOWN_LARGE.get(str(p.relative_to(PKG)), MAX_LINES)
    }
    assert not big, f"files over {MAX_LINES} lines (split them along a real seam): {big}"
