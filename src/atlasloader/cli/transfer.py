"""``atlasloader transfer``: register a query store following a reference store's registry."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ._common import Ui, add_cluster_options, add_command, add_quiet, check_store_path

EXAMPLES = """\
  atlasloader transfer query.zarr --reference atlas.zarr
  atlasloader transfer query.zarr --reference atlas.zarr --extend-categories
  atlasloader transfer query.zarr --reference atlas.zarr --model SCVI --quiet"""


def add_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "transfer",
        summary="register a query store with a reference store's registry (query mapping)",
        description=(
            "Register QUERY following the registry persisted in REF (by setup): the reference\n"
            "registration is rebuilt from REF's persisted state (nothing is recomputed) and\n"
            "transferred onto QUERY, whose columns are encoded with the reference's category\n"
            "mappings and persisted in QUERY. Categories the reference lacks are an error\n"
            "(exit 3) unless --extend-categories appends them. Prints QUERY's registry."
        ),
        examples=EXAMPLES,
        cluster=True,
    )
    p.add_argument("query", metavar="QUERY", help="AnnData Zarr store to register, writable")
    p.add_argument(
        "--reference",
        metavar="REF",
        required=True,
        help="store registered by `atlasloader setup` (or a model's setup_anndata)",
    )
    p.add_argument(
        "--extend-categories",
        action="store_true",
        help="append categories the reference lacks instead of failing",
    )
    p.add_argument(
        "--model",
        metavar="NAME",
        help="which of REF's registries to follow when it has several (default: its only one)",
    )
    add_cluster_options(p)
    add_quiet(p)
    p.set_defaults(func=run)


def _registry(path: str, model: str | None) -> Any:
    from ..errors import MissingKeyError, NotRegisteredError
    from ..registry.model import Registry
    from ..store import records
    from ..store.open import open_root

    regs = records.load_registries(open_root(check_store_path(path), mode="r"))
    if not regs:
        msg = (
            f"the reference {path!r} has no persisted registration; register it first, e.g. "
            f"`atlasloader setup {path} --batch-key batch`"
        )
        raise NotRegisteredError(msg)
    if model is None and len(regs) > 1:
        msg = f"the reference {path!r} has several registries {sorted(regs)}; choose with --model"
        raise MissingKeyError(msg)
    name = model if model is not None else next(iter(regs))
    if name not in regs:
        msg = f"the reference {path!r} has no registry {name!r}; it has {sorted(regs)}"
        raise MissingKeyError(msg)
    return Registry.from_json_dict(regs[name])


def run(args: argparse.Namespace, ui: Ui) -> int:
    """Rebuild the reference manager, transfer it onto the query, print the tables."""
    from ..cluster import dask_progress
    from ..errors import InvalidDataError, ReadOnlyStoreError, StaleRegistryError
    from ..store.lazy import read_lazy
    from ._models import model_class

    registry = _registry(args.reference, args.model)
    model = model_class(registry.model_name)
    t0 = time.perf_counter()
    with dask_progress(ui.progress, "registering"):
        # Read-only: replaying the reference's setup reuses its persisted state and must not
        # change it (a stale reference fails with a message saying what to do).
        reference = read_lazy(args.reference, mode="r")
        try:
            model.setup_anndata(reference, **dict(registry.setup_args or {}))
        except ReadOnlyStoreError as e:
            msg = (
                f"the registration persisted in the reference {args.reference!r} no longer "
                f"matches its data (changed since setup?): run `atlasloader setup "
                f"{args.reference} ...` again, or `atlasloader validate {args.reference}` to "
                f"see what changed ({e})"
            )
            raise StaleRegistryError(msg) from e
        query = read_lazy(check_store_path(args.query))
        try:
            manager = model(reference).adata_manager.transfer_fields(
                query, extend_categories=args.extend_categories
            )
        except InvalidDataError as e:
            if args.extend_categories:
                raise
            hint = "if QUERY has categories the reference lacks, pass --extend-categories"
            raise type(e)(f"{e} ({hint})") from e
    dt = time.perf_counter() - t0
    if not ui.quiet:
        manager.view_registry()
        ui.print(
            f"registered {args.query} following the {registry.model_name} registry of "
            f"{args.reference} in {dt:.2f} s; persisted in the query store"
        )
    return 0
