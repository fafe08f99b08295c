"""Random runs of rows of a CSR matrix: zarr-python against :class:`ChunkReader`.

Builds (once, reused with ``--store``) the ``data`` (float32) and ``indices`` (int32) arrays of a
CSR matrix with a fixed number of non-zeros per row, Blosc-lz4 compressed, in chunks of 16 rows'
worth of elements grouped into shards of 4096 rows, like the loader's stores. Each batch reads 256
random runs of 16 consecutive rows (4096 rows) of both arrays, and every method is timed in
alternating rounds (A B C A B C ...) because run-to-run noise on these machines is 10-20 %.

    python benchmarks/bench_fastread.py --rows 100000 --store /tmp/bench_fastread.zarr
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from atlasloader.reading.chunks import ChunkReader

RUN_ROWS = 16
RUNS_PER_BATCH = 256
SHARD_ROWS = 4096


def build_store(path: Path, rows: int, nnz: int, n_vars: int, seed: int = 0) -> None:
    """Write ``X/data``, ``X/indices`` and ``X/indptr`` of a random CSR matrix."""
    rng = np.random.default_rng(seed)
    root = zarr.open_group(str(path), mode="w")
    x = root.create_group("X")
    codec = BloscCodec(cname="lz4", clevel=3, shuffle="shuffle")
    total = rows * nnz
    kw = {"chunks": (RUN_ROWS * nnz,), "shards": (SHARD_ROWS * nnz,), "compressors": codec}
    data = x.create_array("data", shape=(total,), dtype="float32", **kw)
    indices = x.create_array("indices", shape=(total,), dtype="int32", **kw)
    x.create_array("indptr", data=np.arange(rows + 1, dtype=np.int64) * nnz)
    # Write a shard at a time so memory stays bounded; counts are small integers, column indices
    # sorted within each row, as in a count matrix.
    for r0 in range(0, rows, SHARD_ROWS):
        r1 = min(rows, r0 + SHARD_ROWS)
        cols = np.sort(rng.integers(0, n_vars, size=(r1 - r0, nnz), dtype=np.int32), axis=1)
        counts = rng.geometric(0.3, size=(r1 - r0) * nnz).astype(np.float32)
        indices[r0 * nnz : r1 * nnz] = cols.reshape(-1)
        data[r0 * nnz : r1 * nnz] = counts


def random_batches(rows: int, n: int, seed: int = 1) -> list[np.ndarray]:
    """``n`` batches of row runs, each an array ``(RUNS_PER_BATCH, 2)`` of ``[lo, hi)``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lo = rng.integers(0, rows - RUN_ROWS + 1, size=RUNS_PER_BATCH)
        out.append(np.stack([lo, lo + RUN_ROWS], axis=1).astype(np.int64))
    return out


def element_ranges(indptr: np.ndarray, row_runs: np.ndarray) -> np.ndarray:
    return np.stack([indptr[row_runs[:, 0]], indptr[row_runs[:, 1]]], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--nnz", type=int, default=814, help="non-zeros per row")
    ap.add_argument("--vars", type=int, default=20_000)
    ap.add_argument("--store", type=Path, default=None, help="reuse/keep the store here")
    ap.add_argument("--batches", type=int, default=4, help="batches per method per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lru", type=int, default=1024, help="LRU size (chunks) to simulate")
    ap.add_argument("--skip-zarr", action="store_true", help="time only ChunkReader")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    tmp = None
    store = args.store
    if store is None:
        tmp = tempfile.TemporaryDirectory()
        store = Path(tmp.name) / "bench.zarr"
    if not (store / "X" / "data" / "zarr.json").exists():
        t0 = time.perf_counter()
        build_store(store, args.rows, args.nnz, args.vars)
        print(f"built {store} in {time.perf_counter() - t0:.1f} s")
    x = zarr.open_group(str(store), mode="r")["X"]
    data, indices = x["data"], x["indices"]
    indptr = np.asarray(x["indptr"][:])
    rows = indptr.size - 1
    readers = [ChunkReader(data), ChunkReader(indices)]
    assert all(r.fast for r in readers), [r.fallback_reason for r in readers]
    batches = random_batches(rows, args.batches * args.rounds + 2)
    pool = ThreadPoolExecutor(2)

    def zarr_per_run(runs: np.ndarray) -> list[np.ndarray]:
        er = element_ranges(indptr, runs).tolist()
        return [np.concatenate([np.asarray(a[lo:hi]) for lo, hi in er]) for a in (data, indices)]

    def zarr_oindex(runs: np.ndarray) -> list[np.ndarray]:
        er = element_ranges(indptr, runs)
        idx = np.concatenate([np.arange(lo, hi) for lo, hi in er.tolist()])
        return [np.asarray(a.get_orthogonal_selection(idx)) for a in (data, indices)]

    def fast_1(runs: np.ndarray) -> list[np.ndarray]:
        er = element_ranges(indptr, runs)
        return [r.read_many(er) for r in readers]

    def fast_1_worker(runs: np.ndarray) -> list[np.ndarray]:
        # The same from a pool thread: numcodecs' Blosc uses its global, internally threaded and
        # mutex-guarded context only when called from the main thread.
        return pool.submit(fast_1, runs).result()

    def fast_2(runs: np.ndarray) -> list[np.ndarray]:
        # Split the runs in two halves, each thread writing its slice of shared outputs.
        er = element_ranges(indptr, runs)
        half = er.shape[0] // 2
        cut = int((er[:half, 1] - er[:half, 0]).sum())
        total = int((er[:, 1] - er[:, 0]).sum())
        outs = [np.empty(total, r.dtype) for r in readers]

        def part(sel: slice, o0: int, o1: int) -> None:
            for r, o in zip(readers, outs):
                r.read_many(er[sel], out=o[o0:o1])

        futs = [
            pool.submit(part, slice(0, half), 0, cut),
            pool.submit(part, slice(half, None), cut, total),
        ]
        for f in futs:
            f.result()
        return outs

    Batch = list[np.ndarray]

    def each(fn: Callable[[np.ndarray], Batch]) -> Callable[[list[np.ndarray]], list[Batch]]:
        return lambda batch_list: [fn(runs) for runs in batch_list]

    def fast_2_batches(batch_list: list[np.ndarray]) -> list[Batch]:
        # What a loader with two prefetching workers does: each thread reads whole batches.
        return [f.result() for f in [pool.submit(fast_1, runs) for runs in batch_list]]

    methods: dict[str, Callable[[list[np.ndarray]], list[Batch]]] = {
        "zarr arr[lo:hi] per run": each(zarr_per_run),
        "zarr get_orthogonal_selection": each(zarr_oindex),
        "ChunkReader.read_many, 1 thread (main)": each(fast_1),
        "ChunkReader.read_many, 1 thread (pool)": each(fast_1_worker),
        "ChunkReader.read_many, 2 threads split each batch": each(fast_2),
        "ChunkReader.read_many, 2 threads a batch each": fast_2_batches,
    }
    if args.skip_zarr:
        methods = {k: v for k, v in methods.items() if not k.startswith("zarr")}
    # Correctness and warm-up (page cache, shard indices) on the first batches.
    warm = batches[:2]
    ref = [zarr_per_run(runs) for runs in warm]
    for name, fn in methods.items():
        for got, exp in zip(fn(warm), ref):
            assert all(np.array_equal(g, e) for g, e in zip(got, exp)), name
    timings: dict[str, list[float]] = {name: [] for name in methods}
    # CPU time of the process per cell: unlike wall time, barely moved by other work on the
    # machine, and what a loader's other threads (densifying, training) compete for.
    cpu_us: dict[str, list[float]] = {name: [] for name in methods}
    for rnd in range(args.rounds):
        chunk_of_batches = batches[2 + rnd * args.batches : 2 + (rnd + 1) * args.batches]
        for name, fn in methods.items():
            cells = len(chunk_of_batches) * RUNS_PER_BATCH * RUN_ROWS
            t0, c0 = time.perf_counter(), time.process_time()
            fn(chunk_of_batches)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            timings[name].append(cells / dt)
            cpu_us[name].append(dc / cells * 1e6)
    pool.shutdown()

    # How often would a cache of decoded chunks across calls hit? Simulate an LRU over the chunk
    # ids each batch touches (within a call, shared chunks are already decoded once).
    chunk_elems = readers[0].chunk_rows  # elements per inner chunk of the 1-D arrays
    lru: OrderedDict[int, None] = OrderedDict()
    hits = touched = 0
    for runs in batches:
        er = element_ranges(indptr, runs)
        ids = np.unique(
            np.concatenate(
                [np.arange(lo // chunk_elems, (hi - 1) // chunk_elems + 1) for lo, hi in er]
            )
        )
        for ci in ids.tolist():
            touched += 1
            if ci in lru:
                hits += 1
                lru.move_to_end(ci)
            else:
                lru[ci] = None
                if len(lru) > args.lru:
                    lru.popitem(last=False)

    nnz_total = int(indptr[-1])
    print(
        f"\n{rows:,} rows x {args.nnz} nnz/row ({nnz_total / 1e6:.1f}M elements per array), "
        f"chunks of {readers[0].chunk_rows:,} elements ({RUN_ROWS} rows), shards of "
        f"{SHARD_ROWS} rows, Blosc-lz4; batches of {RUNS_PER_BATCH} random runs of {RUN_ROWS} "
        f"rows (data + indices); {os.cpu_count()} CPUs; median of {args.rounds} rounds x "
        f"{args.batches} batches"
    )
    width = max(len(n) for n in methods)
    print(
        f"\n| {'method':<{width}} | {'cells/s':>9} | {'min':>9} | {'max':>9} |"
        f" {'CPU µs/cell':>11} |"
    )
    print(f"|{'-' * (width + 2)}|{'-' * 10}:|{'-' * 10}:|{'-' * 10}:|{'-' * 12}:|")
    for name, vals in timings.items():
        print(
            f"| {name:<{width}} | {statistics.median(vals):>9,.0f} | {min(vals):>9,.0f} |"
            f" {max(vals):>9,.0f} | {statistics.median(cpu_us[name]):>11.2f} |"
        )
    print(
        f"\nLRU of {args.lru} decoded chunks across batches: {hits / max(1, touched):.1%} of "
        f"{touched:,} chunk decodes avoided"
    )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
