"""GPU throughput: atlasloader's loader onto the device, SCVI training on it, annbatch's peer.

A synthetic atlas (200,000 cells x 2,000 genes, 200 non-zeros per cell, 40 ``batch``
categories in sorted blocks; generated, converted and reused under ``--dir`` by
``bench_loader.py``'s own helpers) is read in shuffled batches of 512 and measured on one GPU:

- ``loader-host``: ``AnnDataLoader(shuffle=True)`` into host memory, dense float32 (no device
  copy): the baseline the device rows are compared with;
- ``loader-dense``: ``AnnDataLoader(device="cuda", pin_memory=True)``: densified on the CPU,
  pinned, copied one batch ahead on a side stream (``loading/device.py``);
- ``loader-sparse``: ``AnnDataLoader(device="cuda", pin_memory=True, sparse=True)``: the CSR
  arrays are shipped and densified on the device;
- ``train``: ``scvi.model.SCVI(registry=dm.registry, n_latent=10)`` trained with
  ``atlasloader.scvi.DataModule(store, batch_key="batch", batch_size=512)`` and
  ``accelerator="gpu"`` (Lightning copies each batch); ``train-device`` and ``train-sparse``
  give the data module the loader's own device copy (dense, and CSR densified on the device);
- ``annbatch`` (peers interpreter, ``--python-peers``): annbatch's ``Loader(chunk_size=64,
  preload_nchunks=64, shuffle=True, preload_to_gpu=True)`` (``to="torch"`` where it has it)
  over its own pre-shuffled collection of the same ``.h5ad``, batches densified on the device.
  ``preload_to_gpu`` needs cupy; without it the row runs with ``preload_to_gpu=False`` and says
  so. "not installed" when annbatch cannot be imported there.

Loader rows take ``--warmup-batches`` batches, then time ``--n-batches`` with
``torch.cuda.synchronize()`` before each clock reading; every batch's ``X`` is checked to be a
dense float32 tensor on the device and summed there (float64), so the timed window covers the
copies and the densifying, and the sums show that dense- and sparse-shipped batches hold the
same values. The median of ``--repeats`` alternated runs is reported (each a fresh loader, same
seed). Training times ``--steps`` steps after ``--warmup-steps`` with a Lightning callback
(``bench_train.py``'s, plus a device synchronisation at both ends); its data wait is the time
between one step's end and the next step's start. atlasloader runs in this process one run
after another; annbatch in a subprocess of its interpreter, timed by the same function.

::

    .venv/bin/python benchmarks/bench_gpu.py                     # a few minutes on one H100
    .venv/bin/python benchmarks/bench_gpu.py --python-peers .venv-peers/bin/python
    .venv/bin/python benchmarks/bench_gpu.py --allow-cpu --dir /tmp/bg --out /tmp/bg/out
        # no GPU: the same code on the CPU, tiny defaults (2,000 cells x 100 genes): a smoke run

Without a CUDA device (and without ``--allow-cpu``) it exits with status 2. Writes ``gpu.json``
(every run's numbers) and ``gpu.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / "peers"
NO_CUDA = "bench_gpu: no CUDA device: the GPU figures need a machine with a GPU"

# (runner, what was measured); the loader options of each atlasloader run come below.
RUNS: dict[str, tuple[str, str]] = {
    "loader-host": (
        "atlasloader",
        "`AnnDataLoader(shuffle=True)` into host memory, dense float32 (no device copy)",
    ),
    "loader-dense": (
        "atlasloader",
        "`AnnDataLoader(device=..., pin_memory=True)`: densified on the CPU, pinned, copied "
        "one batch ahead on a side stream",
    ),
    "loader-sparse": (
        "atlasloader",
        "`AnnDataLoader(device=..., pin_memory=True, sparse=True)`: CSR shipped, densified "
        "on the device",
    ),
    "train": (
        "atlasloader + scvi-tools",
        "`SCVI(n_latent=10)` trained from `atlasloader.scvi.DataModule(store, "
        "batch_key='batch')`: Lightning copies each batch",
    ),
    "train-device": (
        "atlasloader + scvi-tools",
        "as `train`, `DataModule(..., device=..., pin_memory=True)`: the loader copies one "
        "batch ahead",
    ),
    "train-sparse": (
        "atlasloader + scvi-tools",
        "as `train-device` with `sparse=True`: CSR shipped, densified on the device",
    ),
    "annbatch": (
        "annbatch",
        "`Loader(chunk_size=64, preload_nchunks=64, shuffle=True, preload_to_gpu=True)` over "
        "its pre-shuffled collection, densified on the device",
    ),
}
LOADER_RUNS = ("loader-host", "loader-dense", "loader-sparse")
TRAIN_RUNS = ("train", "train-device", "train-sparse")
# (sparse, pin_memory, on the device) of each atlasloader run.
OPTIONS = {
    "loader-host": (False, False, False),
    "loader-dense": (False, True, True),
    "loader-sparse": (True, True, True),
    "train": (False, False, False),
    "train-device": (False, True, True),
    "train-sparse": (True, True, True),
}
GPU_DEFAULTS = {
    "cells": 200_000,
    "genes": 2_000,
    "nnz": 200,
    "categories": 40,
    "n_batches": 300,
    "warmup_batches": 20,
    "steps": 300,
    "warmup_steps": 30,
}
# The --allow-cpu smoke run without a GPU: the same code, sized for seconds on 2 cores.
CPU_DEFAULTS = {
    "cells": 2_000,
    "genes": 100,
    "nnz": 20,
    "categories": 4,
    "n_batches": 8,
    "warmup_batches": 2,
    "steps": 6,
    "warmup_steps": 2,
}
PROBE = """
import importlib.metadata as md, importlib.util as u, json
v = lambda n: md.version(n) if u.find_spec(n.replace("-", "_")) else None
print(json.dumps({"annbatch": v("annbatch"), "cupy": u.find_spec("cupy") is not None,
                  "zarrs": u.find_spec("zarrs") is not None, "torch": v("torch")}))
"""


# --- helpers usable from both interpreters (stdlib at import time) -------------------------------
def _sync(dev: Any) -> None:
    """Wait for everything queued on ``dev`` (every stream), so the clock reads finished work."""
    import torch

    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _emit(rec: dict[str, Any]) -> None:
    print(json.dumps(rec, default=float), flush=True)


def _endless(make: Callable[[], Any]) -> Iterator[Any]:
    """Batches of ``make()``'s loader, iterated again (the next epoch) when one pass ends."""
    loader = make()
    while True:
        n = 0
        it = iter(loader)
        try:
            for batch in it:
                n += 1
                yield batch
        finally:  # closing this generator stops the loader's pipeline now, not at collection
            _close(it)
        if n == 0:
            raise RuntimeError("the loader yielded no batch: nothing to time")


def time_batches(
    batches: Iterator[Any],
    to_x: Callable[[Any], Any],
    dev: Any,
    n_batches: int,
    warmup: int,
    checksum: bool = True,
) -> dict[str, Any]:
    """Time ``n_batches`` batches after ``warmup``; ``X`` must arrive dense on ``dev``.

    ``to_x`` takes a batch to its ``X`` tensor. With ``checksum`` each ``X`` is summed on
    ``dev`` (float64), which also makes the consumer's stream use the batch as a model would.
    On CUDA the device is synchronised before each clock reading and CUDA events give the
    device-side span of the timed window.
    """
    import torch

    cuda = dev is not None and dev.type == "cuda"
    acc = torch.zeros((), dtype=torch.float64, device=dev) if checksum else None
    shape: tuple[int, ...] = ()

    def take() -> int:
        nonlocal shape
        x = to_x(next(batches))
        if dev is not None and (x.device.type != dev.type or x.layout != torch.strided):
            msg = f"X arrived as {x.layout} on {x.device}, expected a dense tensor on {dev}"
            raise RuntimeError(msg)
        if x.dtype != torch.float32:
            raise RuntimeError(f"X arrived as {x.dtype}, expected torch.float32")
        if acc is not None:
            acc.add_(x.sum(dtype=torch.float64))
        shape = tuple(x.shape)
        return int(x.shape[0])

    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    take()
    _sync(dev)
    first_s = time.perf_counter() - t0
    for _ in range(warmup):
        take()
    if acc is not None:
        acc.zero_()
    _sync(dev)
    start = end = None
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0, c0 = time.perf_counter(), time.process_time()
    cells = sum(take() for _ in range(n_batches))
    if end is not None:
        end.record()
    _sync(dev)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    rec: dict[str, Any] = {
        "batches": n_batches,
        "cells": cells,
        "timed_s": took,
        "cells_per_s": cells / took if took > 0 else math.nan,
        "ms_per_batch": 1e3 * took / n_batches,
        "cpu_per_wall": cpu / took if took > 0 else math.nan,
        "first_batch_s": first_s,
        "x_shape": list(shape),
        "checksum": float(acc.item()) if acc is not None else None,
    }
    if cuda and start is not None and end is not None:
        rec["gpu_span_s"] = start.elapsed_time(end) / 1e3
        rec["gpu_peak_mem_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
    return rec


def _close(it: Any) -> None:
    """Stop a batch generator now (its loader's threads shut down) rather than at collection."""
    close = getattr(it, "close", None)
    if close is not None:
        close()


def _median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("cells_per_s", "ms_per_batch", "first_batch_s", "cpu_per_wall", "gpu_span_s")
    out: dict[str, Any] = {}
    for k in (*keys, "gpu_peak_mem_gb"):
        vals = [r[k] for r in runs if isinstance(r.get(k), int | float)]
        if vals:
            out[k] = float(max(vals) if k == "gpu_peak_mem_gb" else statistics.median(vals))
    out["runs"] = [r["cells_per_s"] for r in runs]
    out["checksums"] = [r.get("checksum") for r in runs]
    out["x_shape"] = runs[0].get("x_shape") if runs else None
    return out


# --- annbatch (run by the peers interpreter) ------------------------------------------------------
def _annbatch_x(dev: Any) -> Callable[[Any], Any]:
    """An annbatch batch's ``X`` as a dense float32 tensor on ``dev`` (densified there)."""
    import numpy as np
    import torch

    def to_x(batch: Any) -> Any:
        x = batch["X"]
        if isinstance(x, torch.Tensor):
            if x.device.type != dev.type:
                x = x.to(dev, non_blocking=True)
            if x.layout == torch.sparse_csr:
                x = x.to_dense()
        elif type(x).__module__.startswith("cupy"):  # preload_to_gpu without to="torch"
            x = torch.from_dlpack(x.toarray() if hasattr(x, "toarray") else x)
        else:  # scipy / numpy on the host
            x = np.asarray(x.toarray() if hasattr(x, "toarray") else x)
            x = torch.from_numpy(x).to(dev)
        return x.to(torch.float32)

    return to_x


def annbatch_worker(argv: list[str]) -> None:
    """Time annbatch's Loader on a collection; print one JSON line."""
    ap = argparse.ArgumentParser(prog="bench_gpu.py _annbatch")
    ap.add_argument("collection")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--n-batches", type=int, default=300)
    ap.add_argument("--warmup-batches", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--preload-nchunks", type=int, default=64)
    ap.add_argument("--no-preload", dest="preload", action="store_false")
    args = ap.parse_args(argv)
    import inspect
    import warnings

    import numpy as np
    import torch
    from annbatch import DatasetCollection, Loader

    warnings.simplefilter("ignore")
    if importlib.util.find_spec("zarrs") is not None:
        sys.path.insert(0, str(PEERS))
        from run_annbatch import use_zarrs

        use_zarrs()
    dev = torch.device(args.device)
    t0 = time.perf_counter()
    collection = DatasetCollection(args.collection, mode="r")
    setup_s = time.perf_counter() - t0
    # Output to torch: ``to="torch"`` in newer releases, ``to_torch=True`` in older ones.
    params = inspect.signature(Loader).parameters
    output = (
        {"to": "torch"} if "to" in params else {"to_torch": True} if "to_torch" in params else {}
    )

    def make() -> Any:
        kwargs: dict[str, Any] = {
            "chunk_size": args.chunk_size,
            "preload_nchunks": args.preload_nchunks,
            "batch_size": args.batch_size,
            "shuffle": True,
            "drop_last": False,
            "preload_to_gpu": args.preload,
            "rng": np.random.default_rng(args.seed),
        }
        return Loader(**kwargs, **output).use_collection(collection)

    runs = []
    for _ in range(args.repeats):
        it = _endless(make)
        try:
            runs.append(
                time_batches(it, _annbatch_x(dev), dev, args.n_batches, args.warmup_batches)
            )
        finally:
            _close(it)
        gc.collect()
    import importlib.metadata as md

    vers = {}
    for n in ("annbatch", "torch", "cupy", "cupy-cuda12x", "cupy-cuda13x", "zarr", "zarrs"):
        with contextlib.suppress(md.PackageNotFoundError):
            vers[n] = md.version(n)
    _emit(
        {
            "runs": runs,
            "setup_s": setup_s,
            "preload_to_gpu": args.preload,
            "output": output,
            "zarrs": importlib.util.find_spec("zarrs") is not None,
            "versions": vers,
            "python": sys.executable,
        }
    )


# --- atlasloader (this interpreter) ---------------------------------------------------------------
def _loader_kwargs(key: str, dev: Any, threads: int | None) -> dict[str, Any]:
    sparse, pin, on_device = OPTIONS[key]
    kwargs: dict[str, Any] = {"sparse": sparse, "pin_memory": pin}
    if on_device:
        kwargs["device"] = dev
    if threads is not None:
        kwargs["num_threads"] = threads
    return kwargs


def run_loader(dm: Any, key: str, args: argparse.Namespace, dev: Any) -> dict[str, Any]:
    """One timed pass of the data module's loader over every cell, with ``key``'s options."""
    kwargs = _loader_kwargs(key, dev, args.loader_threads)
    on_device = "device" in kwargs
    it = _endless(lambda: dm.make_loader(None, shuffle=True, **kwargs))
    try:
        # The host baseline only holds each batch (as bench_loader's runs): a sum on the CPU
        # would cost the loader's threads time that the device rows spend on the GPU.
        rec = time_batches(
            it,
            lambda b: b["X"],
            dev if on_device else None,
            args.n_batches,
            args.warmup_batches,
            checksum=on_device,
        )
    finally:
        _close(it)
    rec["loader_kwargs"] = {k: str(v) for k, v in kwargs.items()}
    return rec


def _gpu_step_timer(warmup: int, steps: int, dev: Any) -> Any:
    """``bench_train.py``'s step timer, the device synchronised before its two clock readings."""
    sys.path.insert(0, str(HERE))
    from bench_train import _step_timer

    base = type(_step_timer(warmup, steps))

    class SyncedStepTimer(base):  # type: ignore[misc, valid-type]
        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, out: Any, batch: Any, idx: int
        ) -> None:
            if self.done + 1 in (warmup, warmup + steps):  # the step that starts or ends timing
                _sync(dev)
            super().on_train_batch_end(trainer, pl_module, out, batch, idx)

    return SyncedStepTimer()


def run_train(store: str, key: str, args: argparse.Namespace, dev: Any) -> dict[str, Any]:
    """Train SCVI for warm-up + timed steps from a fresh data module; the timer's numbers."""
    import scvi
    import torch

    from atlasloader.scvi import DataModule

    scvi.settings.seed = args.seed
    torch.manual_seed(args.seed)
    kwargs = _loader_kwargs(key, dev, args.loader_threads)
    if not any(OPTIONS[key]):  # the data module exactly as a user writes it
        kwargs = {k: v for k, v in kwargs.items() if k not in ("sparse", "pin_memory")}
    t0 = time.perf_counter()
    dm = DataModule(store, batch_key="batch", batch_size=args.batch_size, seed=args.seed, **kwargs)
    setup_s = time.perf_counter() - t0
    model = scvi.model.SCVI(registry=dm.registry, n_latent=10)
    timer = _gpu_step_timer(args.warmup_steps, args.steps, dev)
    total = args.warmup_steps + args.steps
    per_epoch = max(1, math.ceil(dm.n_train / args.batch_size))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    model.train(
        max_epochs=math.ceil(total / per_epoch) + 1,
        max_steps=total,
        accelerator="gpu" if dev.type == "cuda" else "cpu",
        devices=1,
        datamodule=dm,
        callbacks=[timer],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    rec: dict[str, Any] = timer.result(args.batch_size)
    rec.update(
        setup_s=setup_s,
        n_train=dm.n_train,
        n_vars=dm.n_vars,
        n_batch=dm.n_batch,
        loader_kwargs={k: str(v) for k, v in kwargs.items()},
        epoch_boundary_in_timed_steps=total > per_epoch,
        model_device=str(next(model.module.parameters()).device),
    )
    if dev.type == "cuda":
        rec["gpu_peak_mem_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
    return rec


# --- data and the peer's interpreter --------------------------------------------------------------
def _data(args: argparse.Namespace) -> Any:
    """The atlas ``.h5ad`` and atlasloader's ``convert``ed store (bench_loader's helpers)."""
    sys.path.insert(0, str(HERE))
    import bench_loader as bl

    largs = argparse.Namespace(
        dir=args.dir,
        genes=args.genes,
        nnz=args.nnz,
        categories=args.categories,
        seed=args.seed,
        python=sys.executable,
        peers_python=None,
        timeout=args.timeout,
    )
    return bl.prepare(largs, args.cells, with_annbatch=False)


def _peers_python(args: argparse.Namespace) -> str | None:
    """The interpreter for annbatch: ``--python-peers``, this one, or ``.venv-peers``."""
    if args.python_peers:
        return args.python_peers
    if importlib.util.find_spec("annbatch") is not None:
        return sys.executable
    default = ROOT / ".venv-peers" / "bin" / "python"
    return str(default) if default.exists() else None


def probe(python: str | None) -> dict[str, Any]:
    """What ``python`` has of annbatch, cupy and zarrs (``{"error": ...}`` if it cannot say)."""
    if python is None:
        return {"error": "no peers interpreter (give --python-peers PATH)"}
    if not Path(python).exists():
        return {"error": f"no interpreter at {python}"}
    try:
        proc = subprocess.run(
            [python, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as e:
        return {"error": f"{python} could not be asked for annbatch: {e}"}


def run_annbatch(
    args: argparse.Namespace, data: Any, dev: Any, python: str | None
) -> dict[str, Any]:
    """Build (or reuse) annbatch's collection and time its loader in ``python``."""
    import bench_loader as bl

    found = probe(python)
    info: dict[str, Any] = {"python": python, "probe": found}
    if "error" in found or not found.get("annbatch"):
        why = found.get("error") or f"annbatch is not importable by {python}"
        return {**info, "status": "not installed", "why": why}
    cuda = dev.type == "cuda"
    preload = cuda and bool(found.get("cupy"))
    if not cuda:
        info["preload_note"] = "preload_to_gpu=False: no CUDA device (--allow-cpu)"
    elif not preload:
        info["preload_note"] = (
            "preload_to_gpu=False: cupy is not installed in the peers interpreter "
            "(preload_to_gpu needs it); batches copied and densified on the device"
        )
    coll = data.h5ad.with_name(data.h5ad.name.removesuffix(".h5ad") + ".annbatch.zarr")
    params = json.loads(data.h5ad.with_name(data.h5ad.name + ".ok.json").read_text())["params"]
    build = [python, str(PEERS / "run_annbatch.py"), "build", str(data.h5ad), str(coll)]
    build += ["--seed", str(args.seed)] + ([] if found.get("zarrs") else ["--no-zarrs"])
    try:
        info["made"] = bl._made(
            coll, {**params, "chunk_rows": 64}, lambda: bl.run_json(build, args.timeout)
        )
        bl.warm_page_cache([bl.Data(args.cells, data.h5ad, data.store, coll)])
        cmd = [python, str(Path(__file__).resolve()), "_annbatch", str(coll)]
        cmd += ["--device", str(dev), "--batch-size", str(args.batch_size)]
        cmd += ["--n-batches", str(args.n_batches), "--warmup-batches", str(args.warmup_batches)]
        cmd += ["--repeats", str(args.repeats), "--seed", str(args.seed)]
        cmd += [] if preload else ["--no-preload"]
        rec = bl.run_json(cmd, args.timeout)
    except bl.RunFailed as e:
        return {**info, "status": "failed", "why": str(e)}
    return {**info, **rec, "status": "ok", "command": shlex.join(cmd)}


# --- reporting ------------------------------------------------------------------------------------
def device_info(dev: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": str(dev),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(
            name=torch.cuda.get_device_name(dev),
            memory_gb=props.total_memory / 1e9,
            capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
            driver_cuda=_driver_version(),
        )
    else:
        info["name"] = f"CPU ({platform.processor() or platform.machine()}; --allow-cpu smoke run)"
    return info


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _k(v: Any) -> str:
    return f"{v / 1e3:.1f}k" if isinstance(v, int | float) and math.isfinite(v) else "–"


def _notes(key: str, r: dict[str, Any], report: dict[str, Any]) -> str:
    cfg = report["config"]
    if r.get("status") != "ok":
        return f"{r.get('status', 'failed')}: {str(r.get('why', '')).strip().splitlines()[-1]}"
    parts = []
    if key in LOADER_RUNS or key == "annbatch":
        each = ", ".join(_k(v) for v in r.get("runs", []))
        parts.append(f"median of {len(r.get('runs', []))} ({each})")
        parts.append(f"{r['ms_per_batch']:.2f} ms/batch")
        parts.append(f"first batch {r['first_batch_s']:.2f} s")
        bs, genes, nnz = cfg["batch_size"], cfg["genes"], cfg["nnz"]
        if key == "loader-dense":
            parts.append(f"ships {bs * genes * 4 / 1e6:.1f} MB/batch")
        elif key == "loader-sparse":
            parts.append(f"ships ~{(bs * nnz * 12 + (bs + 1) * 8) / 1e6:.2f} MB/batch")
        if key == "annbatch":
            parts.append(r.get("preload_note") or "preload_to_gpu=True")
            out = r.get("output") or {}
            parts.append(", ".join(f"{k}={v!r}" for k, v in out.items()) or "scipy/cupy output")
    else:
        parts.append(f"data wait {r['data_wait_fraction']:.3f}")
        parts.append(f"{r['mean_step_ms']:.2f} ms/step")
        parts.append(f"{r['steps_timed']} steps after {r['warmup_steps']}")
        if r.get("epoch_boundary_in_timed_steps"):
            parts.append("an epoch boundary (validation) falls in the timed steps")
    if isinstance(r.get("gpu_peak_mem_gb"), int | float):
        parts.append(f"peak GPU memory {r['gpu_peak_mem_gb']:.2f} GB (torch allocator)")
    return "; ".join(parts)


def markdown(report: dict[str, Any]) -> str:
    cfg, dv, rows = report["config"], report["device"], report["rows"]
    cuda = dv.get("cuda") or "none"
    lines = [
        "## GPU benchmark: loader to device and SCVI training",
        "",
        f"{cfg['cells']:,} cells x {cfg['genes']:,} genes, {cfg['nnz']} non-zeros per cell, "
        f"{cfg['categories']} `batch` categories in sorted blocks; shuffled batches of "
        f"{cfg['batch_size']}, `X` dense float32 on the device. Loader rows: "
        f"{cfg['n_batches']} batches timed after {cfg['warmup_batches']}, the device "
        "synchronised before each clock reading, each `X` summed on the device; median of "
        f"{cfg['repeats']} alternated runs. Training: `scvi.model.SCVI(n_latent=10)`, "
        f"{cfg['steps']} steps timed after {cfg['warmup_steps']}; cells/s = steps x "
        f"{cfg['batch_size']} / time. Warm page cache.",
        "",
        f"Device: **{dv.get('name')}**, torch {dv.get('torch')}, CUDA {cuda}"
        + (f", driver {dv['driver_cuda']}" if dv.get("driver_cuda") else "")
        + f". Host: {report['machine']}.",
        "",
        "| runner | what | cells/s | notes |",
        "|---|---|---:|---|",
    ]
    for key in RUNS:
        if key not in rows:
            continue
        r = rows[key]
        runner, what = RUNS[key]
        if key == "annbatch" and r.get("status") == "ok" and not r.get("preload_to_gpu"):
            what = what.replace("preload_to_gpu=True", "preload_to_gpu=False")
        lines.append(
            f"| {runner} | `{key}`: {what} | {_k(r.get('cells_per_s'))} | "
            f"{_notes(key, r, report)} |"
        )
    sums = [rows[k].get("checksums") for k in ("loader-dense", "loader-sparse") if k in rows]
    if len(sums) == 2 and all(sums):
        same = all(
            a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
            for a, b in zip(sums[0], sums[1])
        )
        lines += [
            "",
            "Dense- and sparse-shipped batches: the device sums of the timed batches "
            + ("agree" if same else "**differ**")
            + f" ({sums[0][0]:.6g} and {sums[1][0]:.6g} in the first run).",
        ]
    lines += [
        "",
        "`loader-host` is what the loader delivers without a device; the device rows add the "
        "copy (and, for sparse, the densifying on the device) and show how much of it is "
        "hidden behind the host work. The training rows' data wait is the time between one "
        "step's end and the next step's start (the next batch, its device copy and "
        "Lightning's bookkeeping) over the timed time.",
    ]
    vers = report.get("versions", {})
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + "."]
    ab = rows.get("annbatch", {})
    if ab.get("status") == "ok":
        av = ab.get("versions", {})
        lines.append(
            "annbatch's run: "
            + ", ".join(f"{k} {v}" for k, v in av.items())
            + f" ({ab.get('python')})."
        )
    if report["errors"]:
        lines += ["", "Failed runs:", ""]
        for key, err in report["errors"].items():
            lines.append(f"- `{key}`: {err.strip().splitlines()[-1]}")
    lines += ["", "Reproduce:", "", "```bash", report["command"], "```", ""]
    return "\n".join(lines)


def summarise(key: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    if key in LOADER_RUNS:
        return {"status": "ok", **_median_runs(runs), "each": runs}
    return {"status": "ok", **runs[0]}


# --- driver ---------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dir", default="bench_out/data", help="data (shared with bench_loader.py)")
    ap.add_argument("--out", default="benchmarks/results", help="gpu.json, gpu.md go here")
    g = GPU_DEFAULTS
    ap.add_argument(
        "--cells", type=int, help=f"default {g['cells']:,} ({CPU_DEFAULTS['cells']:,} on the CPU)"
    )
    ap.add_argument("--genes", type=int, help=f"default {g['genes']:,}")
    ap.add_argument("--nnz", type=int, help=f"non-zeros per cell, default {g['nnz']}")
    ap.add_argument(
        "--categories", type=int, help=f"obs['batch'] categories, default {g['categories']}"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--n-batches", type=int, help=f"loader batches timed, default {g['n_batches']}")
    ap.add_argument("--warmup-batches", type=int, help=f"default {g['warmup_batches']}")
    ap.add_argument("--repeats", type=int, default=3, help="alternated runs of each loader row")
    ap.add_argument("--steps", type=int, help=f"training steps timed, default {g['steps']}")
    ap.add_argument("--warmup-steps", type=int, help=f"default {g['warmup_steps']}")
    ap.add_argument("--loader-threads", type=int, default=None, help="atlasloader num_threads")
    ap.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    ap.add_argument(
        "--python-peers",
        "--peers-python",
        dest="python_peers",
        default=None,
        help="interpreter with annbatch (default: this one if it has annbatch, else "
        ".venv-peers/bin/python if present)",
    )
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    ap.add_argument(
        "--allow-cpu",
        action="store_true",
        help="without a CUDA device run everything on the CPU with tiny defaults (a smoke run)",
    )
    args = ap.parse_args(argv)
    for name in ("n_batches", "steps", "repeats", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _resolve_defaults(args: argparse.Namespace, cuda: bool) -> None:
    for k, v in (GPU_DEFAULTS if cuda else CPU_DEFAULTS).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.warmup_steps = max(1, args.warmup_steps)  # the step timer starts at a step's end


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(NO_CUDA, file=sys.stderr)
        return 2
    _resolve_defaults(args, cuda)
    dev = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        print("no CUDA device: --allow-cpu runs the same code on the CPU (smoke run)", flush=True)
    command = shlex.join([".venv/bin/python", "benchmarks/bench_gpu.py", *argv])
    args.dir = str(Path(args.dir).resolve())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    import bench_loader as bl
    import bench_train as bt

    t_start = time.perf_counter()
    print(f"data under {args.dir}", flush=True)
    data = _data(args)
    os.sync()
    bl.warm_page_cache([data])
    bt._quiet()
    store = str(data.store)
    runs: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, str] = {}

    def attempt(key: str, fn: Callable[[], dict[str, Any]]) -> None:
        print(f"  {key} ...", end=" ", flush=True)
        t0 = time.perf_counter()
        try:
            rec = fn()
        except Exception:
            errors[key] = traceback.format_exc()
            print(f"FAILED ({time.perf_counter() - t0:.0f} s)\n{errors[key]}", flush=True)
            return
        finally:
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        runs.setdefault(key, []).append(rec)
        print(f"{rec['cells_per_s'] / 1e3:.1f}k cells/s ({time.perf_counter() - t0:.1f} s)")

    loader_keys = [k for k in LOADER_RUNS if k in args.runs]
    if loader_keys:
        from atlasloader.scvi import DataModule

        dm = DataModule(store, batch_key="batch", batch_size=args.batch_size, seed=args.seed)
        for rep in range(args.repeats):
            for key in loader_keys:
                if key not in errors:
                    print(f"[{rep + 1}/{args.repeats}]", end="", flush=True)
                    attempt(key, lambda key=key: run_loader(dm, key, args, dev))
        del dm
    for key in (k for k in TRAIN_RUNS if k in args.runs):
        attempt(key, lambda key=key: run_train(store, key, args, dev))

    rows: dict[str, dict[str, Any]] = {}
    for key in RUNS:
        if key in errors:
            rows[key] = {"status": "failed", "why": errors[key]}
        elif runs.get(key):
            rows[key] = summarise(key, runs[key])
    if "annbatch" in args.runs:
        print("  annbatch ...", end=" ", flush=True)
        ab = run_annbatch(args, data, dev, _peers_python(args))
        if ab["status"] == "ok":
            ab.update(_median_runs(ab["runs"]))
            print(f"{ab['cells_per_s'] / 1e3:.1f}k cells/s", flush=True)
        else:
            print(f"{ab['status']}: {ab['why'].strip().splitlines()[-1]}", flush=True)
        rows["annbatch"] = ab

    versions = bt._versions()
    report: dict[str, Any] = {
        "config": {
            k: getattr(args, k)
            for k in (
                "cells",
                "genes",
                "nnz",
                "categories",
                "seed",
                "batch_size",
                "n_batches",
                "warmup_batches",
                "repeats",
                "steps",
                "warmup_steps",
                "loader_threads",
                "runs",
            )
        },
        "device": device_info(dev),
        "machine": bl.machine(),
        "platform": platform.platform(),
        "command": command,
        "data": data.made,
        "rows": rows,
        "errors": errors,
        "versions": versions,
        "total_s": time.perf_counter() - t_start,
    }
    (out / "gpu.json").write_text(json.dumps(report, indent=1, default=str))
    md = markdown(report)
    (out / "gpu.md").write_text(md)
    print()
    print(md)
    print(f"wrote {out / 'gpu.json'}, {out / 'gpu.md'} in {report['total_s']:.0f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_annbatch":
        annbatch_worker(sys.argv[2:])
    else:
        sys.exit(main())
