"""The Python API calls and ``atlasloader`` arguments of the cases, each given the case's folder.

``_SETUP`` and ``_PRE`` are the calls as the table shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .case import STORE

_SETUP = "SCVI.setup_anndata(read_lazy(store), batch_key='batch')"
_PRE = "preprocess(store)"


def _store(base: Path) -> str:
    return str(base / STORE)


def _setup(path: str | Path, **kwargs: Any) -> None:
    from ...model import SCVI
    from ...store.lazy import read_lazy

    SCVI.setup_anndata(read_lazy(path), **kwargs)


def _api_setup(**kwargs: Any) -> Callable[[Path], Any]:
    return lambda base: _setup(_store(base), **kwargs)


def _cli_setup(*args: str) -> Callable[[Path], list[str]]:
    return lambda base: ["setup", _store(base), *args]


def _api_preprocess(base: Path) -> Any:
    from ...preprocess import preprocess

    return preprocess(_store(base))


def _cli_preprocess(base: Path) -> list[str]:
    return ["preprocess", _store(base)]


def _manager(base: Path) -> Any:
    from ...model import SCVI
    from ...store.lazy import read_lazy

    adata = read_lazy(_store(base))
    SCVI.setup_anndata(adata, batch_key="batch", labels_key="labels")  # reuses what is persisted
    return SCVI(adata).adata_manager


def _api_loader(**kwargs: Any) -> Callable[[Path], Any]:
    def action(base: Path) -> Any:
        from ...loading import AnnDataLoader

        loader = AnnDataLoader(_manager(base), **kwargs)
        return next(iter(loader))

    return action


def _api_field(field_factory: Callable[[], Any]) -> Callable[[Path], Any]:
    def action(base: Path) -> Any:
        from ...store.lazy import read_lazy

        field_factory().register_field(read_lazy(_store(base)))

    return action


def _api_manager(fields: Callable[[], list[Any]]) -> Callable[[Path], Any]:
    def action(base: Path) -> Any:
        from ...manager import AnnDataManager
        from ...store.lazy import read_lazy

        AnnDataManager(fields=fields()).register_fields(read_lazy(_store(base)))

    return action


def _cat(registry_key: str, obs_key: str) -> Callable[[], Any]:
    def make() -> Any:
        from ...fields import CategoricalObsField

        return CategoricalObsField(registry_key=registry_key, obs_key=obs_key)

    return make


def _api_view(base: Path) -> Any:
    from ...registry.model import Registry
    from ...store import records
    from ...store.open import open_root

    regs = records.load_registries(open_root(_store(base), mode="r"))
    return [Registry.from_json_dict(r) for r in regs.values()]


def _api_transfer(extend: bool) -> Callable[[Path], Any]:
    def action(base: Path) -> Any:
        from ...store.lazy import read_lazy

        query = read_lazy(str(base / "in/query.zarr"))
        return _manager(base).transfer_fields(query, extend_categories=extend)

    return action


def _api_convert(base: Path) -> Any:
    from ...conversion.convert import convert

    return convert([str(base / "in/a.h5ad"), str(base / "in/b.h5ad")], str(base / "out.zarr"))


def _api_obs_names(base: Path) -> Any:
    from ...store.lazy import read_lazy

    return read_lazy(_store(base)).obs_names


def _api_convert_store(base: Path) -> Any:
    from ...conversion.convert import convert

    return convert(_store(base), str(base / "out.zarr"))


def _cli_convert_store(base: Path) -> list[str]:
    return ["convert", _store(base), str(base / "out.zarr")]
