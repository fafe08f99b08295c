"""The generative model of the synthetic atlas (no I/O).

Counts follow the multinomial picture of UMI sampling: each cell gets a library size, and its
UMIs are drawn from Zipf-like gene weights (a few genes are very common), plus a small share
from marker genes of its cell type (``labels``) and of its batch (a batch effect). Cells are
grouped by batch in contiguous blocks, as in a concatenated atlas.

Rows are made in fixed tiles, each from its own random stream ``(seed, _TILE, tile)``, so any
tile can be regenerated alone and the content does not depend on how rows are written.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import ndtri

from ..errors import InvalidArgumentError, InvalidTypeError

_ZIPF_EXPONENT = 1.0
_DEPTH_SIGMA = 0.35  # log-scale spread of library sizes within a batch
_LABEL_SHARE = 0.10  # share of a cell's UMIs drawn from its cell type's markers
_BATCH_SHARE = 0.05  # share drawn from genes specific to its batch
_N_MARKERS = 20
_TILE_ELEMS = 1 << 20  # cells x genes per tile: its dense count buffer stays ~8 MB
# Independent random streams: (seed, stream[, tile]).
_LAYOUT, _MODEL, _TILE = 0, 1, 2


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"{name} must be an integer, got {type(value).__name__} {value!r}"
        raise InvalidTypeError(msg)
    if value < minimum:
        msg = f"{name} must be >= {minimum}, got {value}"
        raise InvalidArgumentError(msg)
    return int(value)


def atlas_batch_layout(n_cells: int, n_batches: int, seed: int = 0) -> np.ndarray:
    """Boundaries of the contiguous batch blocks of a synthetic atlas.

    Batch sizes are uneven (Dirichlet proportions), every batch has at least one cell.

    Returns
    -------
    ``int64`` array of length ``n_batches + 1``: batch ``b`` holds rows
    ``bounds[b]:bounds[b + 1]``.

    Examples
    --------
    >>> bounds = atlas_batch_layout(1000, 4, seed=0)
    >>> int(bounds[0]), int(bounds[-1]), len(bounds)
    (0, 1000, 5)
    """
    n_cells = check_int("n_cells", n_cells, 1)
    n_batches = check_int("n_batches", n_batches, 1)
    seed = check_int("seed", seed, 0)
    if n_batches > n_cells:
        msg = f"n_batches ({n_batches}) must not exceed n_cells ({n_cells})"
        raise InvalidArgumentError(msg)
    rng = np.random.default_rng([seed, _LAYOUT])
    sizes = 1 + rng.multinomial(n_cells - n_batches, rng.dirichlet(np.full(n_batches, 2.0)))
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table: exact O(1) draws from a discrete distribution."""
    m = len(p)
    prob = (p * m).tolist()
    alias = list(range(m))
    small = [i for i, q in enumerate(prob) if q < 1.0]
    large = [i for i, q in enumerate(prob) if q >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        alias[s] = g
        prob[g] -= 1.0 - prob[s]
        (small if prob[g] < 1.0 else large).append(g)
    for i in small + large:  # leftovers are 1 up to rounding
        prob[i] = 1.0
    return np.asarray(prob, dtype=np.float32), np.asarray(alias, dtype=np.int64)


class AtlasModel:
    """Every random choice of the atlas; :meth:`tile` regenerates any tile of rows."""

    def __init__(
        self, n_cells: int, n_genes: int, n_batches: int, n_labels: int, nnz: int, seed: int
    ) -> None:
        self.n_cells, self.n_genes, self.seed = n_cells, n_genes, seed
        self.bounds = atlas_batch_layout(n_cells, n_batches, seed)
        rng = np.random.default_rng([seed, _MODEL])
        weights = (1.0 + rng.permutation(n_genes)) ** -_ZIPF_EXPONENT
        self.weights = weights / weights.sum()
        self.prob, self.alias = _alias_table(self.weights)
        k = min(_N_MARKERS, n_genes)
        self.markers = np.stack([rng.choice(n_genes, k, replace=False) for _ in range(n_labels)])
        self.batch_genes = np.stack(
            [rng.choice(n_genes, k, replace=False) for _ in range(n_batches)]
        )
        self.label_cdf = np.cumsum(rng.dirichlet(np.full(n_labels, 2.0), size=n_batches), axis=1)
        self.batch_depth = rng.lognormal(0.0, 0.2, size=n_batches)
        self.depth = self._calibrate(nnz)
        self.tile_rows = max(1, min(4096, _TILE_ELEMS // n_genes))
        self.n_tiles = -(-n_cells // self.tile_rows)

    def _calibrate(self, nnz: int) -> float:
        """Mean library size whose expected number of detected genes is ``nnz``."""
        q = (1.0 - _LABEL_SHARE - _BATCH_SHARE) * self.weights
        np.add.at(q, self.markers[0], _LABEL_SHARE / self.markers.shape[1])
        np.add.at(q, self.batch_genes[0], _BATCH_SHARE / self.batch_genes.shape[1])
        z = ndtri((np.arange(16) + 0.5) / 16)
        spread = np.exp(_DEPTH_SIGMA * z - _DEPTH_SIGMA**2 / 2)
        share = np.diff(self.bounds) / self.n_cells
        factors = (self.batch_depth[:, None] * spread[None, :]).ravel()
        weight = np.repeat(share, len(spread)) / len(spread)
        target = min(float(nnz), 0.999 * self.n_genes)

        def detected(depth: float) -> float:
            lam = depth * factors[:, None] * q[None, :]
            return float(weight @ (1.0 - np.exp(-lam)).sum(axis=1))

        lo, hi = 1.0, float(max(nnz, 1))
        while detected(hi) < target:
            lo, hi = hi, hi * 2.0
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if detected(mid) < target else (lo, mid)
        return hi

    def tile(self, k: int, dtype: np.dtype, dense: bool) -> tuple[np.ndarray, ...]:
        """Rows of tile ``k``: ``(labels, library sizes, X block)``.

        The X block is ``(row_nnz, indices, data)`` of the tile's CSR rows, or the dense
        ``(rows, genes)`` array when ``dense``.
        """
        r0 = k * self.tile_rows
        t = min(self.n_cells, r0 + self.tile_rows) - r0
        m = self.n_genes
        rng = np.random.default_rng([self.seed, _TILE, k])
        cells = np.arange(t, dtype=np.int64)
        batch = np.searchsorted(self.bounds, r0 + cells, side="right") - 1
        u = rng.random(t)[:, None]
        labels = np.minimum((u >= self.label_cdf[batch]).sum(axis=1), self.markers.shape[0] - 1)
        depth = self.depth * self.batch_depth[batch]
        depth = depth * np.exp(_DEPTH_SIGMA * rng.standard_normal(t) - _DEPTH_SIGMA**2 / 2)
        lib = np.maximum(1, np.rint(depth)).astype(np.int64)
        # UMI order within a cell is irrelevant to the counts, so each source's UMIs are drawn
        # as one block: no per-UMI choice of source.
        n_label = rng.binomial(lib, _LABEL_SHARE)
        n_batch = rng.binomial(lib - n_label, _BATCH_SHARE / (1.0 - _LABEL_SHARE))
        n_zipf = lib - n_label - n_batch
        keys = [np.repeat(cells * m, n_zipf) + self._zipf(rng, int(n_zipf.sum()))]
        for table, of, n in ((self.markers, labels, n_label), (self.batch_genes, batch, n_batch)):
            owner = np.repeat(cells, n)
            pick = rng.integers(0, table.shape[1], size=len(owner))
            keys.append(owner * m + table[of[owner], pick])
        counts = np.bincount(np.concatenate(keys), minlength=t * m)
        if dense:
            return labels, lib, counts.reshape(t, m).astype(dtype)
        flat = np.flatnonzero(counts != 0)  # row-major: genes sorted within each row
        row_nnz = np.bincount(flat // m, minlength=t)
        return labels, lib, row_nnz, (flat % m).astype(np.int32), counts[flat].astype(dtype)

    def _zipf(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` alias-method draws from the Zipf gene weights."""
        idx = rng.integers(0, self.n_genes, size=n)
        out = self.alias[idx]
        np.copyto(out, idx, where=rng.random(n, dtype=np.float32) < self.prob[idx])
        return out
