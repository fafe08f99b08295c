"""Tests of :mod:`atlasloader.benchmarking.bench`: fields filled and sane, tables render."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from atlasloader.benchmarking.bench import (
    COLUMNS,
    BenchResult,
    batch_entropy,
    bench_store,
    format_markdown,
    format_table,
    ideal_entropy,
    measure_loader,
    peak_rss_bytes,
)
from atlasloader.data import make_atlas_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("bench") / "atlas.zarr"
    return make_atlas_store(path, n_cells=5_000, n_genes=200, n_batches=10, nnz_per_cell=20)


def _check_sane(r: BenchResult) -> None:
    assert r.cells_per_s > 0
    assert r.time_to_first_batch_s >= 0
    assert r.peak_rss_gb > 0
    assert 0 < r.entropy_ratio <= 1.2
    assert r.n_cells > 0
    assert r.seconds > 0


def test_bench_store_dense(store: str) -> None:
    r = bench_store(store, n_batches=15, warmup_batches=2)
    _check_sane(r)
    assert r.n_batches == 15
    assert r.batch_size == 512
    assert r.loader == "atlasloader"
    assert r.settings["n_obs"] == 5_000
    assert r.settings["dense"] is True
    # Default knobs on a store sorted by batch still give near-random batches.
    assert r.entropy_ratio > 0.9


def test_bench_store_sparse_and_knobs(store: str) -> None:
    r = bench_store(store, dense=False, n_batches=5, warmup_batches=0)
    _check_sane(r)
    assert "sparse" in r.loader


def test_long_contiguous_reads_lower_the_entropy(store: str) -> None:
    # One 256-row run per buffer of a store sorted by batch: each batch spans few categories.
    local = bench_store(store, rows_per_read=256, reads_per_buffer=1, n_batches=9)
    default = bench_store(store, n_batches=9)
    assert 0 < local.entropy_ratio < default.entropy_ratio - 0.2
    assert "rows_per_read=256" in local.loader


def test_result_round_trips_through_json(store: str) -> None:
    r = bench_store(store, n_batches=3, warmup_batches=0)
    d = json.loads(json.dumps(r.to_dict()))
    assert BenchResult.from_dict(d) == r
    assert r.with_(loader="x").loader == "x"


def test_measure_loader_restarts_epochs_and_counts() -> None:
    epoch = [{"X": np.zeros((4, 3)), "batch": np.array([0, 1, 0, 1])} for _ in range(3)]
    r = measure_loader(
        lambda: epoch,
        n_batches=7,
        warmup_batches=5,
        category_key="batch",
        categories=np.array([0, 1] * 10),
    )
    assert (r.n_batches, r.n_cells, r.batch_size) == (7, 28, 4)
    assert r.entropy_mean == pytest.approx(math.log(2))
    # Perfectly balanced batches of 4 beat random ones (which are often 3:1 or 4:0).
    assert r.entropy_ratio > 1


def test_measure_loader_one_pass_and_callable_key() -> None:
    batches = [(np.zeros((2, 1)), np.array([i, i])) for i in range(6)]
    r = measure_loader(lambda: batches, warmup_batches=2, category_key=lambda b: b[1])
    assert r.n_batches == 3  # the rest of the first pass after the first batch and warm-up
    assert r.entropy_mean == 0.0  # one category per batch
    assert r.entropy_ratio == 0.0  # ideal drawn from the categories seen: mixed batches
    assert math.isnan(measure_loader(lambda: batches, warmup_batches=0).entropy_ratio)


def test_measure_loader_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="n_batches"):
        measure_loader(lambda: [], n_batches=0)


def test_entropies() -> None:
    assert batch_entropy(np.zeros(10)) == 0.0
    assert batch_entropy(np.array([0, 1] * 5)) == pytest.approx(math.log(2))
    codes = np.repeat(np.arange(4), 1000)
    assert ideal_entropy(codes, 512) == pytest.approx(math.log(4), rel=0.01)


def test_peak_rss_is_read() -> None:
    assert (peak_rss_bytes() or 0) > 0


def test_format_table_columns() -> None:
    from rich.console import Console

    r = BenchResult("atlasloader", 72_345.0, 0.31, 0.8, 0.99, 1000, 2, 0.1, 512)
    table = format_table([r])
    assert [str(c.header) for c in table.columns] == list(COLUMNS)
    assert list(COLUMNS) == [
        "loader",
        "cells/s",
        "time to 1st batch",
        "peak RSS",
        "batch entropy / ideal",
    ]
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    for expected in (*COLUMNS, "72.3k", "0.31 s", "0.80 GB", "0.99"):
        assert expected in text
    md = format_markdown([r])
    assert md.splitlines()[0] == "| " + " | ".join(COLUMNS) + " |"
    assert "| atlasloader | 72.3k | 0.31 s | 0.80 GB | 0.99 |" in md
