"""``atlasloader convert``."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from atlasloader.conversion.convert import layout_of, original_order

from ._support import N_GENES


def test_converts_one_h5ad(cli, inputs, tmp_path) -> None:
    dst = tmp_path / "a.zarr"
    result = cli("convert", inputs["a"], dst)
    assert result.code == 0, result.err
    assert f"wrote {dst}: 300 cells x {N_GENES} genes from 1 input(s)" in result.out
    assert "codec lz4" in result.out
    got, want = ad.read_zarr(dst), ad.read_h5ad(inputs["a"])
    np.testing.assert_array_equal(got.X.toarray(), want.X.toarray())
    assert list(got.obs_names) == list(want.obs_names)
    assert list(got.obs.columns) == list(want.obs.columns)


def test_layout_options_reach_the_store(cli, inputs, tmp_path) -> None:
    dst = tmp_path / "z.zarr"
    result = cli(
        "convert", inputs["a"], dst, "--chunk-rows", "32", "--shard-rows", "64", "--codec",
        "zstd", "--block-rows", "100", "--quiet",
    )  # fmt: skip
    assert (result.code, result.out, result.err) == (0, "", "")
    layout = layout_of(dst)
    assert layout["codec"] == "zstd"
    assert layout["chunk_rows"] == 32
    assert layout["shard_rows"] == 64


def test_existing_destination_needs_overwrite(cli, inputs, tmp_path) -> None:
    dst = tmp_path / "a.zarr"
    assert cli("convert", inputs["a"], dst, "-q").code == 0
    again = cli("convert", inputs["a"], dst)
    assert again.code == 3
    assert again.err.startswith("atlasloader: error: ")
    assert str(dst) in again.err
    assert cli("convert", inputs["a"], dst, "--overwrite", "-q").code == 0


def test_missing_input_exits_3(cli, tmp_path) -> None:
    missing = tmp_path / "missing.h5ad"
    result = cli("convert", missing, tmp_path / "out.zarr")
    assert result.code == 3
    assert result.err.count("\n") == 1
    assert str(missing) in result.err
    assert "does not exist" in result.err
    assert not (tmp_path / "out.zarr").exists()


def test_text_file_exits_3(cli, inputs, tmp_path) -> None:
    result = cli("convert", inputs["text"], tmp_path / "out.zarr")
    assert result.code == 3
    assert str(inputs["text"]) in result.err
    assert ".h5ad" in result.err
    assert "Traceback" not in result.err


def test_codec_choices_are_checked(capsys, inputs, tmp_path) -> None:
    from atlasloader.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["convert", str(inputs["a"]), str(tmp_path / "o.zarr"), "--codec", "gzip"])
    assert exc.value.code == 2


def test_concatenates_inputs(cli, inputs, tmp_path) -> None:
    dst = tmp_path / "ab.zarr"
    result = cli("convert", inputs["a"], inputs["b"], dst)
    assert result.code == 0, result.err
    assert "500 cells" in result.out
    assert "from 2 input(s)" in result.out
    adata = ad.read_zarr(dst)
    assert adata.obs["source_file"].value_counts().to_dict() == {
        str(inputs["a"]): 300,
        str(inputs["b"]): 200,
    }


def test_gene_mismatch_lists_the_genes(cli, inputs, tmp_path) -> None:
    dst = tmp_path / "mixed.zarr"
    result = cli("convert", inputs["a"], inputs["wide"], dst)
    assert result.code == 3
    assert result.err.count("\n") == 1
    assert f"gene_{N_GENES}" in result.err  # a gene only in the wider input
    assert "--join inner" in result.err
    assert not dst.exists()
    inner = cli("convert", inputs["a"], inputs["wide"], dst, "--join", "inner")
    assert inner.code == 0, inner.err
    assert ad.read_zarr(dst).shape == (400, N_GENES)


def test_shuffle_keeps_the_original_order(cli, inputs, tmp_path) -> None:
    dst = tmp_path / "shuffled.zarr"
    result = cli("convert", inputs["a"], inputs["b"], dst, "--shuffle", "--seed", "3", "-q")
    assert result.code == 0, result.err
    adata = ad.read_zarr(dst)
    a = ad.read_h5ad(inputs["a"])
    assert list(adata.obs_names[:300]) != list(a.obs_names + "-0")
    restored = adata[original_order(dst)]
    np.testing.assert_array_equal(restored.X[:300].toarray(), a.X.toarray())


def test_var_subset_writes_those_genes(cli, inputs, tmp_path) -> None:
    full = tmp_path / "full.zarr"
    assert cli("convert", inputs["a"], full, "-q").code == 0
    assert cli("preprocess", full, "--n-top-genes", "10", "-q").code == 0
    dst = tmp_path / "hvg.zarr"
    result = cli("convert", full, dst, "--var-subset", "highly_variable")
    assert result.code == 0, result.err
    assert f"wrote {dst}: 300 cells x 10 genes" in result.out
    ref = ad.read_zarr(full)
    ref = ref[:, ref.var["highly_variable"].to_numpy()]
    np.testing.assert_array_equal(ad.read_zarr(dst).X.toarray(), ref.X.toarray())
    missing = cli("convert", full, tmp_path / "o.zarr", "--var-subset", "nope")
    assert missing.code == 3
    assert "'nope'" in missing.err
    assert not (tmp_path / "o.zarr").exists()
