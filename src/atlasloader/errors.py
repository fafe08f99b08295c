"""One exception hierarchy for atlasloader.

Every error subclasses both :class:`AtlasLoaderError` and the built-in exception a user of
scvi-tools would already catch (``KeyError``, ``ValueError``, ``TypeError``, ``OSError``), so
``except ValueError`` keeps working after switching the import.

State errors, raised when an object is used in the wrong order rather than given bad data,
keep the built-in class scvi-tools raises in the same situation: :class:`NotRegisteredError`
is an ``AssertionError`` (scvi-tools asserts the manager is registered), and
:class:`StaleRegistryError` a ``ValueError``. Catch :class:`AtlasLoaderError` for all of
atlasloader's errors, or the specific class.
"""

from __future__ import annotations


class AtlasLoaderError(Exception):
    """Base class of every error raised by atlasloader."""

    def __str__(self) -> str:
        # KeyError quotes its message; keep messages readable.
        return str(self.args[0]) if self.args else ""


class MissingKeyError(AtlasLoaderError, KeyError):
    """A key (obs column, layer, obsm/uns entry, registry key) is absent."""


class InvalidDataError(AtlasLoaderError, ValueError):
    """Data has a value that cannot be used (NaN category, wrong shape, bad counts...)."""


class CategoryTransferError(InvalidDataError):
    """A query column holds a category absent from the reference registry."""


class ShapeMismatchError(InvalidDataError):
    """Two things that must have the same shape (n_vars, columns) do not."""


class ViewError(InvalidDataError):
    """An AnnData view was given where an actual AnnData is required."""


class InvalidArgumentError(AtlasLoaderError, ValueError):
    """A function argument has a value outside its allowed range."""


class ColumnExistsError(InvalidDataError, InvalidArgumentError):
    """A column atlasloader would write exists and is the user's (never replaced silently)."""


class InvalidTypeError(AtlasLoaderError, TypeError):
    """An argument has the wrong type."""


class StoreError(AtlasLoaderError, OSError):
    """A store cannot be opened, read or written."""


class NotAnnDataStoreError(StoreError, ValueError):
    """A path or URL exists but is not an AnnData Zarr store."""


class ReadOnlyStoreError(StoreError, PermissionError):
    """Writing was needed but the store is read-only."""


class CorruptChunkError(StoreError, ValueError):
    """A chunk of a stored array cannot be read or decoded."""


class StoreLockedError(StoreError):
    """Another process held the store's write lock for longer than the lock timeout."""


class ClusterError(AtlasLoaderError, OSError):
    """A dask cluster cannot be reached or started (an ``OSError``, as connection errors are)."""


class RemoteStoreError(StoreError):
    """An object of a remote store cannot be fetched: access denied, bucket or endpoint missing,
    or a transient failure (5xx, timeout, dropped connection) that outlasted every retry."""


class WorkerDiedError(AtlasLoaderError, RuntimeError):
    """A DataLoader worker process ended (killed, out of memory) in the middle of an epoch.

    A ``RuntimeError``, as torch's own report of a dead worker."""


class StaleRegistryError(InvalidDataError):
    """A persisted registration no longer matches the data in the store."""


class NotRegisteredError(AtlasLoaderError, AssertionError):
    """An AnnDataManager was used before ``register_fields``."""


class MissingDependencyError(AtlasLoaderError, ImportError):
    """An optional dependency (scvi-tools, lightning, ...) is needed but not installed."""
