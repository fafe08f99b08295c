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

import errno
from collections.abc import Iterator
from contextlib import contextmanager


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


class DiskFullError(StoreError):
    """The filesystem (or quota) ran out of space while writing; nothing was published."""


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


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextmanager
def os_errors(path: object, what: str) -> Iterator[None]:
    """Name the filesystem errors of writing ``what`` into ``path``.

    A full disk (or quota, or file size limit) becomes :class:`DiskFullError` and a read-only
    filesystem :class:`ReadOnlyStoreError`, both saying that nothing was published; the
    writers below have already removed their unpublished parts when the error gets here.
    Other errors pass unchanged.
    """
    try:
        yield
    except AtlasLoaderError:
        raise
    except OSError as e:
        if e.errno in _NO_SPACE:
            msg = (
                f"no space left on the filesystem of {str(path)!r} while writing {what} "
                f"({e.strerror}{f': {e.filename}' if e.filename else ''}); nothing was published "
                "and the partial writes were removed: free some space, or write to another disk"
            )
            raise DiskFullError(msg) from e
        if e.errno == errno.EROFS:
            msg = (
                f"cannot write {what}: {str(path)!r} is on a read-only filesystem; nothing "
                "was written: write to a writable location, or register a writable copy"
            )
            raise ReadOnlyStoreError(msg) from e
        raise
