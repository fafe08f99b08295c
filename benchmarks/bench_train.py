"""Training throughput of scvi-tools' ``scvi.model.SCVI`` fed by atlasloader and by the peers.

The loader benchmark's atlas (400,000 cells x 20,000 genes, 814 non-zeros per cell, 40 ``batch``
categories in sorted blocks; generated or reused by ``bench_loader.py``'s own helpers under
``--dir``) is restricted to the 2,000 highly variable genes ``atlasloader.preprocess`` selects,
and ``scvi.model.SCVI(n_latent=10)`` (default module: 1 layer of 128, ZINB) is trained with batches
of 512 by four runners, each in a fresh process, alternated A B C D A B C D:

- ``atlasloader``: ``atlasloader.scvi.DataModule(store, batch_key="batch",
  var_subset="highly_variable")`` on a ``convert``ed store after ``preprocess(n_top_genes=2000)``
  (the genes are selected when reading; the store keeps all 20,000), plus a latent pass over
  all cells through ``dm.inference_dataloader()``;
- ``scvi-memory``: the HVG cells as an in-memory CSR AnnData, ``SCVI.setup_anndata`` and
  scvi-tools' own loader (indptr/indices cast to one dtype, see ``shared/PERF_NOTES.md``), plus
  the same latent pass;
- ``scvi-backed``: an HVG-only ``.h5ad`` opened ``backed="r"``. scvi-tools 1.4.2 cannot train
  on a gene subset of a backed AnnData (``setup_anndata`` on the view asks for ``.copy()``, and
  a backed view only copies to a new file), so the HVG genes are written to their own ``.h5ad``;
- ``annbatch`` (peers venv): annbatch 0.3.1's ``Loader`` over its own pre-shuffled collection
  of the HVG-only ``.h5ad``, wrapped in a minimal ``LightningDataModule`` defined here
  (scvi-tools 1.4.2 has no annbatch data module) that yields ``{"X": float32 dense,
  "batch": int64 (n, 1), "labels": int64 zeros (n, 1)}``; the model is built with
  ``SCVI(registry=...)`` from an atlasloader ``DataModule`` registry of the same genes and
  batches (``size_factor_key=None``: library sizes from the minibatch, as scvi-tools' own).

Each run trains ``--warmup-steps`` steps, then times ``--steps`` steps (``max_steps`` stops the
fit; no epoch boundary or validation falls inside at 400k cells): cells/s = steps x batch / time.
A Lightning callback also sums the gaps between ``on_train_batch_end`` and the next
``on_train_batch_start`` (fetching the next batch, ``on_before_batch_transfer``, the device
copy and Lightning's own bookkeeping): the data-wait fraction is that sum over the timed wall
time. Peak RSS is the process's ``VmHWM`` (loading and registering included); the latent pass
reports its own high-water mark (reset before it through ``/proc/self/clear_refs``).

::

    bash ../shared/tools/install_peers.sh .venv-peers   # annbatch (skipped if absent)
    .venv/bin/python benchmarks/bench_train.py           # ~15 min on 2 cores, data reused
    .venv/bin/python benchmarks/bench_train.py --cells 20000 --steps 20 --warmup-steps 5 \\
        --repeats 1 --dir /tmp/bt --out /tmp/bt/out      # a smoke run

Writes ``train.json`` (raw numbers, every run) and ``train.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pickle
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / "peers"
RUNNERS = ("atlasloader", "scvi-memory", "scvi-backed", "annbatch", "atlasloader-threads1")
HOW = {
    "atlasloader": (
        "`atlasloader.scvi.DataModule(store, batch_key='batch', var_subset='highly_variable', "
        "batch_size=512)` on the `convert`ed 20,000-gene store after `preprocess` (genes "
        "selected at read time; loader defaults; library size from `obs['total_counts']`)"
    ),
    "scvi-memory": (
        "HVG-only `.h5ad` read into memory (CSR, one index dtype), "
        "`SCVI.setup_anndata(adata, batch_key='batch')`, scvi-tools' own loader"
    ),
    "scvi-backed": (
        "HVG-only `.h5ad` opened `backed='r'` (1.4.2 refuses a gene subset of a backed "
        "AnnData), `setup_anndata`, scvi-tools' own loader"
    ),
    "atlasloader-threads1": (
        "as atlasloader, with `num_threads=1` (one loader thread instead of the default "
        "`min(4, cores)` = 2, so that it competes less with torch's 2 threads)"
    ),
    "annbatch": (
        "peers venv: annbatch 0.3.1 `Loader(chunk_size=64, preload_nchunks=64, shuffle=True)` "
        "over its own pre-shuffled collection of the HVG-only `.h5ad` (zarrs pipeline), "
        "densified with scipy, in a minimal `LightningDataModule` written in this benchmark; "
        "`SCVI(registry=...)` from an atlasloader `DataModule` on the HVG store "
        "(`size_factor_key=None`)"
    ),
}


# --- helpers usable from both venvs (stdlib and numpy only at import time) ------------------------
def _bench() -> Any:
    """``atlasloader/benchmarking/measure.py`` loaded by path (VmHWM helpers), as peers do."""
    sys.path.insert(0, str(PEERS))
    from _common import load_bench

    return load_bench()


def _gb(nbytes: int | None) -> float:
    return (nbytes or 0) / 1e9


def _quiet() -> None:
    import logging
    import warnings

    warnings.simplefilter("ignore")
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _step_timer(warmup: int, steps: int) -> Any:
    """A Lightning callback timing ``steps`` training steps after ``warmup`` ones."""
    from lightning.pytorch import Callback

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.done = 0
            self.last_end: float | None = None
            self.start: float | None = None
            self.t0 = self.t1 = math.nan
            self.cpu0 = self.cpu1 = math.nan
            self.wait = 0.0
            self.compute = 0.0
            self.gaps: list[float] = []

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
            self.start = time.perf_counter()
            if self.last_end is not None and warmup <= self.done < warmup + steps:
                gap = self.start - self.last_end
                self.wait += gap
                self.gaps.append(gap)

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, out: Any, batch: Any, idx: int
        ) -> None:
            now = time.perf_counter()
            self.done += 1
            if warmup < self.done <= warmup + steps and self.start is not None:
                self.compute += now - self.start
            if self.done == warmup:
                self.t0, self.cpu0 = now, time.process_time()
            if self.done == warmup + steps:
                self.t1, self.cpu1 = now, time.process_time()
                trainer.should_stop = True
            self.last_end = now

        def result(self, batch_size: int) -> dict[str, Any]:
            took = self.t1 - self.t0
            gaps = sorted(self.gaps)
            return {
                "steps_timed": steps,
                "warmup_steps": warmup,
                "steps_run": self.done,
                "timed_s": took,
                "cells_per_s": steps * batch_size / took if took > 0 else math.nan,
                "data_wait_fraction": self.wait / took if took > 0 else math.nan,
                "data_wait_s": self.wait,
                "step_compute_s": self.compute,
                "mean_gap_ms": 1e3 * self.wait / max(1, len(gaps)),
                "median_gap_ms": 1e3 * gaps[len(gaps) // 2] if gaps else math.nan,
                "max_gap_ms": 1e3 * gaps[-1] if gaps else math.nan,
                "mean_step_ms": 1e3 * self.compute / steps,
                # CPU seconds of all the process's threads per wall second (2 = both cores busy)
                "cpu_per_wall": (self.cpu1 - self.cpu0) / took if took > 0 else math.nan,
            }

    return StepTimer()


def _train(model: Any, args: argparse.Namespace, n_train: int, **kwargs: Any) -> dict[str, Any]:
    """Train ``model`` for warm-up + timed steps; the timer's numbers."""
    timer = _step_timer(args.warmup_steps, args.steps)
    total = args.warmup_steps + args.steps
    per_epoch = max(1, math.ceil(n_train / args.batch_size))
    model.train(
        max_epochs=math.ceil(total / per_epoch) + 1,
        max_steps=total,
        accelerator="cpu",
        devices=1,
        callbacks=[timer],
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
    out: dict[str, Any] = timer.result(args.batch_size)
    out["epoch_boundary_in_timed_steps"] = total > per_epoch
    return out


def _loader_alone(loader: Any, batch_size: int, n_batches: int, warmup: int = 10) -> dict:
    """Iterate a training loader without a model: cells/s and CPU time per batch.

    CPU time counts every thread of the process, so a loader's background threads show here
    even when the training loop never waits for them.
    """
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for _ in range(n_batches):
        b = next(it, None)
        if b is None:
            break
        n += 1
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "batches": n,
        "cells_per_s": n * batch_size / took if took > 0 else math.nan,
        "cpu_ms_per_batch": 1e3 * cpu / max(1, n),
        "wall_ms_per_batch": 1e3 * took / max(1, n),
    }


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ("torch", "lightning", "scvi-tools", "anndata", "scipy", "numpy", "annbatch", "zarr")
    vers = {}
    for n in names:
        with contextlib.suppress(md.PackageNotFoundError):
            vers[n] = md.version(n)
    return vers


def _torch_setup(seed: int) -> dict[str, Any]:
    import torch

    torch.manual_seed(seed)
    return {"torch_threads": torch.get_num_threads()}


def _emit(rec: dict[str, Any]) -> None:
    print(json.dumps(rec, default=float), flush=True)


# --- workers: one training run per process --------------------------------------------------------
def run_atlasloader(args: argparse.Namespace) -> dict[str, Any]:
    import scvi

    from atlasloader.scvi import DataModule

    bench = _bench()
    scvi.settings.seed = args.seed
    rec = _torch_setup(args.seed)
    t0 = time.perf_counter()
    dm = DataModule(
        args.path,
        batch_key="batch",
        var_subset="highly_variable",
        batch_size=args.batch_size,
        seed=args.seed,
        **({} if args.loader_threads is None else {"num_threads": args.loader_threads}),
    )
    rec["setup_s"] = time.perf_counter() - t0
    rec["n_vars"], rec["n_batch"], rec["n_train"] = dm.n_vars, dm.n_batch, dm.n_train
    rec["size_factor_key"] = dm.registry["setup_args"].get("size_factor_key")
    rec["loader_kwargs"] = dict(dm.loader_kwargs)
    model = scvi.model.SCVI(registry=dm.registry, n_latent=10)
    rec.update(_train(model, args, dm.n_train, datamodule=dm))
    rec["peak_rss_gb"] = _gb(bench.peak_rss_bytes())
    rec["loader_alone"] = _loader_alone(
        dm.make_loader(dm.train_idx, shuffle=True), args.batch_size, args.loader_batches
    )
    if args.latent:
        bench.reset_peak_rss()
        t0 = time.perf_counter()
        z = model.get_latent_representation(dataloader=dm.inference_dataloader())
        took = time.perf_counter() - t0
        rec["latent"] = {
            "seconds": took,
            "cells": int(z.shape[0]),
            "cells_per_s": z.shape[0] / took,
            "shape": list(z.shape),
            "peak_rss_gb": _gb(bench.peak_rss_bytes()),
        }
    return rec


def _open_h5ad(path: str, backed: bool) -> Any:
    """As the loader benchmark's scvi-tools runner: backed, or loaded with one index dtype."""
    sys.path.insert(0, str(PEERS))
    from run_scvi import open_adata

    return open_adata(path, in_memory=not backed)


def run_scvi(args: argparse.Namespace, backed: bool) -> dict[str, Any]:
    import scvi

    bench = _bench()
    bench.reset_peak_rss()
    scvi.settings.seed = args.seed
    rec = _torch_setup(args.seed)
    t0 = time.perf_counter()
    adata = _open_h5ad(args.path, backed)
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    rec["setup_s"] = time.perf_counter() - t0
    rec["n_vars"], rec["n_obs"] = int(adata.n_vars), int(adata.n_obs)
    if not backed:
        rec["x_index_dtype"] = str(adata.X.indices.dtype)
    model = scvi.model.SCVI(adata, n_latent=10)
    n_train = math.ceil(0.9 * adata.n_obs)
    rec.update(_train(model, args, n_train, batch_size=args.batch_size))
    rec["peak_rss_gb"] = _gb(bench.peak_rss_bytes())
    from scvi.dataloaders import AnnDataLoader

    rec["loader_alone"] = _loader_alone(
        AnnDataLoader(model.adata_manager, batch_size=args.batch_size, shuffle=True),
        args.batch_size,
        args.loader_batches,
    )
    if args.latent:
        bench.reset_peak_rss()
        t0 = time.perf_counter()
        z = model.get_latent_representation(batch_size=args.batch_size)
        took = time.perf_counter() - t0
        rec["latent"] = {
            "seconds": took,
            "cells": int(z.shape[0]),
            "cells_per_s": z.shape[0] / took,
            "shape": list(z.shape),
            "peak_rss_gb": _gb(bench.peak_rss_bytes()),
        }
    return rec


def run_annbatch(args: argparse.Namespace) -> dict[str, Any]:
    """annbatch's Loader in a minimal LightningDataModule, SCVI built from a registry."""
    import numpy as np
    import pandas as pd
    import scvi
    import torch
    from annbatch import DatasetCollection, Loader
    from lightning.pytorch import LightningDataModule

    sys.path.insert(0, str(PEERS))
    from _common import to_dense_tensor
    from run_annbatch import use_zarrs

    bench = _bench()
    bench.reset_peak_rss()
    use_zarrs()
    scvi.settings.seed = args.seed
    rec = _torch_setup(args.seed)
    with open(args.registry, "rb") as f:
        registry = pickle.load(f)  # written by this script's `_registry` step, same run
    fields = registry["field_registries"]
    mapping = list(fields["batch"]["state_registry"]["categorical_mapping"])
    n_vars = int(fields["X"]["summary_stats"]["n_vars"])
    genes = np.asarray(fields["X"]["state_registry"]["column_names"]).astype(str)

    t0 = time.perf_counter()
    collection = DatasetCollection(args.path, mode="r")
    n_obs = len(collection.obs(columns=["batch"]))
    rec["setup_s"] = time.perf_counter() - t0

    class Batches:
        """Re-iterable annbatch Loader yielding scvi-tools' tensor dicts."""

        def __init__(self, loader: Any) -> None:
            self.loader = loader

        def __iter__(self) -> Any:
            for b in self.loader:
                x = to_dense_tensor(b["X"], "scipy")
                codes = pd.Categorical(np.asarray(b["obs"]["batch"]), categories=mapping).codes
                n = x.shape[0]
                yield {
                    "X": x,
                    "batch": torch.from_numpy(codes.astype(np.int64)).view(n, 1),
                    "labels": torch.zeros((n, 1), dtype=torch.int64),
                }

    class AnnbatchDataModule(LightningDataModule):
        """What scvi-tools reads from a custom data module, over annbatch's loader."""

        def __init__(self) -> None:
            super().__init__()
            self.registry = registry
            self.n_vars, self.n_batch, self.n_labels = n_vars, len(mapping), 1
            self.n_obs = self.n_train = n_obs
            self.n_val = 0

        def train_dataloader(self) -> Batches:
            loader = Loader(
                chunk_size=64,
                preload_nchunks=64,
                batch_size=args.batch_size,
                shuffle=True,
                drop_last=False,
                preload_to_gpu=False,
                rng=np.random.default_rng(args.seed),
            ).use_collection(collection)
            return Batches(loader)

    dm = AnnbatchDataModule()
    first = next(iter(dm.train_dataloader()))
    if first["X"].shape[1] != n_vars or first["batch"].min() < 0:
        msg = f"annbatch batch {tuple(first['X'].shape)} does not fit the registry ({n_vars})"
        raise SystemExit(msg)
    var_names = _collection_var_names(args.path)
    rec["genes_match_registry"] = bool(var_names is not None and np.array_equal(var_names, genes))
    rec["n_vars"], rec["n_batch"], rec["n_obs"] = n_vars, len(mapping), n_obs
    del first
    model = scvi.model.SCVI(registry=registry, n_latent=10)
    rec.update(_train(model, args, n_obs, datamodule=dm))
    rec["peak_rss_gb"] = _gb(bench.peak_rss_bytes())
    rec["loader_alone"] = _loader_alone(dm.train_dataloader(), args.batch_size, args.loader_batches)
    return rec


def _collection_var_names(path: str) -> Any:
    """Gene names of annbatch's first dataset (``None`` if its layout is not the expected)."""
    import anndata as ad
    import numpy as np
    import zarr

    try:
        group = zarr.open_group(path, mode="r")
        name = sorted(k for k, _ in group.groups())[0]
        var = ad.io.read_elem(group[name]["var"])
        return np.asarray(var.index).astype(str)
    except Exception:  # only a consistency check
        return None


def worker(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="bench_train.py _worker")
    ap.add_argument("runner", choices=RUNNERS)
    ap.add_argument("path")
    ap.add_argument("--registry")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--warmup-steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latent", action="store_true")
    ap.add_argument("--loader-threads", type=int, default=None)
    ap.add_argument("--loader-batches", type=int, default=100)
    args = ap.parse_args(argv)
    _quiet()
    t0 = time.perf_counter()
    import torch  # noqa: F401  (imports are not part of any timing)

    if args.runner.startswith("atlasloader"):
        rec = run_atlasloader(args)
    elif args.runner == "annbatch":
        rec = run_annbatch(args)
    else:
        rec = run_scvi(args, backed=args.runner == "scvi-backed")
    rec.update(runner=args.runner, path=args.path, process_s=time.perf_counter() - t0)
    rec["python"] = sys.executable
    rec["versions"] = _versions()
    _emit(rec)


# --- data preparation steps (subprocesses of the driver) ------------------------------------------
def prep_store(h5ad: str, dst: str, n_top: int) -> None:
    """``convert`` the atlas and ``preprocess(n_top_genes=n_top)`` it; times and peak RSS."""
    import atlasloader
    from atlasloader.preprocess import preprocess

    bench = _bench()
    t0 = time.perf_counter()
    atlasloader.convert(h5ad, dst, overwrite=True)
    t1 = time.perf_counter()
    preprocess(dst, n_top_genes=n_top)
    t2 = time.perf_counter()
    hvg = atlasloader.read_lazy(dst).var["highly_variable"]
    _emit(
        {
            "convert_s": t1 - t0,
            "preprocess_s": t2 - t1,
            "n_hvg": int(sum(bool(v) for v in hvg)),
            "peak_rss_gb": _gb(bench.peak_rss_bytes()),
            "how": f"atlasloader.convert(h5ad) then preprocess(n_top_genes={n_top})",
        }
    )


def prep_h5ad(h5ad: str, store: str, dst: str, block_rows: int = 65_536) -> None:
    """The atlas restricted to the store's ``highly_variable`` genes, as an uncompressed h5ad."""
    import anndata as ad
    import h5py
    import numpy as np
    import scipy.sparse as sp

    import atlasloader

    bench = _bench()
    t0 = time.perf_counter()
    keep = np.asarray(atlasloader.read_lazy(store).var["highly_variable"], dtype=bool)
    remap = np.full(keep.size, -1, dtype=np.int32)
    remap[keep] = np.arange(int(keep.sum()), dtype=np.int32)
    with h5py.File(h5ad, "r") as f:
        g = f["X"]
        indptr = g["indptr"][:].astype(np.int64)
        n = indptr.size - 1
        counts = np.zeros(n, dtype=np.int64)
        idx_parts, data_parts = [], []
        for start in range(0, n, block_rows):
            stop = min(n, start + block_rows)
            a, b = int(indptr[start]), int(indptr[stop])
            ind, dat = g["indices"][a:b], g["data"][a:b]
            m = keep[ind]
            rows = np.repeat(np.arange(stop - start), np.diff(indptr[start : stop + 1]))
            counts[start:stop] = np.bincount(rows[m], minlength=stop - start)
            idx_parts.append(remap[ind[m]])
            data_parts.append(dat[m])
    new_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    x = sp.csr_matrix(
        (np.concatenate(data_parts), np.concatenate(idx_parts), new_indptr),
        shape=(n, int(keep.sum())),
    )
    src = ad.read_h5ad(h5ad, backed="r")
    obs, var = src.obs.copy(), src.var.iloc[np.flatnonzero(keep)].copy()
    src.file.close()
    tmp = dst + ".tmp"
    ad.AnnData(X=x, obs=obs, var=var).write_h5ad(tmp)
    os.replace(tmp, dst)
    _emit(
        {
            "seconds": time.perf_counter() - t0,
            "n_vars": int(keep.sum()),
            "nnz": int(x.nnz),
            "nnz_per_cell": x.nnz / n,
            "bytes": os.path.getsize(dst),
            "peak_rss_gb": _gb(bench.peak_rss_bytes()),
        }
    )


def write_registry(store: str, dst: str) -> None:
    """The registry annbatch's run builds its model from (same genes and batches)."""
    from atlasloader.scvi import DataModule

    dm = DataModule(store, batch_key="batch", var_subset="highly_variable", size_factor_key=None)
    with open(dst, "wb") as f:
        pickle.dump(dm.registry, f)
    _emit({"n_vars": dm.n_vars, "n_batch": dm.n_batch})


# --- driver ---------------------------------------------------------------------------------------
def _data(args: argparse.Namespace) -> dict[str, Any]:
    """The atlas (bench_loader's helpers) and this benchmark's HVG store, h5ad and collection."""
    sys.path.insert(0, str(HERE))
    import bench_loader as bl

    largs = argparse.Namespace(
        dir=args.dir,
        genes=args.genes,
        nnz=args.nnz,
        categories=args.categories,
        seed=args.seed,
        python=args.python,
        peers_python=args.peers_python,
        timeout=args.timeout,
    )
    big = bl.prepare(largs, args.cells, with_annbatch=False)
    d = Path(args.dir)
    stem = big.h5ad.name.removesuffix(".h5ad")
    params = json.loads(big.h5ad.with_name(big.h5ad.name + ".ok.json").read_text())["params"]
    t = args.timeout
    me = str(Path(__file__).resolve())
    paths: dict[str, Any] = {"h5ad": big.h5ad, "made": dict(big.made)}
    store = d / f"{stem}.hvg{args.n_top_genes}.atlasloader.zarr"
    sp = {**params, "from": "h5ad", "n_top_genes": args.n_top_genes}
    cmd = [args.python, me, "_prep_store", str(big.h5ad), str(store), str(args.n_top_genes)]
    paths["made"]["hvg_store"] = bl._made(store, sp, lambda: bl.run_json(cmd, t))
    paths["store"] = store
    h5 = d / f"{stem}.hvg{args.n_top_genes}.h5ad"
    hp = {**sp, "hvg_h5ad": True}
    cmd = [args.python, me, "_prep_h5ad", str(big.h5ad), str(store), str(h5)]
    paths["made"]["hvg_h5ad"] = bl._made(h5, hp, lambda: bl.run_json(cmd, t))
    paths["hvg_h5ad"] = h5
    paths["annbatch"] = None
    if "annbatch" in args.runners:
        if not Path(args.peers_python).exists():
            paths["made"]["annbatch"] = {"error": f"no peers interpreter at {args.peers_python}"}
        else:
            coll = d / f"{stem}.hvg{args.n_top_genes}.annbatch.zarr"
            build = [
                args.peers_python,
                str(PEERS / "run_annbatch.py"),
                "build",
                str(h5),
                str(coll),
                "--seed",
                str(args.seed),
            ]
            try:
                paths["made"]["annbatch"] = bl._made(
                    coll, {**hp, "chunk_rows": 64}, lambda: bl.run_json(build, t)
                )
                paths["annbatch"] = coll
            except bl.RunFailed as e:
                paths["made"]["annbatch"] = {"error": str(e)}
        if paths["annbatch"] is not None:
            reg = Path(args.dir) / "train_registry.pkl"
            bl.run_json([args.python, me, "_registry", str(store), str(reg)], t)
            paths["registry"] = reg
    os.sync()
    bl.warm_page_cache(
        [bl.Data(args.cells, h5, store, paths["annbatch"])]  # the files the runs read
    )
    return paths


def _spec(args: argparse.Namespace, runner: str, paths: dict[str, Any]) -> list[str] | None:
    common = [
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--warmup-steps",
        str(args.warmup_steps),
        "--seed",
        str(args.seed),
    ]
    me = str(Path(__file__).resolve())
    latent = ["--latent"] if runner in args.latent else []
    if runner == "atlasloader":
        return [args.python, me, "_worker", runner, str(paths["store"]), *common, *latent]
    if runner == "atlasloader-threads1":
        cmd = [args.python, me, "_worker", runner, str(paths["store"]), *common]
        return [*cmd, "--loader-threads", "1"]
    if runner in ("scvi-memory", "scvi-backed"):
        return [args.python, me, "_worker", runner, str(paths["hvg_h5ad"]), *common, *latent]
    if paths.get("annbatch") is None:
        return None
    reg = ["--registry", str(paths["registry"])]
    return [args.peers_python, me, "_worker", runner, str(paths["annbatch"]), *reg, *common]


def _median(runs: list[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in runs if isinstance(r.get(key), int | float)]
    return float(statistics.median(vals)) if vals else math.nan


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    keys = ("cells_per_s", "data_wait_fraction", "peak_rss_gb", "setup_s", "mean_step_ms")
    keys += ("mean_gap_ms", "cpu_per_wall")
    out: dict[str, dict[str, Any]] = {}
    for runner, rs in runs.items():
        if not rs:
            continue
        med = {k: _median(rs, k) for k in keys}
        alone = [r["loader_alone"] for r in rs if "loader_alone" in r]
        if alone:
            med["loader_alone"] = {
                k: _median(alone, k) for k in ("cells_per_s", "cpu_ms_per_batch")
            }
        lat = [r["latent"] for r in rs if "latent" in r]
        if lat:
            med["latent"] = {k: _median(lat, k) for k in ("seconds", "cells_per_s", "peak_rss_gb")}
            med["latent"]["cells"] = lat[0]["cells"]
        med["runs"] = len(rs)
        out[runner] = med
    return out


def _k(v: float) -> str:
    return f"{v / 1e3:.2f}k" if math.isfinite(v) else "–"


def markdown(report: dict[str, Any]) -> str:
    cfg, med, runs = report["config"], report["summary"], report["runs"]
    n_hvg = report["data"].get("hvg_store", {}).get("n_hvg", cfg["n_top_genes"])
    lines = [
        "## Training benchmark: scvi-tools' SCVI fed by each loader",
        "",
        f"`scvi.model.SCVI(n_latent=10)` (default module) on {cfg['cells']:,} cells x "
        f"{cfg['genes']:,} genes restricted to {n_hvg:,} highly variable genes "
        f"(`atlasloader.preprocess`, Seurat v3), batches of {cfg['batch_size']}, CPU. "
        f"{cfg['steps']} steps timed after {cfg['warmup_steps']} warm-up steps, each run in a "
        f"fresh process, runners alternated, median of {cfg['repeats']} runs. cells/s = "
        f"steps x {cfg['batch_size']} / timed wall time. Data-wait fraction: time between "
        "`on_train_batch_end` and the next `on_train_batch_start` (next batch, "
        "`on_before_batch_transfer`, device copy, Lightning's bookkeeping) over the timed "
        "time. Peak RSS: the process's `VmHWM`, loading and registration included. Warm page "
        f"cache. Machine: {report['machine']}.",
        "",
        "| runner | cells/s | data-wait fraction | peak RSS | how it ran |",
        "|---|---:|---:|---:|---|",
    ]
    for r in RUNNERS:
        if r in med:
            m = med[r]
            each = ", ".join(_k(x["cells_per_s"]) for x in runs[r])
            lines.append(
                f"| {r} | {_k(m['cells_per_s'])} ({each}) | {m['data_wait_fraction']:.3f} | "
                f"{m['peak_rss_gb']:.2f} GB | {HOW[r]} |"
            )
        elif r in report["errors"] or r in report.get("skipped", {}):
            why = report.get("skipped", {}).get(r) or report["errors"][r][-1].splitlines()[-1]
            lines.append(f"| {r} | – | – | – | not run: {why} |")
    lines += [
        "",
        "cells/s: median (each run in brackets, in run order).",
        "",
        "| runner | setup (open, register / load) | mean step (compute) | mean data gap | "
        "CPU s per wall s (timed steps) | loader alone: cells/s | loader alone: CPU per batch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in RUNNERS:
        if r in med:
            m = med[r]
            la = m.get("loader_alone", {})
            lines.append(
                f"| {r} | {m['setup_s']:.2f} s | {m['mean_step_ms']:.1f} ms | "
                f"{m['mean_gap_ms']:.2f} ms | {m['cpu_per_wall']:.2f} | "
                f"{_k(la.get('cells_per_s', math.nan))} | "
                f"{la.get('cpu_ms_per_batch', math.nan):.1f} ms |"
            )
    lines += [
        "",
        "The data-wait fraction counts only time the training loop spends waiting for a batch. "
        "A loader that prepares batches in background threads (atlasloader, annbatch's "
        "preloading) hides that wait, but on this 2-core machine its threads take CPU from "
        'torch\'s 2 threads, which shows as longer steps instead. "Loader alone" iterates the '
        f"same training loader without a model after the run ({cfg.get('loader_batches', 100)} "
        "batches after 10): its cells/s and the CPU seconds of all the process's threads per "
        "batch, the work it adds to every step.",
    ]
    lat = [(r, med[r]["latent"]) for r in RUNNERS if r in med and "latent" in med[r]]
    if lat:
        lines += [
            "",
            "Latent pass over all cells (`get_latent_representation`; atlasloader through "
            "`dataloader=dm.inference_dataloader()`, scvi-tools with its own loader; peak RSS "
            "reset before the pass, so it is the process's high-water mark during it):",
            "",
            "| runner | cells | time | cells/s | peak RSS during the pass |",
            "|---|---:|---:|---:|---:|",
        ]
        for r, m in lat:
            lines.append(
                f"| {r} | {m['cells']:,} | {m['seconds']:.1f} s | {_k(m['cells_per_s'])} | "
                f"{m['peak_rss_gb']:.2f} GB |"
            )
    made = report["data"]
    lines += ["", "Data:", ""]
    hs = made.get("hvg_store", {})
    if "convert_s" in hs:
        lines.append(
            f"- atlasloader store: `convert` {hs['convert_s']:.1f} s + `preprocess(n_top_genes="
            f"{cfg['n_top_genes']})` {hs['preprocess_s']:.1f} s ({hs['peak_rss_gb']:.2f} GB "
            "peak RSS); all 20,000 genes stay in the store."
        )
    hh = made.get("hvg_h5ad", {})
    if "seconds" in hh:
        lines.append(
            f"- HVG-only `.h5ad` for scvi-tools and annbatch: {hh['n_vars']:,} genes, "
            f"{hh['nnz_per_cell']:.0f} non-zeros per cell, {hh['bytes'] / 1e9:.2f} GB "
            f"uncompressed, written in {hh['seconds']:.1f} s."
        )
    ab = made.get("annbatch", {})
    if "build_s" in ab:
        lines.append(
            f"- annbatch's pre-shuffled collection of it: {ab['build_s']:.1f} s, "
            f"{ab['build_peak_rss_gb']:.2f} GB peak RSS."
        )
    elif "error" in ab:
        lines.append(f"- annbatch: {ab['error'].splitlines()[-1]}")
    vers = next((r[0]["versions"] for r in runs.values() if r), {})
    lines += [
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items() if k != "annbatch"),
        "(annbatch's run: the peers venv, same torch, lightning and scvi-tools).",
    ]
    if report["errors"]:
        lines += ["", "Failed runs:", ""]
        for key, errs in report["errors"].items():
            lines.append(f"- `{key}` ({len(errs)}x): {errs[0].splitlines()[-1]}")
    lines += ["", "Reproduce:", "", "```bash", report["command"], "```", ""]
    return "\n".join(lines)


def machine() -> str:
    sys.path.insert(0, str(HERE))
    import bench_loader as bl

    return bl.machine()


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dir", default="bench_out/data", help="data (shared with bench_loader.py)")
    ap.add_argument("--out", default="benchmarks/results", help="train.json, train.md go here")
    ap.add_argument("--cells", type=int, default=400_000)
    ap.add_argument("--genes", type=int, default=20_000)
    ap.add_argument("--nnz", type=int, default=814, help="non-zeros per cell")
    ap.add_argument("--categories", type=int, default=40, help="obs['batch'] categories")
    ap.add_argument("--n-top-genes", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=150, help="training steps timed per run")
    ap.add_argument("--warmup-steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2, help="alternated runs of each runner")
    ap.add_argument("--runners", nargs="*", default=list(RUNNERS), choices=RUNNERS)
    ap.add_argument(
        "--latent",
        nargs="*",
        default=["atlasloader", "scvi-memory"],
        choices=RUNNERS[:3],
        help="runners that also time a latent pass over all cells (first run only)",
    )
    ap.add_argument("--python", default=sys.executable, help="interpreter with atlasloader")
    ap.add_argument("--peers-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    command = shlex.join([".venv/bin/python", "benchmarks/bench_train.py", *argv])
    args.dir = str(Path(args.dir).resolve())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    import bench_loader as bl

    t_start = time.perf_counter()
    print(f"data under {args.dir}", flush=True)
    paths = _data(args)
    runs: dict[str, list[dict[str, Any]]] = {r: [] for r in args.runners}
    errors: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    for rep in range(args.repeats):
        for runner in args.runners:
            cmd = _spec(args, runner, paths)
            if cmd is None:
                why = paths["made"].get("annbatch", {}).get("error", "annbatch unavailable")
                skipped[runner] = why.splitlines()[-1]
                continue
            if rep > 0 and "--latent" in cmd:
                cmd.remove("--latent")
            print(f"  [{rep + 1}/{args.repeats}] {runner} ...", end=" ", flush=True)
            t0 = time.perf_counter()
            try:
                rec = bl.run_json(cmd, args.timeout)
            except bl.RunFailed as e:
                errors.setdefault(runner, []).append(str(e))
                print(f"FAILED ({time.perf_counter() - t0:.0f} s)\n{e}", flush=True)
                continue
            rec["command"] = shlex.join(cmd)
            runs[runner].append(rec)
            lat = rec.get("latent")
            extra = f", latent {lat['cells_per_s'] / 1e3:.1f}k cells/s" if lat else ""
            print(
                f"{rec['cells_per_s']:.0f} cells/s, wait {rec['data_wait_fraction']:.3f}, "
                f"{rec['peak_rss_gb']:.2f} GB{extra} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    report: dict[str, Any] = {
        "config": {
            k: getattr(args, k)
            for k in (
                "cells",
                "genes",
                "nnz",
                "categories",
                "n_top_genes",
                "seed",
                "batch_size",
                "steps",
                "warmup_steps",
                "repeats",
                "runners",
            )
        },
        "machine": machine(),
        "platform": platform.platform(),
        "command": command,
        "data": paths["made"],
        "summary": summarise(runs),
        "runs": runs,
        "errors": errors,
        "skipped": skipped,
        "total_s": time.perf_counter() - t_start,
    }
    (out / "train.json").write_text(json.dumps(report, indent=1, default=str))
    md = markdown(report)
    (out / "train.md").write_text(md)
    reg = paths.get("registry")
    if reg is not None:
        Path(reg).unlink(missing_ok=True)
    print()
    print(md)
    print(f"wrote {out / 'train.json'}, {out / 'train.md'} in {report['total_s']:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_prep_store":
        prep_store(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_prep_h5ad":
        prep_h5ad(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "_registry":
        write_registry(sys.argv[2], sys.argv[3])
    else:
        main()
