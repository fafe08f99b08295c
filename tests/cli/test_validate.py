"""``atlasloader validate`` and :func:`atlasloader.validation.validate.validate_store`."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import anndata as ad
import zarr

from atlasloader.data import synthetic_iid
from atlasloader.validation.validate import Problem, check_store, validate_store


def _garble(path: Path, offset: int = 0, n: int = 16) -> None:
    """Overwrite ``n`` bytes of a chunk file (the codec's header at offset 0)."""
    raw = bytearray(path.read_bytes())
    raw[offset : offset + n] = b"\xa5" * n
    path.write_bytes(bytes(raw))


def _setup(cli, store: Path) -> None:
    result = cli("setup", store, "--batch-key", "batch", "--labels-key", "labels", "-q")
    assert result.code == 0, result.err


def test_clean_stores_are_ok(cli, copy) -> None:
    store = copy("atlas")
    plain = cli("validate", store)
    assert plain.code == 0, plain.out
    assert plain.out.startswith(f"{store}: OK: ")
    assert plain.out.rstrip().endswith("; no registration")
    _setup(cli, store)
    registered = cli("validate", store)
    assert registered.code == 0, registered.out
    assert "registries: SCVI (3 field records consistent with the data)" in registered.out
    assert validate_store(store) == []
    report = check_store(store)
    assert report.ok
    assert report.n_chunks >= report.n_arrays > 5
    assert report.n_bytes > 0


def test_garbled_chunk_names_the_array_and_chunk(cli, copy) -> None:
    store = copy("atlas")  # X/data in unsharded chunks of 512 values
    _garble(store / "X" / "data" / "c" / "3")
    result = cli("validate", store)
    assert result.code == 1
    assert result.out.splitlines()[0] == f"{store}: 1 problem"
    line = result.out.splitlines()[1]
    assert line.startswith("  X/data/c/3: chunk (3,) cannot be decoded: ")
    problems = validate_store(store)
    assert problems == [Problem("X/data/c/3", problems[0].what)]
    assert str(problems[0]) == line.strip()


def test_garbled_inner_chunk_of_a_shard(cli, copy) -> None:
    store = copy("store")  # converted: X/data in shards of small inner chunks
    _garble(store / "X" / "data" / "c" / "0")
    result = cli("validate", store)
    assert result.code == 1
    assert "X/data/c/0: inner chunks 0 (of " in result.out
    assert "of shard (0,) cannot be decoded" in result.out


def test_every_bad_chunk_is_reported(cli, copy) -> None:
    store = copy("atlas")
    _garble(store / "X" / "data" / "c" / "1")
    _garble(store / "X" / "indices" / "c" / "4")
    result = cli("validate", store)
    assert result.code == 1
    assert f"{store}: 2 problems" in result.out
    assert "X/data/c/1: chunk (1,)" in result.out
    assert "X/indices/c/4: chunk (4,)" in result.out


def test_zarr_v2_chunk_keys(cli, tmp_path) -> None:
    store = tmp_path / "v2.zarr"
    with warnings.catch_warnings(), ad.settings.override(zarr_write_format=2):
        warnings.simplefilter("ignore", UserWarning)
        synthetic_iid().write_zarr(store, chunks=(100, 100))
    assert cli("validate", store).code == 0
    _garble(store / "X" / "2.0")
    result = cli("validate", store)
    assert result.code == 1
    assert "X/2.0: chunk (2, 0) cannot be decoded" in result.out


def test_changed_obs_column_after_registration(cli, copy) -> None:
    store = copy("atlas")
    _setup(cli, store)
    codes = zarr.open_group(store, mode="r+", use_consolidated=False)["obs/batch/codes"]
    codes[:10] = (codes[:10] + 1) % 3  # relabel ten cells
    result = cli("validate", store)
    assert result.code == 1
    assert "1 problem" in result.out
    assert "  obs/batch: changed since it was registered: field 'batch' of registry 'SCVI' is " in (
        result.out
    )
    assert "stale" in result.out
    # registering again makes the store consistent
    _setup(cli, store)
    assert cli("validate", store).code == 0


def test_removed_encoded_column(cli, copy) -> None:
    store = copy("atlas")
    _setup(cli, store)
    shutil.rmtree(store / "obs" / "_scvi_labels")
    result = cli("validate", store)
    assert result.code == 1
    assert "obs/_scvi_labels: was removed or overwritten" in result.out
    assert "registry 'SCVI', field 'labels': its data adata.obs['_scvi_labels'] is not" in (
        result.out
    )


def test_unreadable_metadata(cli, copy) -> None:
    store = copy("atlas")
    (store / "obs" / "labels" / "zarr.json").write_text("{not json")
    result = cli("validate", store)
    assert result.code == 1
    assert "obs/labels: metadata cannot be read: JSONDecodeError" in result.out


def test_inconsistent_shapes(cli, copy) -> None:
    store = copy("atlas")
    meta_path = store / "X" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["shape"] = [601, 40]
    meta_path.write_text(json.dumps(meta))
    problems = [str(p) for p in validate_store(store)]
    assert "X: has shape (601, 40), expected (600, 40) first" in problems
    assert "X: indptr has 601 entries for 601 rows" in problems


def test_quiet_lists_problems_on_stderr(cli, copy) -> None:
    store = copy("atlas")
    clean = cli("validate", store, "--quiet")
    assert (clean.code, clean.out, clean.err) == (0, "", "")
    _garble(store / "X" / "data" / "c" / "3")
    bad = cli("validate", store, "--quiet")
    assert (bad.code, bad.out) == (1, "")
    assert "X/data/c/3" in bad.err


def test_missing_or_wrong_input_exits_3(cli, inputs, tmp_path) -> None:
    missing = tmp_path / "missing.zarr"
    result = cli("validate", missing)
    assert result.code == 3
    assert str(missing) in result.err
    for path in (inputs["text"], inputs["a"]):
        result = cli("validate", path)
        assert result.code == 3
        assert "is a file, not an AnnData Zarr store" in result.err
    not_anndata = tmp_path / "plain.zarr"
    zarr.open_group(not_anndata, mode="w").create_array("x", shape=(3,), dtype="i4")
    result = cli("validate", not_anndata)
    assert result.code == 3
    assert "not an AnnData store" in result.err
