"""The ``setup_anndata`` pattern: a class-level store of managers keyed by the data's uuid."""

from __future__ import annotations

from typing import Any, ClassVar

from .. import constants as C
from ..errors import NotRegisteredError
from ..manager import AnnDataManager
from ..store import records
from ..store.lazy import LazyAnnData

_EXCLUDED = {"adata", "cls", "kwargs", "self"}


def data_uuid(adata: Any) -> str | None:
    """The ``_scvi_uuid`` of an AnnData or store, without creating one."""
    if isinstance(adata, LazyAnnData):
        found = records.read_meta(adata.group).get("uuid")
        return found or adata.__dict__.get("_scvi_uuid")
    return adata.uns.get(C.SCVI_UUID_KEY)


class SetupMixin:
    """Gives a model class ``register_manager``, manager retrieval and ``view_anndata_setup``.

    Each subclass gets its own manager store, so two model classes set up on the same data
    keep separate registries (as in scvi-tools).

    Examples
    --------
    >>> class MyModel(SetupMixin):
    ...     @classmethod
    ...     def setup_anndata(cls, adata, layer=None):
    ...         args = cls._get_setup_method_args(**locals())
    ...         manager = AnnDataManager([LayerField("X", layer)], setup_method_args=args)
    ...         manager.register_fields(adata)
    ...         cls.register_manager(manager)
    """

    _setup_adata_manager_store: ClassVar[dict[str, AnnDataManager]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._setup_adata_manager_store = {}

    def __init__(self, adata: Any) -> None:
        self.adata = adata
        manager = self._get_most_recent_anndata_manager(adata, required=True)
        assert manager is not None  # required=True raises instead of returning None
        self.adata_manager = manager
        self.summary_stats = self.adata_manager.summary_stats

    @classmethod
    def _get_setup_method_args(model_cls, **setup_locals: Any) -> dict:
        """``{"model_name": ..., "setup_args": {...}}`` from a setup method's ``locals()``.

        The first parameter is not called ``cls`` because ``locals()`` of a classmethod
        already holds a ``cls`` entry.
        """
        setup_args = {k: v for k, v in setup_locals.items() if k not in _EXCLUDED}
        return {C.MODEL_NAME_KEY: model_cls.__name__, C.SETUP_ARGS_KEY: setup_args}

    @classmethod
    def register_manager(cls, adata_manager: AnnDataManager) -> None:
        """Keep ``adata_manager`` until a model is built on the same data."""
        cls._setup_adata_manager_store[adata_manager.adata_uuid] = adata_manager

    @classmethod
    def _get_most_recent_anndata_manager(
        cls, adata: Any, required: bool = False
    ) -> AnnDataManager | None:
        key = data_uuid(adata)
        manager = cls._setup_adata_manager_store.get(key) if key is not None else None
        if manager is None:
            if required:
                msg = (
                    f"Please set up your AnnData with {cls.__name__}.setup_anndata first "
                    "(no registration of this data is known to this model class)"
                )
                raise NotRegisteredError(msg)
            return None
        if manager.adata is not adata:
            # Same data (uuid) reopened as a new object: register it again. On stores this
            # reuses the persisted encodings, so it costs milliseconds.
            fresh = AnnDataManager(
                fields=manager.fields, setup_method_args=manager._get_setup_method_args()
            )
            fresh.register_fields(adata)
            cls.register_manager(fresh)
            return fresh
        manager.validate()
        return manager

    @classmethod
    def view_setup_args(cls, adata: Any) -> None:
        manager = cls._get_most_recent_anndata_manager(adata, required=True)
        assert manager is not None
        manager.view_registry(hide_state_registries=True)

    def view_anndata_setup(self, adata: Any = None, hide_state_registries: bool = False) -> None:
        """Print the registry of the data this model was set up with (or of ``adata``)."""
        manager: AnnDataManager | None = self.adata_manager
        if adata is not None:
            manager = self._get_most_recent_anndata_manager(adata, required=True)
        assert manager is not None
        manager.view_registry(hide_state_registries=hide_state_registries)
