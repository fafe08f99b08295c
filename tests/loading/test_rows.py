"""``RowSet`` slicing/joining and collating multi-part batches equal plain row selection."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from atlasloader.loading.collate import collate
from atlasloader.loading.pool import ArrayPool
from atlasloader.loading.rows import RowSet
from atlasloader.sampling import Batcher


@st.composite
def buffers(draw: st.DrawFn) -> list[tuple[sp.csr_matrix, np.ndarray]]:
    n_cols = draw(st.integers(1, 9))
    out = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 11))
        seed = draw(st.integers(0, 2**31))
        rng = np.random.default_rng(seed)
        dense = rng.integers(1, 9, size=(n, n_cols)).astype(np.float32)
        dense[rng.random(dense.shape) < 0.6] = 0
        out.append((sp.csr_matrix(dense), rng.permutation(n)))
    return out


@settings(max_examples=120, deadline=None)
@given(bufs=buffers(), batch_size=st.integers(1, 13), sparse=st.booleans())
def test_batches_of_rowsets_equal_the_permuted_rows(
    bufs: list[tuple[sp.csr_matrix, np.ndarray]], batch_size: int, sparse: bool
) -> None:
    # The loader's path: each buffer is a RowSet (decoded block + permutation), the Batcher cuts
    # and joins them, collate gathers. The result must be the permuted rows, batch by batch.
    expected = np.concatenate([m.toarray()[order] for m, order in bufs])
    codes = [np.arange(m.shape[0]) * 10 + i for i, (m, _) in enumerate(bufs)]
    expected_codes = np.concatenate([c[order] for c, (_, order) in zip(codes, bufs)])
    batcher: Batcher[RowSet] = Batcher(batch_size, concat=RowSet.concat)
    sets = [
        RowSet([({"X": m, "c": c.reshape(-1, 1)}, order)]) for (m, order), c in zip(bufs, codes)
    ]
    pool = ArrayPool(2)
    got, got_codes = [], []
    for batch in batcher.rebatch(sets):
        x = collate(list(batch.blocks("X")), np.dtype(np.float32), sparse, False, pool)
        got.append((x.to_dense() if sparse else x).numpy().copy())
        c = collate(list(batch.blocks("c")), np.dtype(np.int64), sparse, False, pool)
        got_codes.append(c.numpy()[:, 0].copy())
        assert len(batch) == x.shape[0] <= batch_size
    n_cols = bufs[0][0].shape[1]
    np.testing.assert_array_equal(np.concatenate(got) if got else np.zeros((0, n_cols)), expected)
    if got_codes:
        np.testing.assert_array_equal(np.concatenate(got_codes), expected_codes)


def test_rowset_slices_across_parts() -> None:
    a = {"x": np.arange(5)}
    b = {"x": np.arange(5, 9)}
    rs = RowSet([(a, np.array([4, 3, 2])), (b, np.array([0, 3]))])
    part = rs[2:4]
    assert len(part) == 2
    assert [(src["x"][sel]).tolist() for src, sel in part.parts] == [[2], [5]]
    assert len(rs[5:9]) == 0
    assert len(RowSet.concat([rs, part])) == 7
