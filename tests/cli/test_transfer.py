"""``atlasloader transfer``."""

from __future__ import annotations

import re

import numpy as np
import pytest

import atlasloader
from atlasloader.registry.model import Registry
from atlasloader.store import records
from atlasloader.store.open import open_root


def _registry(path) -> Registry:
    return Registry.from_json_dict(records.load_registries(open_root(path, mode="r"))["SCVI"])


def _mapping(path, key: str = "batch") -> list[str]:
    state = _registry(path).field_registries[key].state_registry
    return list(state["categorical_mapping"])


def _reference(cli, copy):
    ref = copy("atlas")
    result = cli("setup", ref, "--batch-key", "batch", "--labels-key", "labels", "-q")
    assert result.code == 0, result.err
    return ref


def test_registers_the_query_with_the_reference_mappings(cli, copy) -> None:
    ref = _reference(cli, copy)
    before = records.load_registries(open_root(ref, mode="r"))
    query = copy("store")
    result = cli("transfer", query, "--reference", ref)
    assert result.code == 0, result.err
    assert re.search(r"│\s+batch\s+│\s+adata\.obs\['_scvi_batch'\]\s+│", result.out)
    assert re.search(r"│\s+n_cells\s+│\s+300\s+│", result.out)
    assert f"registered {query} following the SCVI registry of {ref}" in result.out
    # persisted in the query, the reference untouched
    assert _mapping(query) == _mapping(ref) == ["batch_0", "batch_1", "batch_2"]
    assert _registry(query).setup_args == _registry(ref).setup_args
    assert records.load_registries(open_root(ref, mode="r")) == before
    # the query's codes follow the reference's mapping
    adata = atlasloader.read_lazy(query, mode="r")
    names = np.asarray(adata.obs["batch"]).astype(str)
    codes = np.asarray(adata.obs["_scvi_batch"])
    np.testing.assert_array_equal(np.asarray(_mapping(ref))[codes], names)
    assert cli("view", query).code == 0


def test_new_categories_need_extend_categories(cli, copy) -> None:
    ref = _reference(cli, copy)
    query = copy("query")  # batch_3 and batch_4 are not in the reference
    result = cli("transfer", query, "--reference", ref)
    assert result.code == 3
    assert result.err.count("\n") == 1
    assert "batch_3" in result.err
    assert "--extend-categories" in result.err
    extended = cli("transfer", query, "--reference", ref, "--extend-categories", "-q")
    assert (extended.code, extended.out, extended.err) == (0, "", "")
    assert _mapping(query) == [f"batch_{i}" for i in range(5)]
    assert _mapping(ref) == [f"batch_{i}" for i in range(3)]


def test_unregistered_reference_exits_3(cli, copy) -> None:
    ref, query = copy("atlas"), copy("store")
    result = cli("transfer", query, "--reference", ref)
    assert result.code == 3
    assert "no persisted registration" in result.err
    assert f"atlasloader setup {ref}" in result.err


def test_missing_paths_exit_3(cli, copy, tmp_path) -> None:
    ref = _reference(cli, copy)
    missing = tmp_path / "missing.zarr"
    for argv in (("transfer", missing, "--reference", ref),
                 ("transfer", copy("store"), "--reference", missing)):  # fmt: skip
        result = cli(*argv)
        assert result.code == 3
        assert str(missing) in result.err


def test_reference_is_required(capsys) -> None:
    from atlasloader.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["transfer", "q.zarr"])
    assert exc.value.code == 2


def test_choose_among_several_registries(cli, copy) -> None:
    from atlasloader import AnnDataManager
    from atlasloader.fields import CategoricalObsField

    ref = _reference(cli, copy)
    # a second registry in the reference, made without a model
    manager = AnnDataManager([CategoricalObsField("cell_type", "labels")])
    manager.register_fields(atlasloader.read_lazy(ref))
    query = copy("store")
    result = cli("transfer", query, "--reference", ref)
    assert result.code == 3
    assert "--model" in result.err
    unknown = cli("transfer", query, "--reference", ref, "--model", "AnnDataManager")
    assert unknown.code == 3
    assert "not a model class" in unknown.err
    chosen = cli("transfer", query, "--reference", ref, "--model", "SCVI", "-q")
    assert chosen.code == 0, chosen.err
    assert _mapping(query, "labels") == _mapping(ref, "labels")


def test_stale_reference_says_to_register_again(cli, copy) -> None:
    from atlasloader import AnnDataManager
    from atlasloader.fields import CategoricalObsField

    ref = _reference(cli, copy)
    # Another registration overwrites the reference's obs['_scvi_batch'] with other codes.
    AnnDataManager([CategoricalObsField("batch", "labels")]).register_fields(
        atlasloader.read_lazy(ref)
    )
    result = cli("transfer", copy("store"), "--reference", ref, "--model", "SCVI")
    assert result.code == 3
    assert "no longer matches its data" in result.err
    assert f"atlasloader setup {ref}" in result.err
