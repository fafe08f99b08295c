"""``loess``: the prefix-sum evaluation equals LOESS computed point by point, and is fast."""

from __future__ import annotations

import time

import numpy as np
import pytest

from atlasloader.errors import InvalidArgumentError, InvalidDataError
from atlasloader.preprocess.loess import loess

from .conftest import loess_reference


def _cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(4)
    x = rng.normal(size=400)
    mean = rng.gamma(0.3, 2.0, 500) + 1e-4  # like log10 gene means: long left tail
    ties = np.round(rng.normal(size=300), 1)  # many points share an x
    clusters = np.concatenate([rng.normal(0, 0.01, 150), rng.normal(5, 0.5, 100), [40.0, 41.0]])
    return {
        "normal": (x, np.sin(2 * x) + rng.normal(0, 0.1, x.size)),
        "gene-means": (np.log10(mean), np.log10(mean + mean**2 * rng.gamma(2, 0.1, mean.size))),
        "ties": (ties, ties**2 + rng.normal(0, 0.1, ties.size)),
        "clusters": (clusters, np.cos(clusters) + rng.normal(0, 0.1, clusters.size)),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("span", [0.05, 0.3, 0.75, 1.0, 1.5])
def test_equals_the_point_by_point_fit(name: str, span: float) -> None:
    x, y = CASES[name]
    np.testing.assert_allclose(loess(x, y, span), loess_reference(x, y, span), atol=1e-9)


def test_order_of_points_does_not_matter() -> None:
    x, y = CASES["gene-means"]
    perm = np.random.default_rng(0).permutation(x.size)
    np.testing.assert_allclose(loess(x[perm], y[perm], 0.3), loess(x, y, 0.3)[perm], atol=1e-12)


def test_reproduces_a_quadratic_and_a_constant() -> None:
    x = np.random.default_rng(1).uniform(-3, 3, 200)
    np.testing.assert_allclose(loess(x, 2 - x + 0.5 * x**2, 0.2), 2 - x + 0.5 * x**2, atol=1e-9)
    same_x = np.full(10, 2.0)  # every neighbourhood is one x: the fit is the mean
    y = np.arange(10.0)
    np.testing.assert_allclose(loess(same_x, y, 0.5), np.full(10, y.mean()))


def test_bad_inputs_say_what_is_wrong() -> None:
    x = np.arange(10.0)
    with pytest.raises(InvalidArgumentError, match="at least 3"):
        loess(x, x, 0.2)  # 2 points per neighbourhood
    with pytest.raises(InvalidArgumentError, match="span must be positive"):
        loess(x, x, 0.0)
    with pytest.raises(InvalidDataError, match="same length"):
        loess(x, x[:-1], 0.5)
    with pytest.raises(InvalidDataError, match="NaN or infinite"):
        loess(np.append(x, np.nan), np.append(x, 0.0), 0.5)


def test_tens_of_thousands_of_genes_in_well_under_a_second() -> None:
    rng = np.random.default_rng(0)
    mean = rng.gamma(0.3, 2.0, 40_000) + 1e-4
    x, y = np.log10(mean), np.log10(mean + mean**2 * rng.gamma(2.0, 0.1, mean.size))
    loess(x[:2000], y[:2000], 0.3)
    t0 = time.perf_counter()
    fitted = loess(x, y, 0.3)
    elapsed = time.perf_counter() - t0
    assert np.isfinite(fitted).all()
    assert elapsed < 2.0  # ~0.1 s here; generous for a loaded CI machine
