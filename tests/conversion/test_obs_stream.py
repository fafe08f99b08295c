"""Tests of the streamed ``obs`` of ``atlasloader.convert`` (conversion/obs, names, windows).

Windows are lowered to a few rows so that every column, the names and the shuffle buckets span
many windows; inputs are real ``.h5ad`` and Zarr v2/v3 files, and the expected ``obs`` is
computed with pandas / ``anndata.concat`` from the inputs read into memory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr

import atlasloader
from atlasloader.conversion import names as obs_names
from atlasloader.conversion import windows
from atlasloader.conversion.convert import POSITION_KEY, SOURCE_KEY, convert
from atlasloader.errors import InvalidDataError

from .test_convert_many import as_objects, assert_obs_like_concat, concat_ref, store_files
from .test_convert_store import write_input

WINDOW = 7


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windows, "ROWS", WINDOW)


def adata_of(n: int, seed: int, prefix: str = "cell_", *, extra: bool = False) -> ad.AnnData:
    """Every kind of obs column; ``extra`` adds columns the other inputs lack."""
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {
            "cat": pd.Categorical(rng.choice(["a", "b", "a10", "a9"], n)),
            "text": rng.choice(["x", "y", "z"], n).astype(object),
            "score": rng.normal(size=n),
            "count": np.arange(n, dtype=np.int64),
            "flag": rng.random(n) > 0.5,
            "nint": pd.array(np.arange(n), dtype="Int64"),
            "nbool": pd.array(rng.random(n) > 0.5, dtype="boolean"),
            "stage": pd.Categorical(
                rng.choice(["early", "late"], n), categories=["early", "late"], ordered=True
            ),
        },
        index=pd.Index([f"{prefix}{i}" for i in range(n)]),
    )
    obs.loc[obs.index[::4], "nint"] = pd.NA
    if extra:
        obs["only_num"] = rng.normal(size=n)
        obs["only_text"] = rng.choice(["p", "q"], n).astype(object)
        obs["only_flag"] = rng.random(n) > 0.5
        obs["count"] = obs["count"].astype(np.int32)
    else:
        obs["cat"] = obs["cat"].astype(str).astype(object)  # strings here, categorical there
        obs["score"] = obs["score"].astype(np.float32)
    x = sp.random(n, 6, density=0.3, format="csr", dtype=np.float32, random_state=seed)
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(6)]))
    adata.obsm["meta"] = pd.DataFrame({"z": np.arange(n)}, index=adata.obs_names)
    return adata


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """.h5ad, Zarr v3 and Zarr v2 inputs: names shared between the first two."""
    tmp = tmp_path_factory.mktemp("obs")
    a = write_input(adata_of(40, 0, extra=True), tmp / "a.h5ad")
    b = write_input(adata_of(25, 1), tmp / "b.zarr")
    c = write_input(adata_of(18, 2, prefix="other_"), tmp / "c.v2.zarr")
    return [str(a), str(b), str(c)]


def convert_quiet(src: list[str] | str, dst: Path, **kwargs: object) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = convert(src, dst, **kwargs)  # type: ignore[arg-type]
    return ad.read_zarr(out)


def unshuffled(result: ad.AnnData) -> pd.DataFrame:
    """A shuffled result's obs back in input order."""
    obs = result.obs
    order = np.argsort(obs[POSITION_KEY].to_numpy())
    return obs.iloc[order].drop(columns=POSITION_KEY)


# --- equal to the in-memory result --------------------------------------------------------------
@pytest.mark.parametrize("shuffle", [False, True])
def test_many_inputs_equal_concat(
    inputs: list[str], tmp_path: Path, small_windows: None, shuffle: bool
) -> None:
    with pytest.warns(UserWarning, match=r"obs_names collide.*'cell_0'.*a\.h5ad.*b\.zarr"):
        out = convert(inputs, tmp_path / "o.zarr", shuffle=shuffle, seed=4)
    result = ad.read_zarr(out)
    ref = concat_ref(inputs, join="outer", index_unique="-")
    # Categorical + strings: anndata.concat sorts those categories lexically, convert (as
    # always) naturally.
    ref.obs["cat"] = ref.obs["cat"].cat.reorder_categories(["a", "a9", "a10", "b"])
    obs = unshuffled(result) if shuffle else result.obs
    assert_obs_like_concat(obs, ref.obs)
    expected_order = [*adata_of(1, 0, extra=True).obs.columns, SOURCE_KEY]
    assert list(result.obs.columns) == expected_order + ([POSITION_KEY] if shuffle else [])
    assert result.obs["count"].dtype == np.int64  # int32 + int64: their common type
    assert str(result.obs["nint"].dtype) == "Int64"
    assert str(result.obs["only_flag"].dtype) == "boolean"
    assert result.obs["only_text"].isna().sum() == 43
    assert list(result.obs["cat"].cat.categories) == ["a", "a9", "a10", "b"]
    assert result.obs["stage"].cat.ordered
    if shuffle:
        perm = result.obs[POSITION_KEY].to_numpy()
        np.testing.assert_array_equal(perm, np.random.default_rng(4).permutation(83))
        assert list(result.obs_names) == list(ref.obs_names[perm])
        # obsm dataframes (read whole) follow the same order, with the names as their index.
        assert list(result.obsm["meta"].index) == list(ref.obs_names[perm])
    else:
        assert list(result.obsm["meta"].index) == list(ref.obs_names)


@pytest.mark.parametrize("shuffle", [False, True])
def test_window_size_changes_nothing(inputs: list[str], tmp_path: Path, shuffle: bool) -> None:
    """A few rows per window writes the very same bytes as the default window."""
    default = convert_quiet(inputs, tmp_path / "default.zarr", shuffle=shuffle)
    del default
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(windows, "ROWS", WINDOW)
        convert_quiet(inputs, tmp_path / "small.zarr", shuffle=shuffle)
    a, b = store_files(tmp_path / "default.zarr"), store_files(tmp_path / "small.zarr")
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], name


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("suffix", [".h5ad", ".zarr", ".v2.zarr"])
def test_single_input_is_copied_as_is(
    tmp_path: Path, small_windows: None, shuffle: bool, suffix: str
) -> None:
    adata = adata_of(30, 5, extra=True)
    src = write_input(adata, tmp_path / f"in{suffix}")
    result = convert_quiet(str(src), tmp_path / "o.zarr", shuffle=shuffle)
    ref = ad.read_h5ad(src) if suffix == ".h5ad" else ad.read_zarr(src)
    if shuffle:
        perm = result.obs[POSITION_KEY].to_numpy()
        pd.testing.assert_frame_equal(result.obs.drop(columns=POSITION_KEY), ref.obs.iloc[perm])
    else:
        pd.testing.assert_frame_equal(result.obs, ref.obs)  # dtypes, categories, order


def test_metadata_as_anndata_writes_it(tmp_path: Path) -> None:
    """Chunks, codecs, dtypes and attributes of every obs array as ``write_elem`` makes them,
    for a column long enough to be split into several chunks."""
    adata = adata_of(120_000, 3)
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    src = write_input(adata, tmp_path / "in.h5ad")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(windows, "ROWS", 50_000)  # windows not aligned with the chunks
        out = convert(str(src), tmp_path / "o.zarr")
    ref_root = zarr.open_group(str(tmp_path / "ref.zarr"), mode="w", zarr_format=3)
    ad.io.write_elem(ref_root, "obs", ad.read_h5ad(src).obs, dataset_kwargs={"shards": None})
    got, want = zarr.open_group(f"{out}/obs"), ref_root["obs"]

    def nodes(group: zarr.Group) -> dict[str, dict]:
        return {k: v.metadata.to_dict() for k, v in group.members(max_depth=None)}

    assert nodes(got) == nodes(want)
    assert got["score"].chunks[0] < adata.n_obs  # several chunks
    for key in ("_index", "score", "cat/codes", "nint/values", "nint/mask"):
        np.testing.assert_array_equal(got[key][:], want[key][:], err_msg=key)


def test_read_lazy_and_registration(inputs: list[str], tmp_path: Path, small_windows: None) -> None:
    from atlasloader import AnnDataManager
    from atlasloader.fields import CategoricalObsField

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = convert(inputs, tmp_path / "o.zarr", shuffle=True)
    lazy = atlasloader.read_lazy(out)
    result = ad.read_zarr(out)
    assert list(lazy.obs_names) == list(result.obs_names)
    for col in ("cat", "score", "nint", "only_text", SOURCE_KEY):
        assert as_objects(lazy.obs[col]) == as_objects(result.obs[col]), col
    manager = AnnDataManager(fields=[CategoricalObsField("batch", "cat")])
    manager.register_fields(lazy)
    mapping = list(manager.get_state_registry("batch").categorical_mapping)
    assert mapping == list(result.obs["cat"].cat.categories)
    codes = np.asarray(manager.get_from_registry("batch")).ravel()
    np.testing.assert_array_equal(codes, result.obs["cat"].cat.codes.to_numpy())


# --- cell names ---------------------------------------------------------------------------------
def test_names_repeated_within_one_input_are_kept(tmp_path: Path, small_windows: None) -> None:
    one, two = adata_of(20, 0), adata_of(15, 1, prefix="other_")
    one.obs_names = [f"dup_{i % 3}" for i in range(20)]  # repeated, but only in one input
    a, b = write_input(one, tmp_path / "a.h5ad"), write_input(two, tmp_path / "b.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no renaming notice
        warnings.filterwarnings("ignore", "Observation names are not unique", UserWarning)
        out = convert([str(a), str(b)], tmp_path / "o.zarr", shuffle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = ad.read_zarr(out)
    perm = result.obs[POSITION_KEY].to_numpy()
    expected = np.array([*one.obs_names, *two.obs_names], dtype=object)[perm]
    assert list(result.obs_names) == list(expected)


def test_collision_reported_for_the_first_shared_name(tmp_path: Path, small_windows: None) -> None:
    """The warning names the first input with a name of an earlier one, and its first such."""
    first, second, third = adata_of(12, 0, "x_"), adata_of(10, 1, "y_"), adata_of(9, 2, "z_")
    third.obs_names = ["z_0", "z_1", "y_7", "x_3", *(f"z_{i}" for i in range(4, 9))]
    paths = [
        str(write_input(a, tmp_path / f"{i}.h5ad")) for i, a in enumerate([first, second, third])
    ]
    with pytest.warns(UserWarning, match=r"'y_7' is in both '.*1\.h5ad' and '.*2\.h5ad'"):
        out = convert(paths, tmp_path / "o.zarr")
    names = list(ad.read_zarr(out).obs_names)
    assert names[:2] == ["x_0-0", "x_1-0"]
    assert names[-9:-5] == ["z_0-2", "z_1-2", "y_7-2", "x_3-2"]


def test_hash_collisions_are_not_name_collisions(
    tmp_path: Path, small_windows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every name hashes the same: candidates everywhere, but the names differ."""
    monkeypatch.setattr(
        obs_names, "hash_names", lambda names: np.full(len(names), 12345, dtype=np.uint64)
    )
    a = write_input(adata_of(20, 0, "a_"), tmp_path / "a.h5ad")
    b = write_input(adata_of(15, 1, "b_"), tmp_path / "b.v2.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out = convert([str(a), str(b)], tmp_path / "o.zarr")
    names = list(ad.read_zarr(out).obs_names)
    assert names == [*(f"a_{i}" for i in range(20)), *(f"b_{i}" for i in range(15))]
    # A shared name among the colliding hashes is still found, exactly.
    c = write_input(adata_of(9, 2, "b_"), tmp_path / "c.zarr")
    with pytest.warns(UserWarning, match=r"'b_0' is in both '.*b\.v2\.zarr' and '.*c\.zarr'"):
        convert([str(a), str(b), str(c)], tmp_path / "o2.zarr")


def test_hash_low_bits_carry_the_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashes equal but for their lowest bits (replaced by the input) are candidates too."""
    monkeypatch.setattr(windows, "ROWS", 3)
    monkeypatch.setattr(
        obs_names,
        "hash_names",
        lambda names: np.array(
            [2 * int(n.split("_")[1]) + (n[0] == "b") for n in names], dtype=np.uint64
        ),
    )
    a = write_input(adata_of(8, 0, "a_"), tmp_path / "a.h5ad")
    b = write_input(adata_of(8, 1, "b_"), tmp_path / "b.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        convert([str(a), str(b)], tmp_path / "o.zarr")


# --- other encodings and errors -----------------------------------------------------------------
def test_nullable_strings_single_input_copied_whole(tmp_path: Path, small_windows: None) -> None:
    """An encoding not read in windows (pandas' nullable strings) is copied whole."""
    src = write_input(adata_of(20, 0), tmp_path / "in.zarr")
    root = zarr.open_group(str(src), mode="r+", use_consolidated=False)
    with ad.settings.override(allow_write_nullable_strings=True):
        values = pd.array(["u", None, "v", "w"] * 5, dtype="string")
        ad.io.write_elem(root["obs"], "label", values)  # write_zarr would make it categorical
    root["obs"].attrs["column-order"] = [*root["obs"].attrs["column-order"], "label"]
    assert root["obs/label"].attrs["encoding-type"] == "nullable-string-array"
    zarr.consolidate_metadata(str(src))
    other = write_input(adata_of(10, 1, "o_"), tmp_path / "other.h5ad")
    with ad.settings.override(allow_write_nullable_strings=True):  # anndata writes it
        result = convert_quiet(str(src), tmp_path / "o.zarr", shuffle=True)
    perm = result.obs[POSITION_KEY].to_numpy()
    ref = ad.read_zarr(src).obs["label"]
    assert as_objects(result.obs["label"]) == as_objects(ref.iloc[perm])
    with pytest.raises(InvalidDataError, match=r"obs\['label'\].*'nullable-string-array'"):
        convert([str(src), str(other)], tmp_path / "o2.zarr")


def test_no_temporary_files_left(inputs: list[str], tmp_path: Path, small_windows: None) -> None:
    out = convert_quiet(inputs, tmp_path / "o.zarr", shuffle=True)
    assert out.n_obs == 83
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr"]
    assert not list((tmp_path / "o.zarr").glob("__*"))
