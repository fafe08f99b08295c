"""Shared plumbing of the peer runners: arguments, densifying, and atlasloader's measuring code.

The runners execute in the peers' virtual environment, which does not have atlasloader
installed. They load ``src/atlasloader/benchmarking/measure.py`` by path (it imports only numpy
and the standard library), so every loader is timed by exactly the same :func:`measure_loader`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

BENCH_PY = (
    Path(__file__).resolve().parents[2] / "src" / "atlasloader" / "benchmarking" / "measure.py"
)


def load_bench() -> ModuleType:
    """Import ``atlasloader/benchmarking/measure.py`` by path, without the atlasloader package."""
    name = "atlasloader_bench_standalone"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH_PY)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {BENCH_PY}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def parser(description: str | None) -> argparse.ArgumentParser:
    """A parser with the arguments common to every runner (each adds its loader's own)."""
    ap = argparse.ArgumentParser(description=description)
    add_common_args(ap)
    return ap


def add_common_args(ap: argparse.ArgumentParser) -> None:
    """Batch size, timing, seed, category column, densifying and label options."""
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--n-batches", type=int, default=300, help="batches timed after warm-up")
    ap.add_argument("--warmup-batches", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-key", default="batch", help="categorical obs column for entropy")
    ap.add_argument(
        "--densify",
        choices=("scipy", "numpy", "none"),
        default="scipy",
        help="how CSR batches become dense float32 tensors (scipy toarray: what users write)",
    )
    ap.add_argument("--name", default=None, help="label in the results table")


def quiet() -> None:
    """Silence the peers' deprecation/performance notices (they would bury the JSON line)."""
    warnings.simplefilter("ignore")


def to_dense_tensor(x: Any, how: str = "scipy") -> Any:
    """A CSR (or dense) batch as a float32 ``(n, n_vars)`` torch tensor.

    ``how="numpy"`` uses one flat fancy assignment (it releases the GIL, see PERF_NOTES),
    ``"none"`` keeps sparse input as a scipy matrix (loader-only measurements).
    """
    import scipy.sparse as sp
    import torch

    if sp.issparse(x):
        if how == "none":
            return x
        if how == "numpy":
            x = sp.csr_matrix(x)
            n_rows, n_cols = x.shape
            out = np.zeros((n_rows, n_cols), dtype=np.float32)
            rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(x.indptr))
            out.reshape(-1)[rows * n_cols + x.indices] = x.data
            return torch.from_numpy(out)
        return torch.from_numpy(x.toarray().astype(np.float32, copy=False))
    if isinstance(x, torch.Tensor):
        return x.to(torch.float32)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def category_codes(values: Any) -> np.ndarray:
    """Integer codes of a categorical (pandas) column or array."""
    import pandas as pd

    if isinstance(values, pd.Series):
        values = values.array
    if isinstance(values, pd.Categorical):
        return np.asarray(values.codes)
    return np.asarray(pd.Categorical(np.asarray(values)).codes)


def emit(result: Any, **extra: Any) -> None:
    """Print the result as one JSON line (the driver reads the last line of stdout)."""
    d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    d["settings"] = {**d.get("settings", {}), **extra}
    print(json.dumps(d, default=float), flush=True)


def measure_and_emit(
    bench: ModuleType,
    factory: Any,
    args: argparse.Namespace,
    codes: np.ndarray,
    name: str,
    *,
    reset_peak: bool = True,
    **settings: Any,
) -> None:
    """Measure a peer loader with atlasloader's own harness and print its JSON line.

    Every peer is timed by the same code (warm-up, batch count, entropy against ``codes``).
    """
    result = bench.measure_loader(
        factory,
        n_batches=args.n_batches,
        warmup_batches=args.warmup_batches,
        category_key="batch",
        categories=codes,
        name=name,
        reset_peak=reset_peak,
    )
    emit(result, **settings)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
