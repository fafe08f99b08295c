"""The ``atlasloader`` command line: ``demo``, ``view`` and ``bench`` (the other commands are
tested in ``tests/cli/``)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import atlasloader
from atlasloader.cli import build_parser, main
from atlasloader.model import SCVI


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERM", "dumb")


def _small_store(path: Path, zarr_format: int = 3) -> Path:
    rng = np.random.default_rng(0)
    x = rng.poisson(1.0, size=(60, 12)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical(rng.choice(["b0", "b1"], 60)),
            "labels": pd.Categorical(rng.choice(["t0", "t1", "t2"], 60)),
        },
        index=[f"c{i}" for i in range(60)],
    )
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(12)]))
    with warnings.catch_warnings(), ad.settings.override(zarr_write_format=zarr_format):
        warnings.simplefilter("ignore", UserWarning)
        adata.write_zarr(path)
    return path


def test_demo_trains_and_reports(tmp_path: Path, capsys, wide) -> None:
    rc = main(
        ["demo", "--cells", "3000", "--genes", "200", "--epochs", "1", "--path", str(tmp_path)]
    )
    out = _plain(capsys.readouterr().out)
    assert rc == 0
    assert "generated 3,000 cells x 200 genes" in out
    assert "Setup via `SCVI.setup_anndata` with arguments:" in out
    for title in (
        "Summary Statistics",
        "Data Registry",
        "batch State Registry",
        "labels State Registry",
    ):
        assert title in out
    assert re.search(r"│\s+n_cells\s+│\s+3000\s+│", out)
    assert re.search(r"│\s+n_vars\s+│\s+200\s+│", out)
    assert re.search(r"│\s+X\s+│\s+adata\.X\s+│", out)
    assert re.search(r"\[epoch 1\] loss: -?\d+\.\d+", out)
    assert re.search(r"[\d,]+ cells/s", out)
    assert re.search(r"peak RSS \d+\.\d+ GB", out)
    # scvi-tools is installed with the tests (extra "scvi"): the demo trains its own SCVI.
    assert "trained scvi.model.SCVI (scvi-tools) for 1 epochs" in out

    # --path keeps the store; view then finds the registration the demo persisted.
    store = tmp_path / "atlas.zarr"
    assert store.is_dir()
    assert main(["view", str(store)]) == 0
    view = _plain(capsys.readouterr().out)
    assert "SCVI" in view
    assert re.search(r"│\s+batch\s+│\s+adata\.obs\['_scvi_batch'\]\s+│", view)
    assert re.search(r"│\s+n_cells\s+│\s+3000\s+│", view)


def test_demo_trains_the_example_model_on_request(capsys, wide) -> None:
    rc = main(
        ["demo", "--cells", "2000", "--genes", "100", "--epochs", "2", "--model", "poisson-ae"]
    )
    out = _plain(capsys.readouterr().out)
    assert rc == 0
    assert "trained atlasloader.model.PoissonAE (example model) for 2 epochs" in out
    assert re.search(r"\[epoch 2\] loss: \d+\.\d+", out)


def test_demo_nnz_must_fit_the_genes(capsys) -> None:
    rc = main(["demo", "--cells", "100", "--genes", "20", "--nnz", "15", "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 3
    assert err.startswith("atlasloader: error:")
    assert "nnz_per_cell (15)" in err


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_view_registered_store(tmp_path: Path, capsys, wide, zarr_format: int) -> None:
    path = _small_store(tmp_path / "small.zarr", zarr_format)
    SCVI.setup_anndata(atlasloader.read_lazy(path), batch_key="batch", labels_key="labels")
    capsys.readouterr()
    assert main(["view", str(path)]) == 0
    out = _plain(capsys.readouterr().out)
    assert "Anndata setup with atlasloader version" in out
    assert "Setup via `SCVI.setup_anndata` with arguments:" in out
    assert re.search(r"│\s+n_cells\s+│\s+60\s+│", out)
    assert re.search(r"│\s+n_batch\s+│\s+2\s+│", out)
    assert re.search(r"│\s+n_labels\s+│\s+3\s+│", out)
    assert re.search(r"│\s+labels\s+│\s+adata\.obs\['_scvi_labels'\]\s+│", out)


def test_view_unregistered_store(tmp_path: Path, capsys) -> None:
    path = _small_store(tmp_path / "plain.zarr")
    rc = main(["view", str(path)])
    out = _plain(capsys.readouterr().out)
    assert rc == 1
    assert str(path) in out.replace("\n", "")
    assert "no atlasloader registration" in out


def test_view_missing_path(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "does-not-exist.zarr"
    rc = main(["view", str(missing)])
    err = capsys.readouterr().err
    assert rc == 3
    assert err.startswith("atlasloader: error:")
    assert str(missing) in err


def test_view_directory_that_is_not_a_store(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "not-a-store"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    rc = main(["view", str(folder)])
    captured = capsys.readouterr()
    assert rc == 3
    assert str(folder) in (captured.err + captured.out).replace("\n", "")


def test_parser_help_shows_examples(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "atlasloader demo --cells" in out
    assert "--epochs" in out
    assert build_parser().parse_args(["view", "x.zarr"]).store == "x.zarr"


def test_command_is_required(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_console_script_help() -> None:
    script = Path(sys.executable).parent / "atlasloader"
    if not script.exists():
        found = shutil.which("atlasloader")
        if found is None:
            pytest.skip("the atlasloader console script is not installed")
        script = Path(found)
    proc = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: atlasloader" in proc.stdout
    assert "demo" in proc.stdout
    assert "view" in proc.stdout


def test_bench_prints_the_table(tmp_path, capsys) -> None:
    from atlasloader.cli import main
    from atlasloader.data import make_atlas_store

    path = make_atlas_store(tmp_path / "b.zarr", n_cells=3000, n_genes=100, nnz_per_cell=20)
    code = main(
        ["bench", str(path), "--batch-size", "64", "--n-batches", "5", "--warmup-batches", "1"]
    )
    out = capsys.readouterr().out
    assert code == 0
    for header in ("cells/s", "time to 1st batch", "peak RSS", "entropy"):
        assert header in out


def test_bench_missing_store_fails_with_the_path(tmp_path, capsys) -> None:
    from atlasloader.cli import main

    missing = tmp_path / "nope.zarr"
    assert main(["bench", str(missing)]) == 3
    assert str(missing) in capsys.readouterr().err
