"""scDataset 0.3.0 on a backed ``.h5ad`` (run with the peers' python).

    run_scdataset.py DATA.h5ad [--block-size 16] [--fetch-factor 16] [--num-workers 2]

Best settings measured here (``shared/PERF_NOTES.md``): ``BlockShuffling(block_size=16)``,
``fetch_factor=16`` (8192 sorted rows read per fetch, then shuffled into batches), two
DataLoader workers. Each worker opens the file itself; the fetch returns the CSR rows with the
batch codes of the same cells, and each batch is densified to a float32 tensor in the worker.
Prints one JSON line.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
from _common import (
    Timer,
    category_codes,
    load_bench,
    measure_and_emit,
    parser,
    quiet,
    to_dense_tensor,
)


class H5adRows:
    """Rows of a backed ``.h5ad``'s ``X`` with their category codes, opened once per process.

    Opening lazily keeps h5py handles out of the parent when DataLoader forks its workers.
    """

    def __init__(self, path: str, codes: np.ndarray) -> None:
        self.path = path
        self.codes = codes
        self._adata: Any = None
        self._pid = -1

    def __len__(self) -> int:
        return int(self.codes.size)

    @property
    def x(self) -> Any:
        if self._adata is None or self._pid != os.getpid():
            import anndata as ad

            self._adata = ad.read_h5ad(self.path, backed="r")
            self._pid = os.getpid()
        return self._adata.X

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "codes": self.codes, "_adata": None, "_pid": -1}


class DenseInMain:
    """Re-iterable: densify the CSR batches the workers send, in this process."""

    def __init__(self, loader: Any, densify: str) -> None:
        self.loader = loader
        self.densify = densify

    def __iter__(self) -> Any:
        for b in self.loader:
            yield {"X": to_dense_tensor(b["X"], self.densify), "batch": b["batch"]}


def fetch(rows: H5adRows, indices: np.ndarray) -> tuple[Any, np.ndarray]:
    """Read the sorted ``indices`` (scDataset sorts each fetch) and their codes."""
    return rows.x[indices], rows.codes[indices]


def take(fetched: tuple[Any, np.ndarray], batch_indices: np.ndarray) -> tuple[Any, np.ndarray]:
    """One shuffled batch out of a fetch."""
    x, codes = fetched
    return x[batch_indices], codes[batch_indices]


def read_codes(path: str, key: str) -> np.ndarray:
    """Category codes of ``obs[key]`` without opening ``X``."""
    import anndata as ad
    import h5py

    with h5py.File(path, "r") as f:
        return category_codes(ad.io.read_elem(f["obs"][key]))


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its JSON line."""
    quiet()
    ap = parser(__doc__)
    ap.add_argument("h5ad")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--fetch-factor", type=int, default=16)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--prefetch-factor", type=int, default=None, help="DataLoader's (default 2)")
    ap.add_argument(
        "--densify-in",
        choices=("main", "worker"),
        default="main",
        help="densify after receiving CSR batches (main) or in the workers, which then send "
        "dense tensors through shared memory (slower here)",
    )
    args = ap.parse_args(argv)

    import anndata  # noqa: F401  (imported before any timing)
    import torch
    from scdataset import BlockShuffling, scDataset
    from torch.utils.data import DataLoader

    bench = load_bench()
    with Timer() as setup:
        codes = read_codes(args.h5ad, args.batch_key)
    densify = args.densify

    def to_batch(b: tuple[Any, np.ndarray]) -> dict[str, Any]:
        x = to_dense_tensor(b[0], densify) if args.densify_in == "worker" else b[0]
        return {"X": x, "batch": torch.from_numpy(b[1])}

    def factory() -> Any:
        ds = scDataset(
            H5adRows(args.h5ad, codes),
            BlockShuffling(block_size=args.block_size),
            batch_size=args.batch_size,
            fetch_factor=args.fetch_factor,
            fetch_callback=fetch,
            batch_callback=take,
            batch_transform=to_batch,
            seed=args.seed,
        )
        extra = {} if args.prefetch_factor is None else {"prefetch_factor": args.prefetch_factor}
        loader = DataLoader(ds, batch_size=None, num_workers=args.num_workers, **extra)
        return loader if args.densify_in == "worker" else DenseInMain(loader, densify)

    name = args.name or (
        f"scDataset (h5ad, block {args.block_size}, fetch {args.fetch_factor}, "
        f"{args.num_workers} workers)"
    )
    measure_and_emit(
        bench,
        factory,
        args,
        codes,
        name,
        reset_peak=True,
        peer="scdataset",
        path=args.h5ad,
        block_size=args.block_size,
        fetch_factor=args.fetch_factor,
        num_workers=args.num_workers,
        densify=densify,
        densify_in=args.densify_in,
        setup_s=setup.seconds,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
