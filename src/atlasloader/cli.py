"""The ``atlasloader`` command line."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import AtlasLoaderError

EXAMPLES = {
    "demo": "atlasloader demo\n  atlasloader demo --cells 200000 --genes 2000 --epochs 3",
    "view": "atlasloader view atlas.zarr",
    "bench": "atlasloader bench atlas.zarr --batch-size 512 --n-batches 300",
}


def _peak_rss_gb() -> float:
    import resource

    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate a synthetic atlas store, register it, train a small model on it."""
    import rich

    from .data import make_atlas_store
    from .model import SCVI
    from .store.lazy import read_lazy

    with tempfile.TemporaryDirectory(prefix="atlasloader-demo-") as tmp:
        path = Path(args.path or tmp) / "atlas.zarr"
        # The default density must suit small gene panels (make_atlas_store allows at most
        # half of the genes per cell).
        nnz = args.nnz if args.nnz is not None else max(1, min(200, args.genes // 2))
        t0 = time.perf_counter()
        make_atlas_store(
            path,
            n_cells=args.cells,
            n_genes=args.genes,
            n_batches=args.batches,
            nnz_per_cell=nnz,
            seed=args.seed,
        )
        rich.print(
            f"[bold]generated[/] {args.cells:,} cells x {args.genes:,} genes at {path} "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        adata = read_lazy(path)
        t0 = time.perf_counter()
        SCVI.setup_anndata(adata, batch_key="batch", labels_key="labels")
        t_reg = time.perf_counter() - t0
        t0 = time.perf_counter()
        SCVI.setup_anndata(read_lazy(path), batch_key="batch", labels_key="labels")
        t_rereg = time.perf_counter() - t0
        model = SCVI(adata)
        model.view_anndata_setup()
        rich.print(
            f"registration: {t_reg:.2f} s; reopening and registering again: "
            f"{t_rereg * 1000:.0f} ms (persisted encodings reused)"
        )
        # Import torch (seconds on a cold start) before the clock starts: cells/s measures
        # training, as in a script that has torch loaded already.
        import torch  # noqa: F401

        t0 = time.perf_counter()
        history = model.train(max_epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
        dt = time.perf_counter() - t0
        for i, loss in enumerate(history):
            rich.print(f"\\[epoch {i + 1}] loss: {loss:.4f}")
        rate = args.cells * args.epochs / dt
        rich.print(
            f"trained {args.epochs} epochs in {dt:.1f} s: [bold]{rate:,.0f} cells/s[/], "
            f"peak RSS {_peak_rss_gb():.2f} GB"
        )
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    """Print the registries persisted in a store (no data is read)."""
    import rich

    from .registry import display
    from .registry.model import Registry
    from .store import records
    from .store.open import open_root

    root = open_root(args.store, mode="r")
    regs = records.load_registries(root)
    if not regs:
        rich.print(f"{args.store}: no atlasloader registration persisted; run setup first")
        return 1
    for name, payload in regs.items():
        rich.print(f"[bold]{name}[/]")
        display.print_registry(Registry.from_json_dict(payload), [])
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure the shuffled loader on a store: cells/s, first batch, peak RSS, randomness."""
    from .bench import main as bench_main

    bench_main([args.store, *args.options])
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atlasloader", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo",
        help=cmd_demo.__doc__,
        epilog="example:\n  " + EXAMPLES["demo"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("--cells", type=int, default=100_000)
    d.add_argument("--genes", type=int, default=2_000)
    d.add_argument("--batches", type=int, default=10)
    d.add_argument(
        "--nnz",
        type=int,
        default=None,
        help="mean non-zeros per cell (default: 200, at most half of --genes)",
    )
    d.add_argument("--epochs", type=int, default=3)
    d.add_argument("--batch-size", type=int, default=512)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--path", help="folder to keep the store in (default: a temp folder)")
    d.set_defaults(func=cmd_demo)
    v = sub.add_parser(
        "view",
        help=cmd_view.__doc__,
        epilog="example:\n  " + EXAMPLES["view"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("store")
    v.set_defaults(func=cmd_view)
    b = sub.add_parser(
        "bench",
        help=cmd_bench.__doc__,
        epilog="example:\n  " + EXAMPLES["bench"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("store")
    b.add_argument(
        "options",
        nargs=argparse.REMAINDER,
        help="passed on: --batch-size, --sparse, --rows-per-read, --reads-per-buffer, "
        "--batch-key, --n-batches, --warmup-batches, --seed, --json",
    )
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except AtlasLoaderError as e:
        print(f"atlasloader: error: {e}", file=sys.stderr)
        return 2


def _entry() -> Any:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
