"""``atlasloader demo``: the main job on a generated atlas."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import Ui, add_command, add_quiet

EXAMPLES = """\
  atlasloader demo
  atlasloader demo --cells 200000 --genes 2000 --epochs 3
  atlasloader demo --path /scratch/demo      # keep the generated store"""


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "demo",
        summary="generate a synthetic atlas store, register it, train scvi-tools' SCVI on it",
        description=(
            "Generate a synthetic atlas store, register it with SCVI.setup_anndata, print the\n"
            "registry, train scvi-tools' scvi.model.SCVI from the store through\n"
            "atlasloader.scvi.DataModule (the example PoissonAE without scvi-tools, or with\n"
            "--model poisson-ae) and print cells/s and peak memory."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--genes", type=int, default=2_000)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument(
        "--nnz",
        type=int,
        default=None,
        help="mean non-zeros per cell (default: 200, at most half of --genes)",
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--model",
        choices=["auto", "scvi", "poisson-ae"],
        default="auto",
        help="scvi: scvi-tools' SCVI (needs atlasloader[scvi]); auto: scvi when installed",
    )
    p.add_argument("--path", help="folder to keep the store in (default: a temp folder)")
    add_quiet(p)
    p.set_defaults(func=run)


def _has_scvi() -> bool:
    import importlib.util

    return importlib.util.find_spec("scvi") is not None


def _train_scvi(path: Path, args: argparse.Namespace) -> list[float]:
    """scvi-tools' SCVI from the store: the ELBO per epoch on the training cells."""
    import warnings

    from ..errors import MissingDependencyError

    try:
        import scvi
    except ImportError as e:
        msg = "--model scvi needs scvi-tools: pip install 'atlasloader[scvi]'"
        raise MissingDependencyError(msg) from e
    from ..scvi import DataModule

    dm = DataModule(
        str(path),
        batch_key="batch",
        labels_key="labels",
        batch_size=args.batch_size,
        seed=args.seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = scvi.model.SCVI(registry=dm.registry, n_latent=10)
        model.train(
            max_epochs=args.epochs,
            datamodule=dm,
            accelerator="cpu",
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
    return [float(v) for v in model.history["elbo_train"].to_numpy().ravel()]


def _peak_rss_gb() -> float:
    import resource

    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def run(args: argparse.Namespace, ui: Ui) -> int:
    """Generate a synthetic atlas store, register it, train a small model on it."""
    import rich

    from ..data import make_atlas_store
    from ..model import SCVI, PoissonAE
    from ..store.lazy import read_lazy

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
        SCVI(adata).view_anndata_setup()
        rich.print(
            f"registration: {t_reg:.2f} s; reopening and registering again: "
            f"{t_rereg * 1000:.0f} ms (persisted encodings reused)"
        )
        # Import torch (seconds on a cold start) before the clock starts: cells/s measures
        # training, as in a script that has torch loaded already.
        import torch  # noqa: F401

        use_scvi = args.model == "scvi" or (args.model == "auto" and _has_scvi())
        t0 = time.perf_counter()
        if use_scvi:
            history, name = _train_scvi(path, args), "scvi.model.SCVI (scvi-tools)"
            n_cells = int(0.9 * args.cells + 0.999)
        else:
            PoissonAE.setup_anndata(adata, batch_key="batch", labels_key="labels")
            model = PoissonAE(adata)
            history = model.train(
                max_epochs=args.epochs, batch_size=args.batch_size, seed=args.seed
            )
            name, n_cells = "atlasloader.model.PoissonAE (example model)", args.cells
        dt = time.perf_counter() - t0
        for i, loss in enumerate(history):
            rich.print(f"\\[epoch {i + 1}] loss: {loss:.4f}")
        rate = n_cells * args.epochs / dt
        rich.print(
            f"trained {name} for {args.epochs} epochs in {dt:.1f} s: "
            f"[bold]{rate:,.0f} cells/s[/], peak RSS {_peak_rss_gb():.2f} GB"
        )
    return 0
