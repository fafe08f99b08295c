#!/usr/bin/env python
"""An end-to-end atlasloader cluster job: convert -> preprocess -> setup, on a dask cluster.

Every step is a dask graph run on the cluster this script connects to (or starts):

1. ``atlasloader.convert``: the input ``.h5ad`` files (or AnnData Zarr stores) become one store
   in the loader's layout, each task reading only the input rows of the shards it writes;
2. ``atlasloader.preprocess.preprocess``: size factors, gene statistics and, with
   ``--n-top-genes``, highly variable genes, persisted in the store;
3. ``SCVI.setup_anndata``: the fields are registered and persisted, so training later opens the
   store and reuses them in milliseconds.

Where the work runs (one of):

``--scheduler ADDRESS``
    a running ``dask.distributed`` scheduler (``tcp://host:8786``, or a scheduler file written
    by ``dask scheduler --scheduler-file``); also taken from ``ATLASLOADER_SCHEDULER``.
``--workers N``
    a ``LocalCluster`` of N worker processes on this machine.
``--slurm``
    dask-jobqueue's ``SLURMCluster``: this script (the "driver", itself usually an sbatch job:
    see ``scripts/slurm_job.sh``) runs the scheduler and submits ``--jobs`` SLURM jobs, each
    running dask workers with ``--cores`` cores and ``--memory`` memory for ``--walltime``.
    dask-jobqueue is not an atlasloader dependency: ``pip install dask-jobqueue``.
(nothing)
    dask's threads on this machine.

Workers must see the inputs and the output directory at the same paths (a shared file
system, or object storage URLs for the inputs), and run the same Python environment.

Examples
--------
::

    python scripts/cluster_job.py a.h5ad b.h5ad --out /scratch/atlas --workers 4
    python scripts/cluster_job.py a.h5ad b.h5ad --out /scratch/atlas \\
        --scheduler tcp://10.0.0.5:8786 --n-top-genes 2000
    sbatch scripts/slurm_job.sh a.h5ad b.h5ad       # --slurm, from inside an sbatch job
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="exit codes: 0 success, 2 usage error, 3 bad input or data, 130 interrupted",
    )
    p.add_argument("inputs", nargs="+", help=".h5ad files or AnnData Zarr stores")
    p.add_argument("--out", required=True, help="directory of the store (OUT/atlas.zarr)")
    p.add_argument("--join", choices=("exact", "inner"), default="exact")
    p.add_argument("--shuffle", action="store_true", help="write cells in a random order")
    p.add_argument("--n-top-genes", type=int, default=None, help="highly variable genes")
    p.add_argument("--skip-preprocess", action="store_true", help="only convert and set up")
    p.add_argument("--batch-key", default="batch")
    p.add_argument("--labels-key", default="labels")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="a running dask scheduler")
    where.add_argument("--workers", type=int, metavar="N", help="start a LocalCluster")
    where.add_argument("--slurm", action="store_true", help="start a dask-jobqueue SLURMCluster")
    slurm = p.add_argument_group("--slurm: resources of each worker job")
    slurm.add_argument("--jobs", type=int, default=4, help="SLURM jobs to submit (default 4)")
    slurm.add_argument("--cores", type=int, default=8, help="cores per job (default 8)")
    slurm.add_argument("--memory", default="32GB", help="memory per job (default 32GB)")
    slurm.add_argument("--walltime", default="02:00:00", help="per job (default 02:00:00)")
    slurm.add_argument("--queue", default=None, help="partition (sbatch -p)")
    slurm.add_argument("--account", default=None, help="account (sbatch -A)")
    return p.parse_args(argv)


@contextmanager
def slurm_client(args: argparse.Namespace) -> Iterator[Any]:
    """A Client on a SLURMCluster whose workers are ``args.jobs`` SLURM jobs."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        sys.exit("--slurm needs dask-jobqueue, which atlasloader does not install: "
                 "pip install dask-jobqueue")  # fmt: skip
    from distributed import Client

    cluster = SLURMCluster(
        # Resources of ONE job. Each job runs `processes` dask worker processes sharing its
        # cores and memory; a worker pauses near its memory share and is restarted above it,
        # so keep memory per worker a few times the conversion's block size (--block-rows).
        cores=args.cores,
        processes=max(1, args.cores // 4),  # several processes: h5py reads hold the GIL
        memory=args.memory,
        walltime=args.walltime,  # a job's limit: longer than the whole pipeline
        queue=args.queue,
        account=args.account,
        local_directory="$TMPDIR",  # spill to the node's local disk, not the shared one
        log_directory="dask-worker-logs",
        # Anything else a job needs, as sbatch directives or shell lines run before the worker:
        # job_extra_directives=["--constraint=cpu"],
        # job_script_prologue=["source ~/atlasloader/.venv/bin/activate"],
    )
    print(cluster.job_script(), file=sys.stderr)  # what each submitted job runs
    # scale(jobs=N) submits N sbatch jobs; cluster.adapt(minimum_jobs=1, maximum_jobs=N) would
    # grow and shrink with the work instead.
    cluster.scale(jobs=args.jobs)
    with cluster, Client(cluster, set_as_default=True) as client:
        # Jobs wait in the queue; start once a first worker is up (the rest join as they start).
        client.wait_for_workers(1, timeout=3600)
        yield client


@contextmanager
def cluster_client(args: argparse.Namespace) -> Iterator[Any]:
    if args.slurm:
        with slurm_client(args) as client:
            yield client
        return
    from atlasloader.cluster import scheduler

    with scheduler(args.scheduler, args.workers) as client:
        yield client


def run(args: argparse.Namespace) -> str:
    import atlasloader
    from atlasloader.cluster import dask_progress, describe
    from atlasloader.model import SCVI

    store = str(Path(args.out) / "atlas.zarr")
    with cluster_client(args) as client:
        print(f"running on the {describe(client)}", file=sys.stderr)

        t0 = time.perf_counter()
        atlasloader.convert(args.inputs, store, join=args.join, shuffle=args.shuffle,
                            overwrite=True, progress=True)  # fmt: skip
        print(f"convert: {time.perf_counter() - t0:.1f} s -> {store}", file=sys.stderr)

        setup_args: dict[str, Any] = {"batch_key": args.batch_key, "labels_key": args.labels_key}
        if not args.skip_preprocess:
            from atlasloader.preprocess import preprocess

            t0 = time.perf_counter()
            result = preprocess(store, n_top_genes=args.n_top_genes,
                                batch_key=args.batch_key if args.n_top_genes else None,
                                progress=True)  # fmt: skip
            print(f"preprocess: {time.perf_counter() - t0:.1f} s, {result['summary']}",
                  file=sys.stderr)  # fmt: skip
            setup_args["size_factor_key"] = "size_factor"
            if args.n_top_genes:
                setup_args["var_subset"] = "highly_variable"

        t0 = time.perf_counter()
        adata = atlasloader.read_lazy(store)
        with dask_progress(True, "registering"):
            SCVI.setup_anndata(adata, **setup_args)
        print(f"setup: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    SCVI(adata).view_anndata_setup()
    return store


def main(argv: list[str] | None = None) -> int:
    from atlasloader.errors import AtlasLoaderError

    args = parse_args(argv)
    try:
        print(run(args))
    except KeyboardInterrupt:
        print("cluster_job: interrupted", file=sys.stderr)
        return 130
    except AtlasLoaderError as e:
        print(f"cluster_job: error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":  # the guard matters: worker processes re-import this module
    sys.exit(main())
