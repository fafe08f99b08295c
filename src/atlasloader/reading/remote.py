"""Many ranged reads of a remote Zarr store in flight at once, retried, handed back as they land.

A :class:`~atlasloader.reading.chunks.ChunkReader` plans which bytes of which objects a read
needs (:mod:`.remote_reads`: inner chunks of shards coalesced into spans, shard indices cached); on
a remote store this module fetches them. It goes through the store's own asynchronous API (zarr's
``FsspecStore`` over s3fs, gcsfs, HTTP..., or ``ObjectStore`` over obstore), so every backend zarr
can open is read the same way and credentials, endpoints and connection pools stay the store's.
Why not a client of our own: s3fs/aiobotocore (already what zarr and anndata use for ``s3://``)
keeps one connection pool per filesystem and signs requests; what zarr-python lacks on this path
is concurrency and planning (it awaits chunks shard by shard), not a faster HTTP client.

What this module adds:

- **concurrency**: all the requests of one read are scheduled together on zarr's event loop, at
  most ``concurrency`` in flight (``ATLASLOADER_REMOTE_CONCURRENCY``, default 64);
- **streaming**: results come back to the calling thread as each request completes, so the caller
  decodes (numcodecs releases the GIL) while the rest are still downloading;
- **time limits and retries**: every request has a timeout (``ATLASLOADER_REMOTE_TIMEOUT`` seconds,
  default 30) and transient failures (5xx, throttling, timeouts, dropped connections) are retried
  with exponential backoff and jitter (``ATLASLOADER_REMOTE_RETRIES``, default 5); permanent ones
  (access denied, missing credentials) raise :class:`~atlasloader.errors.RemoteStoreError` naming
  the object at once. Nothing waits forever: the caller's wait is bounded by the retries' total.

A missing object reads as ``None`` (for chunks: the fill value, as the Zarr specification says).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import queue
import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RemoteStoreError

__all__ = ["RangeRequest", "RemoteFetcher", "RemoteOptions", "is_remote_store", "object_url"]

# Errors that retrying cannot fix: the request itself or the credentials are wrong.
_PERMANENT = (PermissionError, ValueError, TypeError, NotImplementedError, KeyError)
_PERMANENT_NAMES = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "NoRegionError", "InvalidAccessKeyId"}
)


def _env_number(name: str, default: float, kind: type = float) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if value <= 0 and not (name.endswith("RETRIES") and value == 0):
        msg = f"environment variable {name}={raw!r} must be a positive number; unset it or fix it"
        raise RemoteStoreError(msg)
    return value


@dataclass(frozen=True)
class RemoteOptions:
    """Limits of remote reads; :meth:`from_env` reads the ``ATLASLOADER_REMOTE_*`` variables."""

    concurrency: int = 64
    timeout: float = 30.0
    retries: int = 5
    backoff: float = 0.1  # first wait; doubled per attempt, capped at max_backoff, with jitter
    max_backoff: float = 5.0

    @classmethod
    def from_env(cls) -> RemoteOptions:
        return cls(
            concurrency=_env_number("ATLASLOADER_REMOTE_CONCURRENCY", 64, int),
            timeout=_env_number("ATLASLOADER_REMOTE_TIMEOUT", 30.0),
            retries=_env_number("ATLASLOADER_REMOTE_RETRIES", 5, int),
        )

    def deadline(self) -> float:
        """Longest a single request can take, all its attempts and waits included."""
        return (self.retries + 1) * (self.timeout + self.max_backoff) + 1.0


@dataclass(frozen=True)
class RangeRequest:
    """Bytes ``[start, end)`` of the object ``key``; ``start < 0`` with ``end`` None: the last
    ``-start`` bytes; both None: the whole object."""

    key: str
    start: int | None = None
    end: int | None = None

    def describe(self) -> str:
        if self.start is None:
            return repr(self.key)
        if self.start < 0:
            return f"the last {-self.start} bytes of {self.key!r}"
        return f"bytes {self.start}-{self.end} of {self.key!r}"


def _remote_store_types() -> tuple[type, ...]:
    import zarr.storage

    names = ("FsspecStore", "ObjectStore")
    return tuple(getattr(zarr.storage, n) for n in names if hasattr(zarr.storage, n))


def is_remote_store(store: Any) -> bool:
    """Whether ``store`` is one of zarr's network stores itself (not a wrapper around one).

    Wrappers (logging, caching, latency...) may change the bytes or count the calls, so they are
    left to zarr-python. An ``FsspecStore`` over the local filesystem counts as remote here: it is
    still read through fsspec.
    """
    return type(store) in _remote_store_types()


def object_url(store: Any, key: str) -> str:
    """A readable full name of object ``key`` of ``store``: ``s3://bucket/atlas.zarr/X/c/0``."""
    fs = getattr(store, "fs", None)
    base = getattr(store, "path", None)
    if fs is not None and base is not None:
        protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
        return f"{protocol}://{str(base).rstrip('/')}/{key}"
    return f"{store}/{key}"


def _is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, FileNotFoundError):
        return True
    if isinstance(exc, _PERMANENT) or type(exc).__name__ in _PERMANENT_NAMES:
        return True
    text = str(exc)
    return "AccessDenied" in text or "Forbidden" in text or "InvalidAccessKeyId" in text


class RemoteFetcher:
    """Fetches byte ranges of the objects of one remote store, many at a time.

    Thread safe: each call schedules its own requests on zarr's event loop and waits on its own
    queue. Pickles without its event-loop state (a DataLoader worker builds its own).
    """

    def __init__(self, store: Any, where: str, options: RemoteOptions | None = None) -> None:
        self._store = store
        self._pid = os.getpid()
        self.where = where
        self.options = options or RemoteOptions.from_env()
        self._lock = threading.Lock()

    @property
    def store(self) -> Any:
        """The store, rebuilt once in a forked child (a DataLoader worker): its HTTP sessions
        belong to the parent's event loop, so the child builds its own from the store's pickle
        (fsspec and obstore stores pickle as their options, not their connections)."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._store = pickle.loads(pickle.dumps(self._store))
                    self._pid = os.getpid()
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # --- one request ----------------------------------------------------------------------------
    async def _get_once(self, req: RangeRequest) -> bytes | None:
        from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
        from zarr.core.buffer import default_buffer_prototype

        # A whole object is asked for as "bytes=0-": without a range, s3fs first asks for the
        # size (one more round trip) to decide whether to split the download.
        byte_range: Any = OffsetByteRequest(0)
        if req.start is not None:
            if req.start < 0:
                byte_range = SuffixByteRequest(-req.start)
            else:
                byte_range = (
                    OffsetByteRequest(req.start)
                    if req.end is None
                    else RangeByteRequest(req.start, req.end)
                )
        buf = await self.store.get(req.key, default_buffer_prototype(), byte_range)
        return None if buf is None else buf.to_bytes()

    async def _get(self, req: RangeRequest) -> bytes | None:
        opts = self.options
        last: BaseException | None = None
        for attempt in range(opts.retries + 1):
            try:
                return await asyncio.wait_for(self._get_once(req), opts.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # classified below; the store's backends raise many types
                if _is_permanent(exc):
                    raise self._error(req, exc, attempt + 1, permanent=True) from exc
                last = exc
            if attempt < opts.retries:
                wait = min(opts.max_backoff, opts.backoff * 2**attempt)
                await asyncio.sleep(wait * (0.5 + random.random()))
        assert last is not None
        raise self._error(req, last, opts.retries + 1, permanent=False) from last

    def _error(
        self, req: RangeRequest, exc: BaseException, attempts: int, *, permanent: bool
    ) -> RemoteStoreError:
        what = "TimeoutError: no answer" if isinstance(exc, TimeoutError) else f"{exc!r}"
        if permanent:
            hint = (
                "check the credentials and permissions for this bucket (AWS_ACCESS_KEY_ID, "
                "AWS_PROFILE, storage_options) and that the object exists"
            )
            tried = ""
        else:
            hint = (
                "the server kept failing or did not answer; check the endpoint and network, or "
                "raise ATLASLOADER_REMOTE_RETRIES / ATLASLOADER_REMOTE_TIMEOUT"
            )
            tried = f" after {attempts} attempts"
        where = RangeRequest(object_url(self.store, req.key), req.start, req.end).describe()
        msg = f"cannot fetch {where}{tried}: {what}; {hint}"
        return RemoteStoreError(msg)

    # --- many requests --------------------------------------------------------------------------
    async def _run(self, requests: Sequence[RangeRequest], out: queue.SimpleQueue[Any]) -> None:
        sem = asyncio.Semaphore(self.options.concurrency)

        async def one(i: int, req: RangeRequest) -> None:
            async with sem:
                try:
                    out.put((i, await self._get(req), None))
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:
                    out.put((i, None, exc))

        await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))

    def iter_fetch(self, requests: Sequence[RangeRequest]) -> Iterator[tuple[int, bytes | None]]:
        """``(position in requests, bytes or None if the object is missing)`` as each lands.

        Raises :class:`~atlasloader.errors.RemoteStoreError` for the first request that fails
        permanently or exhausts its retries; the others still in flight are cancelled.
        """
        if not requests:
            return
        from zarr.core.sync import _get_loop

        results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        future = asyncio.run_coroutine_threadsafe(self._run(requests, results), _get_loop())
        # Generous bound: every request waits at most its own deadline, and at most
        # `concurrency` run at once.
        waves = -(-len(requests) // self.options.concurrency)
        limit = self.options.deadline() * waves
        try:
            for _ in range(len(requests)):
                try:
                    i, data, exc = results.get(timeout=limit)
                except queue.Empty:
                    msg = (
                        f"remote reads from {self.where} made no progress for {limit:.0f} s; "
                        "check the endpoint and network"
                    )
                    raise RemoteStoreError(msg) from None
                if exc is not None:
                    raise exc
                yield i, data
        finally:
            future.cancel()

    def fetch(self, requests: Sequence[RangeRequest]) -> list[bytes | None]:
        """Every request's bytes, in the order given."""
        out: list[bytes | None] = [None] * len(requests)
        for i, data in self.iter_fetch(requests):
            out[i] = data
        return out
