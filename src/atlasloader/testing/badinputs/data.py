"""Cases: data that does not fit (X's dtype, obs columns, shapes, CSR arrays, counts,
categories)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import errors as E
from .actions import _PRE, _SETUP, _api_preprocess, _api_setup, _cli_preprocess, _cli_setup
from .build import _anndata_store, _copy, _set_values, _then, _zarr_edit
from .case import N_CELLS, N_GENES, Case


def _string_x(root: Any) -> None:
    del root["X"]
    arr = root.create_array("X", shape=(N_CELLS, N_GENES), dtype=str, chunks=(64, N_GENES))
    arr[...] = np.full((N_CELLS, N_GENES), "1", dtype=object)
    arr.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})


def _string_column(root: Any) -> None:
    import anndata as ad

    values = np.array([str(i % 7) for i in range(N_CELLS)], dtype=object)
    ad.io.write_elem(root["obs"], "age", values)
    order = list(root["obs"].attrs["column-order"])
    root["obs"].attrs["column-order"] = [*order, "age"]


def _short_column(root: Any) -> None:
    import anndata as ad

    ad.io.write_elem(root["obs"], "age", np.arange(N_CELLS - 1, dtype=np.float32))
    order = list(root["obs"].attrs["column-order"])
    root["obs"].attrs["column-order"] = [*order, "age"]


def _x_rows(n_rows: int) -> Any:
    def edit(root: Any) -> None:
        import anndata as ad
        import scipy.sparse as sp

        del root["X"]
        x = sp.random(n_rows, N_GENES, density=0.2, format="csr", rng=0, dtype=np.float32)
        x.data[:] = 1
        ad.io.write_elem(root, "X", x)

    return edit


def _short_indptr(root: Any) -> None:
    values = np.asarray(root["X/indptr"][...])[:-1]
    del root["X/indptr"]
    arr = root["X"].create_array("indptr", shape=values.shape, dtype=values.dtype, chunks=(64,))
    arr[...] = values


def _swap_indptr(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b[10], b[11] = a[11], a[10]
    b[11] = a[10] - 3 if a[10] >= 3 else b[11]
    return b


def _index_oob(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b[7] = N_GENES + 5
    return b


def _index_negative(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b[7] = -1
    return b


def _negative(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b[:50] = -1
    return b


def _fractional(a: np.ndarray) -> np.ndarray:
    return a + 0.5


def _nan_codes(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b[5] = -1  # anndata's missing-value code
    return b


def _many_categories(root: Any) -> None:
    import anndata as ad
    import pandas as pd

    cats = [f"donor{i}" for i in range(100_001)]
    codes = np.arange(N_CELLS) % len(cats)
    ad.io.write_elem(root["obs"], "donor", pd.Categorical.from_codes(codes, categories=cats))
    order = list(root["obs"].attrs["column-order"])
    root["obs"].attrs["column-order"] = [*order, "donor"]


def _empty_categories(root: Any) -> None:
    import anndata as ad
    import pandas as pd

    codes = np.asarray(root["obs/batch/codes"][...])
    ad.io.write_elem(root["obs"], "batch", pd.Categorical.from_codes(codes, ["", "b1", "b2"]))


def _missing_categories(root: Any) -> None:
    import anndata as ad
    import pandas as pd

    values = pd.Series(["x", None, "y"] * (N_CELLS // 3), dtype=object)
    ad.io.write_elem(root["obs"], "batch", pd.Categorical(values))


def _mixed_categories(root: Any) -> None:
    import anndata as ad

    del root["obs/batch/categories"]
    cats = np.array(["1", "1.0", " 1"], dtype=object)  # look alike when mixed types collide
    ad.io.write_elem(root["obs/batch"], "categories", cats)


def _int_categories(root: Any) -> None:
    import anndata as ad
    import pandas as pd

    codes = np.asarray(root["obs/batch/codes"][...])
    ad.io.write_elem(root["obs"], "batch", pd.Categorical.from_codes(codes, [10, 20, 30]))


CASES: list[Case] = [
    # --- dtypes --------------------------------------------------------------------------------
    Case("x_string_dtype", "dtypes", _then(_copy("chunked"), _zarr_edit(_string_x)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.InvalidTypeError,
         r"adata\.X.*(str|dtype)", _SETUP),
    Case("string_column_as_continuous", "dtypes",
         _then(_copy("chunked"), _zarr_edit(_string_column)),
         _api_setup(continuous_covariate_keys=["age"]),
         _cli_setup("--continuous-covariate-keys", "age"), E.InvalidDataError, r"age.*numbers",
         "SCVI.setup_anndata(store, continuous_covariate_keys=['age'])"),
    Case("categorical_as_size_factor", "dtypes", _copy("chunked"),
         _api_setup(size_factor_key="batch"), _cli_setup("--size-factor-key", "batch"),
         E.InvalidDataError, r"batch.*numbers",
         "SCVI.setup_anndata(store, size_factor_key='batch')"),
    # --- shapes --------------------------------------------------------------------------------
    Case("zero_cells", "shape", _anndata_store(n_obs=0), _api_setup(),
         _cli_setup(), E.InvalidDataError, r"(0 cells|no cells|zero cells|n_obs)",
         "SCVI.setup_anndata(store)"),
    Case("zero_genes", "shape", _anndata_store(n_vars=0), _api_setup(),
         _cli_setup(), E.InvalidDataError, r"(0 genes|no genes|zero genes|n_vars)",
         "SCVI.setup_anndata(store)"),
    Case("duplicate_obs_names", "shape", _anndata_store(obs_names=["c"] * N_CELLS),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0,
         note="anndata and scvi-tools accept duplicate obs names (anndata warns when it reads "
              "them in memory); nothing atlasloader does relies on unique cell names"),
    Case("obs_fewer_than_x_rows", "shape",
         _then(_copy("chunked"), _zarr_edit(_x_rows(N_CELLS + 10))),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.ShapeMismatchError,
         r"X.*310.*300|300.*310", _SETUP),
    Case("obs_column_short", "shape", _then(_copy("chunked"), _zarr_edit(_short_column)),
         _api_setup(continuous_covariate_keys=["age"]),
         _cli_setup("--continuous-covariate-keys", "age"), E.ShapeMismatchError, r"age.*299",
         "SCVI.setup_anndata(store, continuous_covariate_keys=['age'])"),
    Case("indptr_not_monotonic", "shape",
         _then(_copy("chunked"), _zarr_edit(_set_values("X/indptr", _swap_indptr))),
         _api_preprocess, _cli_preprocess, E.InvalidDataError, r"X.*indptr decreases at row 10",
         _PRE),
    Case("indptr_short", "shape", _then(_copy("chunked"), _zarr_edit(_short_indptr)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.InvalidDataError,
         r"indptr.*300", _SETUP),
    Case("indices_out_of_range", "shape",
         _then(_copy("chunked"), _zarr_edit(_set_values("X/indices", _index_oob))),
         _api_preprocess, _cli_preprocess, E.InvalidDataError,
         r"X.*column index 55.*out of range.*50 genes", _PRE),
    Case("indices_negative", "shape",
         _then(_copy("chunked"), _zarr_edit(_set_values("X/indices", _index_negative))),
         _api_preprocess, _cli_preprocess, E.InvalidDataError,
         r"X.*column index -1.*out of range.*50 genes", _PRE),
    Case("negative_counts", "counts",
         _then(_copy("chunked"), _zarr_edit(_set_values("X/data", _negative))),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0, warns=r"adata\.X does not contain unnormalized count data",
         note="scvi-tools warns (UserWarning) and registers: is_count_data is a check, not a "
              "refusal; the CLI prints it as one 'atlasloader: warning:' line"),
    Case("fractional_counts", "counts",
         _then(_copy("chunked"), _zarr_edit(_set_values("X/data", _fractional))),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0, warns=r"adata\.X does not contain unnormalized count data",
         note="as negative counts: scvi-tools' UserWarning, registration goes on"),
    # --- categories ----------------------------------------------------------------------------
    Case("nan_category", "categories",
         _then(_copy("chunked"), _zarr_edit(_set_values("obs/batch/codes", _nan_codes))),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.InvalidDataError,
         r"batch.*(NaN|missing)", _SETUP),
    Case("none_category", "categories", _then(_copy("chunked"), _zarr_edit(_missing_categories)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.InvalidDataError,
         r"batch.*(NaN|missing)", _SETUP),
    Case("empty_string_category", "categories",
         _then(_copy("chunked"), _zarr_edit(_empty_categories)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0,
         note="'' is a category like any other for pandas, anndata and scvi-tools; refusing it "
              "would break stores scvi-tools registers"),
    Case("mixed_type_categories", "categories",
         _then(_copy("chunked"), _zarr_edit(_mixed_categories)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0,
         note="stored categories are strings: '1', '1.0' and ' 1' are distinct labels "
              "(anndata cannot store a categorical mixing types)"),
    Case("integer_categories", "categories", _then(_copy("chunked"), _zarr_edit(_int_categories)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0, note="integer categories are valid in pandas and scvi-tools"),
    Case("too_many_categories", "categories", _then(_copy("chunked"), _zarr_edit(_many_categories)),
         _api_setup(batch_key="donor"), _cli_setup("--batch-key", "donor"), None, "",
         "SCVI.setup_anndata(store, batch_key='donor')", cli_exit=0,
         warns=r"adata\.obs\['donor'\] has fewer than 3 cells",
         note="scvi-tools registers any number of categories; the 100,001-entry mapping is "
              "computed with dask and persisted as JSON in seconds, with scvi-tools' warning "
              "about categories of fewer than 3 cells"),
]  # fmt: skip
