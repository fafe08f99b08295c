"""scvi-tools 1.4.2 ``AnnDataLoader`` on an ``.h5ad`` (run with the peers' python).

    run_scvi.py DATA.h5ad              # backed (on disk), the out-of-core way to use it
    run_scvi.py DATA.h5ad --in-memory  # whole CSR in memory, index dtypes made equal

The data are registered as a model's ``setup_anndata`` would (``X`` plus the categorical
``obs['batch']``); scvi-tools densifies each batch itself and yields the encoded batch column
with it. In memory, ``indptr`` and ``indices`` are cast to one integer dtype first: with
anndata's int64 ``indptr`` and int32 ``indices`` scipy copies the whole index array on every
row selection (an ~80x slowdown, see ``shared/PERF_NOTES.md``). Prints one JSON line.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from _common import Timer, category_codes, load_bench, measure_and_emit, parser, quiet


def open_adata(path: str, in_memory: bool) -> Any:
    """The AnnData, backed or loaded, with CSR index dtypes unified when in memory."""
    import anndata as ad
    import scipy.sparse as sp

    if not in_memory:
        return ad.read_h5ad(path, backed="r")
    adata = ad.read_h5ad(path)
    x = adata.X
    if sp.issparse(x) and x.indptr.dtype != x.indices.dtype:
        if x.nnz < np.iinfo(np.int32).max:
            x.indptr = x.indptr.astype(np.int32)
            x.indices = x.indices.astype(np.int32, copy=False)
        else:
            x.indices = x.indices.astype(np.int64)
    return adata


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its JSON line."""
    quiet()
    ap = parser(__doc__)
    ap.add_argument("h5ad")
    ap.add_argument("--in-memory", action="store_true", help="load X into memory first")
    ap.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    args = ap.parse_args(argv)

    import anndata  # noqa: F401  (imported before any timing)
    import torch  # noqa: F401
    from scvi.data import AnnDataManager
    from scvi.data.fields import CategoricalObsField, LayerField
    from scvi.dataloaders import AnnDataLoader

    bench = load_bench()
    bench.reset_peak_rss()  # loading into memory counts towards peak RSS
    with Timer() as setup:
        adata = open_adata(args.h5ad, args.in_memory)
        manager = AnnDataManager(
            fields=[
                LayerField("X", None, is_count_data=True),
                CategoricalObsField("batch", args.batch_key),
            ]
        )
        manager.register_fields(adata)
        codes = category_codes(adata.obs[args.batch_key])

    def factory() -> AnnDataLoader:
        return AnnDataLoader(
            manager, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers
        )

    where = "in memory, one index dtype" if args.in_memory else "backed h5ad"
    name = args.name or f"scvi-tools AnnDataLoader ({where})"
    measure_and_emit(
        bench,
        factory,
        args,
        codes,
        name,
        reset_peak=False,
        peer="scvi",
        path=args.h5ad,
        in_memory=args.in_memory,
        num_workers=args.num_workers,
        densify="scvi-tools (scipy toarray)",
        setup_s=setup.seconds,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
