"""``atlasloader setup``."""

from __future__ import annotations

import re

import numpy as np
import pytest

import atlasloader
from atlasloader.store import records
from atlasloader.store.open import open_root


def _registries(path) -> dict:
    return records.load_registries(open_root(path, mode="r"))


def test_registers_prints_and_persists(cli, copy) -> None:
    store = copy("atlas")
    result = cli(
        "setup", store, "--batch-key", "batch", "--labels-key", "labels",
        "--size-factor-key", "n_counts", "--categorical-covariate-keys", "labels",
        "--continuous-covariate-keys", "n_counts",
    )  # fmt: skip
    assert result.code == 0, result.err
    out = result.out
    assert "Setup via `SCVI.setup_anndata` with arguments:" in out
    for title in ("Summary Statistics", "Data Registry", "batch State Registry",
                  "labels State Registry", "extra_categorical_covs State Registry"):  # fmt: skip
        assert title in out
    for key in ("X", "batch", "labels", "size_factor", "extra_categorical_covs",
                "extra_continuous_covs"):  # fmt: skip
        assert re.search(rf"│\s+{key}\s+│\s+adata\.", out), key
    assert re.search(r"│\s+n_cells\s+│\s+600\s+│", out)
    assert re.search(r"│\s+n_batch\s+│\s+3\s+│", out)
    assert f"registered {store}: 600 cells x 40 genes" in out

    regs = _registries(store)
    assert list(regs) == ["SCVI"]
    args = regs["SCVI"]["registry"]["setup_args"]
    assert args["batch_key"] == "batch"
    assert args["categorical_covariate_keys"] == ["labels"]
    adata = atlasloader.read_lazy(store, mode="r")
    assert "_scvi_batch" in adata.obs
    codes = np.asarray(adata.obs["_scvi_batch"])
    assert sorted(np.unique(codes)) == [0, 1, 2]

    # view prints the same registry from the store alone
    view = cli("view", store)
    assert view.code == 0
    assert re.search(r"│\s+batch\s+│\s+adata\.obs\['_scvi_batch'\]\s+│", view.out)


def test_setup_again_gives_the_same_registry(cli, copy) -> None:
    store = copy("atlas")
    assert cli("setup", store, "--batch-key", "batch", "-q").code == 0
    first = _registries(store)
    again = cli("setup", store, "--batch-key", "batch")
    assert again.code == 0
    assert _registries(store) == first


def test_quiet_prints_nothing(cli, copy) -> None:
    store = copy("atlas")
    result = cli("setup", store, "--batch-key", "batch", "--labels-key", "labels", "--quiet")
    assert (result.code, result.out, result.err) == (0, "", "")
    assert "SCVI" in _registries(store)


def test_progress_bar_on_a_terminal(cli, copy, monkeypatch) -> None:
    from atlasloader.cli import _common

    monkeypatch.setattr(_common, "_is_tty", lambda stream: True)
    result = cli("setup", copy("atlas"), "--batch-key", "batch")
    assert result.code == 0
    assert re.search(r"registering .* (\d+)/\1 tasks", result.err)


@pytest.mark.parametrize(
    ("option", "key"),
    [
        ("--batch-key", "nope"),
        ("--labels-key", "nope"),
        ("--categorical-covariate-keys", "nope"),
        ("--continuous-covariate-keys", "nope"),
        ("--size-factor-key", "nope"),
        ("--layer", "counts"),
    ],
)
def test_unknown_key_exits_3_naming_it(cli, copy, option: str, key: str) -> None:
    store = copy("atlas")
    result = cli("setup", store, option, key)
    assert result.code == 3
    assert result.err.startswith("atlasloader: error: ")
    assert result.err.count("\n") == 1
    assert key in result.err
    assert "Traceback" not in result.err
    assert _registries(store) == {}


def test_missing_store_exits_3(cli, tmp_path) -> None:
    missing = tmp_path / "missing.zarr"
    result = cli("setup", missing, "--batch-key", "batch")
    assert result.code == 3
    assert str(missing) in result.err


def test_not_a_store_exits_3(cli, inputs) -> None:
    for path in (inputs["text"], inputs["a"]):  # a text file; an .h5ad (convert it first)
        result = cli("setup", path, "--batch-key", "batch")
        assert result.code == 3, path
        assert str(path) in result.err
