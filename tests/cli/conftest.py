"""Fixtures of the command-line tests: small inputs on disk and an in-process runner.

Inputs are generated once per session and copied for each test that changes them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from ._support import N_GENES, Result


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """``cli("setup", store, "--batch-key", "batch")``: run ``main`` in this process."""
    from atlasloader.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.delenv("ATLASLOADER_SCHEDULER", raising=False)

    def run(*argv: object) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        plain = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", t) for t in (captured.out, captured.err)]
        return Result(code, *plain)

    return run


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small generated inputs, written once: ``a``/``b`` (same genes), ``wide`` (more genes),
    ``query`` (two batches the others lack), a text file, and ``store`` (``a`` converted)."""
    import atlasloader
    from atlasloader.data import make_atlas_h5ad, make_atlas_store

    d = tmp_path_factory.mktemp("cli-inputs")
    common = {"n_genes": N_GENES, "nnz_per_cell": 8, "n_labels": 3}
    paths = {
        "a": make_atlas_h5ad(d / "a.h5ad", n_cells=300, n_batches=3, seed=0, **common),
        "b": make_atlas_h5ad(d / "b.h5ad", n_cells=200, n_batches=3, seed=1, **common),
        "wide": make_atlas_h5ad(
            d / "wide.h5ad", n_cells=100, n_genes=N_GENES + 5, nnz_per_cell=8, seed=2
        ),
        "query": make_atlas_store(
            d / "query.zarr", n_cells=250, n_batches=5, seed=3, chunk_rows=64, **common
        ),
        "atlas": make_atlas_store(
            d / "atlas.zarr", n_cells=600, n_batches=3, seed=4, chunk_rows=64, **common
        ),
    }
    text = d / "notes.txt"
    text.write_text("not an AnnData file\n")
    paths["text"] = str(text)
    paths["store"] = atlasloader.convert(paths["a"], d / "a.zarr")
    return {k: Path(v) for k, v in paths.items()}


@pytest.fixture
def copy(tmp_path: Path, inputs: dict[str, Path]) -> Callable[[str], Path]:
    """``copy("atlas")``: a private copy of one of the session's inputs."""

    def make(name: str) -> Path:
        src = inputs[name]
        dst = tmp_path / src.name
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)
        return dst

    return make
