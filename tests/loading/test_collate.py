"""``densify``, ``to_tensor`` and ``to_device``: rows to (sparse) tensors of the chosen dtype."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasloader.loading.collate import densify, to_tensor
from atlasloader.loading.device import to_device

DTYPES = [np.float32, np.float64, np.int32, np.int64]


@st.composite
def csr_matrices(draw: st.DrawFn) -> sp.csr_matrix:
    n_rows = draw(st.integers(0, 12))
    n_cols = draw(st.integers(1, 12))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dense = rng.integers(-50, 50, size=(n_rows, n_cols)).astype(np.float64)
    dense[rng.random(dense.shape) >= density] = 0
    m = sp.csr_matrix(dense)
    if draw(st.booleans()) and m.nnz:
        # Rows permuted (as the loader's in-buffer shuffle does) and column indices unsorted
        # within each row: still a valid CSR matrix.
        m = m[rng.permutation(n_rows)]
        for r in range(n_rows):
            lo, hi = m.indptr[r], m.indptr[r + 1]
            perm = lo + rng.permutation(hi - lo)
            m.indices[lo:hi], m.data[lo:hi] = m.indices[perm], m.data[perm]
        m.has_sorted_indices = False
    return m


@settings(max_examples=150, deadline=None)
@given(m=csr_matrices(), dtype=st.sampled_from(DTYPES))
def test_densify_equals_toarray(m: sp.csr_matrix, dtype: type) -> None:
    out = densify(m, np.dtype(dtype))
    assert out.dtype == np.dtype(dtype)
    assert out.shape == m.shape
    np.testing.assert_array_equal(out, m.toarray().astype(dtype))


@settings(max_examples=60, deadline=None)
@given(m=csr_matrices(), dtype=st.sampled_from(DTYPES))
def test_to_tensor_sparse_round_trip(m: sp.csr_matrix, dtype: type) -> None:
    t = to_tensor(m, np.dtype(dtype), sparse=True, pin_memory=False)
    assert t.layout == torch.sparse_csr
    assert t.dtype == torch.from_numpy(np.zeros(0, dtype)).dtype
    assert tuple(t.shape) == m.shape
    np.testing.assert_array_equal(t.to_dense().numpy(), m.toarray().astype(dtype))
    dense = to_tensor(m, np.dtype(dtype), sparse=False, pin_memory=False)
    assert dense.layout == torch.strided
    np.testing.assert_array_equal(dense.numpy(), m.toarray().astype(dtype))


def test_densify_of_a_row_slice_with_offset_indptr() -> None:
    m = sp.random(30, 9, density=0.4, format="csr", random_state=1, dtype=np.float32)
    rows = m[7:19]
    np.testing.assert_array_equal(densify(rows, np.dtype(np.float32)), rows.toarray())


@pytest.mark.parametrize(
    ("np_dtype", "torch_dtype"),
    [
        (np.float32, torch.float32),
        (np.float64, torch.float64),
        (np.int64, torch.int64),
        (np.int32, torch.int32),
        (np.int16, torch.int16),
        (np.uint8, torch.uint8),
        (np.bool_, torch.bool),
    ],
)
def test_to_tensor_dense_dtypes(np_dtype: type, torch_dtype: torch.dtype) -> None:
    block = np.arange(12, dtype=np.int64).reshape(4, 3) % 5
    t = to_tensor(block, np.dtype(np_dtype), sparse=False, pin_memory=False)
    assert t.dtype == torch_dtype
    assert tuple(t.shape) == (4, 3)
    np.testing.assert_array_equal(t.numpy(), block.astype(np_dtype))


def test_to_tensor_makes_non_contiguous_input_contiguous() -> None:
    block = np.arange(24, dtype=np.float64).reshape(4, 6)[:, ::2]
    t = to_tensor(block, np.dtype(np.float32), sparse=False, pin_memory=False)
    assert t.is_contiguous()
    np.testing.assert_array_equal(t.numpy(), block.astype(np.float32))


def test_to_tensor_sparse_flag_ignored_for_dense_blocks() -> None:
    block = np.eye(3)
    t = to_tensor(block, np.dtype(np.float32), sparse=True, pin_memory=False)
    assert t.layout == torch.strided


def test_to_tensor_sparse_layout_and_index_dtypes() -> None:
    m = sp.csr_matrix(np.array([[0, 1, 0], [0, 0, 0], [2, 0, 3]], dtype=np.float32))
    m.indices = m.indices.astype(np.int32)
    m.indptr = m.indptr.astype(np.int32)
    t = to_tensor(m, np.dtype(np.float32), sparse=True, pin_memory=False)
    assert t.layout == torch.sparse_csr
    assert t.crow_indices().dtype == torch.int64
    assert t.col_indices().dtype == torch.int64
    assert t.crow_indices().tolist() == [0, 1, 1, 3]
    assert t.col_indices().tolist() == [1, 0, 2]
    assert t.values().tolist() == [1.0, 2.0, 3.0]


def test_to_tensor_accepts_other_sparse_formats() -> None:
    m = sp.random(6, 5, density=0.5, format="coo", random_state=0)
    t = to_tensor(m, np.dtype(np.float32), sparse=True, pin_memory=False)
    assert t.layout == torch.sparse_csr
    np.testing.assert_allclose(t.to_dense().numpy(), m.toarray().astype(np.float32))


def test_pin_memory_on_cpu_only_machine() -> None:
    m = sp.random(4, 4, density=0.5, format="csr", random_state=0)
    t = to_tensor(m, np.dtype(np.float32), sparse=False, pin_memory=True)
    np.testing.assert_allclose(t.numpy(), m.toarray().astype(np.float32))
    assert t.is_pinned() == torch.cuda.is_available()
    # Sparse batches are pinned too (component by component), so their copies are async.
    s = to_tensor(m, np.dtype(np.float32), sparse=True, pin_memory=True)
    np.testing.assert_allclose(s.to_dense().numpy(), m.toarray().astype(np.float32))
    for part in (s.crow_indices(), s.col_indices(), s.values()):
        assert part.is_pinned() == torch.cuda.is_available()


def test_to_device_none_is_identity_and_cpu_densifies_sparse() -> None:
    m = sp.csr_matrix(np.array([[0.0, 4.0], [5.0, 0.0]], dtype=np.float32))
    t = to_tensor(m, np.dtype(np.float32), sparse=True, pin_memory=False)
    assert to_device(t, None) is t
    moved = to_device(t, "cpu")
    assert moved.layout == torch.strided
    assert moved.tolist() == [[0.0, 4.0], [5.0, 0.0]]
    dense = torch.ones(2, 2)
    assert to_device(dense, torch.device("cpu")).data_ptr() == dense.data_ptr()
