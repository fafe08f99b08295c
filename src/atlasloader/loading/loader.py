"""``AnnDataLoader``: shuffled dict minibatches from an in-memory AnnData or a Zarr store.

Each epoch the sampler deals *buffers*: a few hundred short runs of consecutive cells (aligned
to the store's chunks) plus a permutation of the buffer's rows. A :class:`~.pipeline.BatchPipeline`
reads buffers ahead of the consumer in background threads (Zarr decoding and the numpy densify
release the GIL), cuts the permuted rows into batches with the remainder carried into the next
buffer, and gathers each batch's rows straight into its output tensor, so every cell is yielded
exactly once per epoch and memory is bounded by ``prefetch`` buffers plus the batches in flight.
With ``num_workers`` the same pipeline runs in DataLoader worker processes (:mod:`.workers`);
a list of managers loads several stores as one dataset (:mod:`.multi`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, MissingKeyError, NotRegisteredError
from ..sampling import ChunkShuffleSampler
from .allocator import release_free_memory, tune_allocator
from .device import to_device_ahead
from .fetch import checked_codes, fetcher_for, subset_columns
from .multi import check_compatible, concat_fetcher
from .pipeline import BatchPipeline

DEFAULT_ROWS_PER_READ = 32
# 256 reads of 32 rows per buffer (8192 rows) reach ~0.98 of a true shuffle's per-batch
# entropy on atlases sorted by batch: a batch of 512 draws from ~220 distinct runs. Fewer reads
# trade randomness for locality; 32 rows (two of ``convert``'s 16-row chunks) decode fewer
# unused values than 16 at chunk boundaries (~170k vs ~135k sparse cells/s on 2 cores).
DEFAULT_READS_PER_BUFFER = 256


def _resolve_dtypes(manager: Any, data_and_attributes: Any) -> dict[str, np.dtype]:
    keys = list(manager.data_registry.keys())
    if data_and_attributes is None:
        return {k: np.dtype(np.float32) for k in keys}
    if isinstance(data_and_attributes, Mapping):
        chosen: dict[str, np.dtype] = {k: np.dtype(v) for k, v in data_and_attributes.items()}
    elif isinstance(data_and_attributes, Sequence) and not isinstance(data_and_attributes, str):
        chosen = {k: np.dtype(np.float32) for k in data_and_attributes}
    else:
        msg = (
            "data_and_attributes must be a dict of key->dtype or a list of keys, "
            f"got {data_and_attributes!r}"
        )
        raise InvalidArgumentError(msg)
    unknown = [k for k in chosen if k not in keys]
    if unknown:
        msg = (
            f"data_and_attributes key(s) {unknown} are not in the data registry; "
            f"registered keys: {keys}"
        )
        raise MissingKeyError(msg)
    if not chosen:
        msg = f"data_and_attributes selects no keys; registered keys: {keys}"
        raise InvalidArgumentError(msg)
    return chosen


def _column_indices(manager: Any, key: str) -> np.ndarray | None:
    """Columns a field registered a subset of (``LayerField(var_subset=...)``), else None."""
    if key not in manager.registry["field_registries"]:
        return None
    cols = manager.get_state_registry(key).get("column_indices")
    return None if cols is None else np.asarray(cols, dtype=np.int64)


def _resolve_indices(indices: Any, n_obs: int) -> np.ndarray:
    if indices is None:
        return np.arange(n_obs, dtype=np.int64)
    arr = np.asarray(indices)
    if arr.dtype == bool:
        if arr.shape != (n_obs,):
            msg = f"boolean indices must have length n_obs={n_obs}, got shape {arr.shape}"
            raise InvalidArgumentError(msg)
        return np.flatnonzero(arr).astype(np.int64)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        msg = (
            "indices must be a 1-D array of integers or a boolean mask, "
            f"got dtype {arr.dtype} shape {arr.shape}"
        )
        raise InvalidArgumentError(msg)
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_obs):
        bad = arr[(arr < 0) | (arr >= n_obs)][0]
        msg = (
            f"index {bad} in indices is out of range for {n_obs} cells (allowed "
            f"0..{n_obs - 1}); pass indices of cells of the registered data"
        )
        raise InvalidArgumentError(msg)
    return arr


def _stores(fetcher: Any) -> Iterator[Any]:
    """The Zarr stores a fetcher reads (through multi-store and column-subset wrappers)."""
    for inner in getattr(fetcher, "parts", ()):
        yield from _stores(inner)
    if getattr(fetcher, "fetcher", None) is not None:
        yield from _stores(fetcher.fetcher)
    lazy = getattr(fetcher, "lazy", None)
    if lazy is not None:
        yield lazy.node.store
    reader = getattr(fetcher, "reader", None)
    if reader is not None:
        yield reader.array.store


def _default_context(fetchers: dict[str, Any]) -> str | None:
    """``"forkserver"`` when a remote store is read, else torch's default (fork on Linux).

    A forked worker inherits the parent's HTTP sessions, which belong to the parent's event
    loop and fail in the child; workers started by a fork server unpickle the stores instead,
    which opens fresh connections.
    """
    from ..reading.remote import is_remote_store

    remote = any(is_remote_store(st) for f in fetchers.values() for st in _stores(f))
    return "forkserver" if remote and sys.platform != "win32" else None


class AnnDataLoader:
    """Iterate dict minibatches keyed by registry keys.

    Parameters
    ----------
    adata_manager
        A registered :class:`~atlasloader.AnnDataManager` (in-memory AnnData or store), or a
        list of them with compatible registries, loaded as one dataset: cells numbered store
        after store (``indices`` refer to that numbering). Register the later stores with
        ``transfer_fields`` from the first (``extend_categories=True`` for new categories);
        :attr:`adata_manager` is then the one holding every category.
    indices
        Cells to load (integer positions or boolean mask), e.g. a train split. Integer
        positions are sorted and de-duplicated (a set of cells, not a sequence): with
        ``shuffle=False`` they are yielded in ascending order, each once per epoch.
    batch_size
        Cells per minibatch.
    shuffle
        Shuffle cells (chunk-aware: short aligned runs, shuffled, mixed within a buffer).
    drop_last
        Drop the final incomplete batch of each epoch (of each rank's shard).
    data_and_attributes
        ``{key: dtype}`` (only these keys, with these dtypes) or a list of keys (float32).
    rows_per_read
        Consecutive rows per random read; rounded to divide the store's row chunk.
    reads_per_buffer
        Runs mixed together in one shuffle buffer (randomness grows with it).
    prefetch
        Buffers read ahead in background threads (memory bound: ``prefetch`` buffers).
    seed
        Shuffling seed; epoch ``n`` uses ``(seed, n)``.
    sparse
        Yield sparse CSR tensors for sparse ``X`` instead of densifying on the CPU.
    pin_memory
        Pin CPU tensors (when CUDA is available) for fast asynchronous copies.
    device
        Move tensors there; sparse tensors are densified on the device.
    rank, world_size
        Shard for distributed training; taken from ``torch.distributed`` when initialised.
    num_threads
        Reading and collating threads (per worker process when ``num_workers > 0``).
    num_workers
        Worker processes (as torch's ``DataLoader``): each reads and collates its own share
        of the buffers, batches reach this process through shared memory. ``0`` (default)
        reads in threads of this process, which is faster for most stores: decoding and
        densifying release the GIL.
    multiprocessing_context
        Start method of the worker processes (``"fork"``, ``"spawn"``, ``"forkserver"``); by
        default torch's (fork on Linux), or ``"forkserver"`` when a remote store is read
        (forked children cannot use the parent's HTTP connections).
    load_indices
        Add each cell's position (in the loader's numbering) as ``batch["ind_x"]``, int64
        ``(n, 1)``, scvi-tools' ``REGISTRY_KEYS.INDICES_KEY``.

    Examples
    --------
    >>> loader = AnnDataLoader(manager, batch_size=512, shuffle=True)  # doctest: +SKIP
    >>> batch = next(iter(loader))  # doctest: +SKIP
    >>> batch["X"].shape  # doctest: +SKIP
    torch.Size([512, 2000])
    """

    def __init__(
        self,
        adata_manager: Any,
        indices: Any = None,
        batch_size: int = 128,
        shuffle: bool = False,
        drop_last: bool = False,
        data_and_attributes: Any = None,
        *,
        rows_per_read: int | None = None,
        reads_per_buffer: int | None = None,
        prefetch: int = 1,
        num_threads: int | None = None,
        seed: int = 0,
        sparse: bool = False,
        pin_memory: bool = False,
        device: Any = None,
        rank: int | None = None,
        world_size: int | None = None,
        num_workers: int = 0,
        multiprocessing_context: Any = None,
        load_indices: bool = False,
        **kwargs: Any,
    ) -> None:
        managers = (
            list(adata_manager) if isinstance(adata_manager, list | tuple) else [adata_manager]
        )
        if len(managers) == 1 and getattr(managers[0], "adata", None) is None:
            msg = "the AnnDataManager is not registered: call register_fields(adata) before loading"
            raise NotRegisteredError(msg)
        # Several stores load as one dataset; the manager holding every category represents it.
        widest = check_compatible(managers) if len(managers) != 1 else 0
        if (
            not isinstance(batch_size, int | np.integer)
            or isinstance(batch_size, bool)
            or batch_size <= 0
        ):
            raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        if prefetch < 1:
            raise InvalidArgumentError(f"prefetch must be >= 1, got {prefetch!r}")
        if kwargs:
            msg = f"unknown AnnDataLoader argument(s) {sorted(kwargs)}"
            raise InvalidArgumentError(msg)
        self.adata_managers = managers
        self.adata_manager = managers[widest]
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.sparse = bool(sparse)
        self.pin_memory = bool(pin_memory)
        self.device = device
        self.prefetch = int(prefetch)
        if num_threads is not None and num_threads < 1:
            raise InvalidArgumentError(f"num_threads must be >= 1, got {num_threads!r}")
        if not isinstance(num_workers, int | np.integer) or num_workers < 0:
            raise InvalidArgumentError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        self._num_threads_arg = num_threads
        self.num_threads = num_threads or min(4, os.cpu_count() or 1)
        self.num_workers = int(num_workers)
        self.multiprocessing_context = multiprocessing_context
        self.dtypes = _resolve_dtypes(self.adata_manager, data_and_attributes)
        # A persisted encoding another registration replaced since (SCANVI re-encoding the
        # labels SCVI registered, maybe in another process) is re-registered for this manager
        # before its codes are read, and checked again after: codes never meet a mapping
        # they were not written with.
        for m in managers:
            m.validate()
        dr = self.adata_manager.data_registry
        self.fetchers: dict[str, Any] = {
            k: concat_fetcher(
                [
                    subset_columns(
                        fetcher_for(m.adata, dr[k]["attr_name"], dr[k]["attr_key"]),
                        _column_indices(m, k),
                    )
                    for m in managers
                ],
                f"registry key '{k}'",
            )
            for k in self.dtypes
        }
        for k in self.fetchers:  # stored codes: range-checked as they are read
            self.fetchers[k] = checked_codes(self.fetchers[k], self.adata_manager, k)
        for m in managers:
            m.check_encodings(f"while {type(self).__name__} read them")
        n_obs = sum(
            int(m.adata.n_obs if hasattr(m.adata, "n_obs") else m.adata.shape[0]) for m in managers
        )
        selection: np.ndarray | None = None  # None: every cell, kept as a range
        if indices is not None:
            selection = _resolve_indices(indices, n_obs)
            if selection.size and np.any(np.diff(selection) <= 0):
                selection = np.unique(selection)
        # Rank and world size given here are fixed; otherwise they are read from
        # ``torch.distributed`` each time iteration starts, so a loader built before
        # ``init_process_group`` (Lightning builds dataloaders first) still shards.
        self._rank_arg, self._world_size_arg = rank, world_size
        rank, world_size = _distributed(rank, world_size)
        self.load_indices = bool(load_indices)
        chunk = self._store_row_chunk()
        rows = DEFAULT_ROWS_PER_READ if rows_per_read is None else rows_per_read
        if rows <= 0:
            raise InvalidArgumentError(f"rows_per_read must be positive, got {rows!r}")
        if chunk and chunk % rows and rows < chunk:
            rows = max(d for d in range(1, rows + 1) if chunk % d == 0)  # never straddle a chunk
        self.sampler = ChunkShuffleSampler(
            selection,
            n_obs=n_obs,
            batch_size=self.batch_size,
            read_rows=rows,
            reads_per_buffer=(
                DEFAULT_READS_PER_BUFFER if reads_per_buffer is None else reads_per_buffer
            ),
            shuffle=self.shuffle,
            drop_last=self.drop_last,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
        )
        # The epoch whose last batch this loader handed out, until the next epoch is chosen:
        # then a plain re-iteration moves on, while an epoch set from outside (Lightning calls
        # ``loader.sampler.set_epoch(e)``) is kept.
        self._finished_epoch: int | None = None
        self._resume_pending = False

    # Lightning's ``_is_dataloader_shuffled`` and ``_set_sampler_epoch`` look at these two; the
    # sampler is the object whose ``set_epoch`` selects the order.
    batch_sampler = None

    @property
    def indices(self) -> np.ndarray:
        """The selected cell ids, sorted and unique (built on first use when all are selected:
        the loader itself keeps a selection of every cell as a range, not 8 bytes per cell)."""
        return self.sampler.indices

    @property
    def epoch(self) -> int:
        """The epoch the next (or current) iteration yields."""
        return self.sampler.epoch

    def _store_row_chunk(self) -> int | None:
        for f in self.fetchers.values():
            if f.lazy is not None and not f.lazy.is_sparse and f.n_cols > 1:
                return f.lazy.row_chunk
        return None

    # --- epochs and resumption ------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s deterministic order for the next iteration.

        Without calls to ``set_epoch`` every completed pass moves on to the next epoch, so
        a plain ``for epoch in range(n): for batch in loader`` reshuffles each time.
        """
        self.sampler.set_epoch(int(epoch))
        self._finished_epoch = None

    def __len__(self) -> int:
        self._sync_distributed()
        return self.sampler.num_batches(max(1, self.num_workers))

    def _sync_distributed(self) -> None:
        """Take rank and world size from ``torch.distributed`` if it was initialised since."""
        rank, world = _distributed(self._rank_arg, self._world_size_arg)
        if (rank, world) != (self.sampler.rank, self.sampler.world_size):
            self.sampler.rank, self.sampler.world_size = rank, world

    def state_dict(self) -> dict[str, Any]:
        """Picklable position: resuming yields exactly the batches not yet yielded."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration yields the rest of that epoch."""
        self.sampler.load_state_dict(state)
        self.seed = self.sampler.seed
        # A checkpoint taken after the last batch of an epoch resumes where an uninterrupted
        # loader would go on: with the next epoch, not by replaying the finished one.
        done = self.sampler.batches_yielded >= len(self)
        self._finished_epoch = self.sampler.epoch if done else None
        self._resume_pending = not done

    # --- iteration -----------------------------------------------------------------------------
    def _pipeline(self, *, in_worker: bool) -> BatchPipeline:
        threads = self.num_threads
        if in_worker and self._num_threads_arg is None:
            threads = max(1, threads // self.num_workers)
        return BatchPipeline(
            fetchers=self.fetchers,
            dtypes=self.dtypes,
            batch_size=self.batch_size,
            drop_last=self.drop_last,
            sparse=self.sparse,
            # Workers' tensors are pinned by the DataLoader, in the main process.
            pin_memory=self.pin_memory and not in_worker,
            num_threads=threads,
            prefetch=self.prefetch,
            load_indices=self.load_indices,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # Freed buffers would otherwise stay in glibc's heaps (see .allocator); once per process.
        tune_allocator(
            self.batch_size
            * max(f.n_cols * self.dtypes[k].itemsize for k, f in self.fetchers.items())
        )
        if self._finished_epoch is not None and self._finished_epoch == self.sampler.epoch:
            self.set_epoch(self.sampler.epoch + 1)
        self._finished_epoch = None
        n_batches = len(self)  # also takes rank and world size from torch.distributed
        resume, self._resume_pending = self._resume_pending, False
        if self.sampler.batches_yielded >= n_batches or not resume:
            # A new iterator starts the epoch from its first batch (as torch's DataLoader):
            # an earlier iterator left unfinished (``next(iter(loader))``) consumes nothing.
            # Only a state loaded with ``load_state_dict`` continues mid-epoch.
            self.sampler.load_state_dict(
                {"epoch": self.sampler.epoch, "seed": self.seed, "batches_yielded": 0}
            )

        if self.num_workers:
            from .workers import worker_loader

            batches: Iterable[dict[str, Any]] = worker_loader(
                self._pipeline(in_worker=True),
                self.sampler,
                self.num_workers,
                self.pin_memory,
                self.multiprocessing_context or _default_context(self.fetchers),
            )
        else:
            batches = self._pipeline(in_worker=False).run(self.sampler.sample())
        epoch = self.sampler.epoch
        for batch in to_device_ahead(batches, self.device):
            # Counted before handing over: a checkpoint taken while the batch is in use
            # must not replay it. The epoch counts as finished with its last batch, not when
            # the iterator is exhausted: Lightning and ``islice(loader, len(loader))`` never
            # ask for the batch after the last.
            self.sampler.advance(1)
            if self.sampler.batches_yielded >= n_batches:
                self._finished_epoch = epoch
                release_free_memory()  # pages of the buffers this epoch freed go back
            yield batch
        self._finished_epoch = epoch
        release_free_memory()  # and those of the pipeline, closed now


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None or world_size is not None:
        r, w = int(rank or 0), int(world_size or 1)
    else:
        r, w = 0, 1
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                r, w = dist.get_rank(), dist.get_world_size()
        except ImportError:  # pragma: no cover
            pass
    if not 0 <= r < w:
        raise InvalidArgumentError(f"rank must be in [0, world_size={w}), got {r}")
    return r, w
