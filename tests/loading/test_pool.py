"""``ArrayPool``: recycled output arrays are never ones a consumer still holds."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from atlasloader.loading.collate import collate, densify_parts
from atlasloader.loading.pool import ArrayPool, pool_for

F32 = np.dtype(np.float32)


def test_a_held_array_is_never_lent_again() -> None:
    pool = ArrayPool(4)
    held = [pool.take((3, 4), F32, zeroed=True)[0] for _ in range(4)]
    ids = {id(a) for a in held}
    assert len(ids) == 4
    extra, lease = pool.take((3, 4), F32, zeroed=True)
    assert lease is None  # every pooled array is in use: a fresh, unpooled one
    assert id(extra) not in ids
    assert pool.reused == 0


def test_a_dropped_array_is_reused_and_rezeroed() -> None:
    pool = ArrayPool(2)
    m = sp.random(5, 7, density=0.5, format="csr", random_state=0, dtype=np.float32)
    first = densify_parts([(m, None)], 7, F32, pool)
    np.testing.assert_array_equal(first, m.toarray())
    first_id = id(first)
    del first
    other = sp.random(5, 7, density=0.3, format="csr", random_state=1, dtype=np.float32)
    second = densify_parts([(other, np.array([4, 0, 2, 2, 1]))], 7, F32, pool)
    assert id(second) == first_id
    assert pool.reused == 1
    # Nothing of the first batch survives the re-zeroing.
    np.testing.assert_array_equal(second, other.toarray()[[4, 0, 2, 2, 1]])


def test_a_tensor_view_keeps_its_array_out_of_the_pool() -> None:
    pool = ArrayPool(2)
    m = sp.csr_matrix(np.arange(12, dtype=np.float32).reshape(3, 4))
    t = collate([(m, None)], F32, sparse=False, pin_memory=False, pool=pool)
    view = t[1:, :2]  # shares the storage, which holds the array
    expected = view.clone()
    del t
    gc.collect()
    for seed in range(5):
        other = sp.random(3, 4, density=1.0, format="csr", random_state=seed, dtype=np.float32)
        collate([(other, None)], F32, sparse=False, pin_memory=False, pool=pool)
    assert torch.equal(view, expected)


def test_numpy_view_of_the_tensor_also_holds_it() -> None:
    pool = ArrayPool(1)
    m = sp.csr_matrix(np.ones((2, 2), dtype=np.float32))
    arr = collate([(m, None)], F32, sparse=False, pin_memory=False, pool=pool).numpy()
    zero = sp.csr_matrix((2, 2), dtype=np.float32)
    for _ in range(3):
        collate([(zero, None)], F32, sparse=False, pin_memory=False, pool=pool)
    np.testing.assert_array_equal(arr, np.ones((2, 2)))


def test_an_interrupted_densify_leaves_no_garbage_for_the_next_borrower() -> None:
    pool = ArrayPool(1)
    good = sp.csr_matrix(np.full((2, 3), 5.0, dtype=np.float32))
    densify_parts([(good, None)], 3, F32, pool)  # array now full of 5s, dropped
    ones = sp.csr_matrix(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(IndexError):  # the first part is written before the second fails
        densify_parts([(ones, None), (ones, np.array([7]))], 3, F32, pool)
    out = densify_parts([(sp.csr_matrix((2, 3), dtype=np.float32), None)], 3, F32, pool)
    np.testing.assert_array_equal(out, np.zeros((2, 3)))


def test_other_shapes_and_dtypes_get_their_own_arrays() -> None:
    pool = ArrayPool(2)
    a, _ = pool.take((2, 2), F32, zeroed=True)
    del a
    b, _ = pool.take((3, 2), F32, zeroed=True)
    c, _ = pool.take((2, 2), np.dtype(np.float64), zeroed=True)
    assert b.shape == (3, 2)
    assert c.dtype == np.float64
    assert len(pool) == 2  # the free (2, 2) array made room


def test_dense_gather_reuses_without_zeroing_cost_but_overwrites_every_row() -> None:
    pool = ArrayPool(1)
    block = np.arange(20, dtype=np.float32).reshape(5, 4)
    t = collate([(block, np.array([3, 1]))], F32, sparse=False, pin_memory=False, pool=pool)
    assert t.tolist() == [block[3].tolist(), block[1].tolist()]
    del t
    t2 = collate([(block, np.array([0, 4]))], F32, sparse=False, pin_memory=False, pool=pool)
    assert t2.tolist() == [block[0].tolist(), block[4].tolist()]
    assert pool.reused == 1


def test_pool_for_counts_the_consumers_batches() -> None:
    assert pool_for(3).capacity == 6
