"""Where dask graphs run, and a progress bar that follows them.

Every heavy pass of atlasloader (conversion, registration, preprocessing, validation) is a dask
graph computed on dask's *active* scheduler. :func:`scheduler` chooses it for a block of code:

- nothing given: dask's default threaded scheduler on this machine, or the cluster named by the
  ``ATLASLOADER_SCHEDULER`` environment variable when it is set;
- ``address``: a ``dask.distributed.Client`` connected to a running cluster (``tcp://host:8786``
  or the path of a scheduler file, as written by ``dask scheduler --scheduler-file``);
- ``workers``: a ``LocalCluster`` of that many worker processes, started for the block and shut
  down after it.

:func:`dask_progress` shows one rich progress bar (on stderr) for the tasks computed inside it,
on the local schedulers (through a :class:`dask.callbacks.Callback`) and on a distributed
cluster (by polling the scheduler's task groups from a background thread).

Examples
--------
>>> from atlasloader.cluster import dask_progress, scheduler
>>> with scheduler(workers=2), dask_progress():  # doctest: +SKIP
...     SCVI.setup_anndata(atlasloader.read_lazy("atlas.zarr"), batch_key="batch")
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from .errors import ClusterError, InvalidArgumentError

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["ENV_VAR", "ClusterError", "active_client", "dask_progress", "describe", "scheduler"]

ENV_VAR = "ATLASLOADER_SCHEDULER"
_POLL_SECONDS = 0.25
_WAIT_SECONDS = 5.0  # longest wait for the scheduler's answers about progress


# --- choosing the scheduler ------------------------------------------------------------------
@contextmanager
def scheduler(
    address: str | None = None, workers: int | None = None, *, timeout: float = 10.0
) -> Iterator[Client | None]:
    """Run the dask graphs computed inside the block on the chosen scheduler.

    Parameters
    ----------
    address
        A running ``dask.distributed`` scheduler: ``tcp://host:port`` (any address a
        ``Client`` accepts) or the path of a scheduler file. Defaults to the
        ``ATLASLOADER_SCHEDULER`` environment variable when ``workers`` is not given either.
    workers
        Start a ``LocalCluster`` with this many worker processes for the block instead.
    timeout
        Seconds to wait for the scheduler to answer.

    Yields
    ------
    The ``Client`` (set as dask's default scheduler for the block), or None for dask's
    threaded scheduler.

    Raises
    ------
    InvalidArgumentError
        Both ``address`` and ``workers`` are given, or ``workers`` is below 1.
    ClusterError
        The scheduler cannot be reached, or the local cluster cannot start.

    Examples
    --------
    >>> with scheduler("tcp://10.0.0.5:8786") as client:  # doctest: +SKIP
    ...     atlasloader.convert(["a.h5ad", "b.h5ad"], "atlas.zarr")
    """
    if address is not None and workers is not None:
        msg = (
            f"give either a scheduler address ({address!r}) or a number of local workers "
            f"({workers}), not both"
        )
        raise InvalidArgumentError(msg)
    if workers is not None and (isinstance(workers, bool) or int(workers) < 1):
        msg = f"workers must be a positive number of worker processes, got {workers!r}"
        raise InvalidArgumentError(msg)
    if address is None and workers is None:
        address = os.environ.get(ENV_VAR) or None
    if address is None and workers is None:
        yield None
        return
    with ExitStack() as stack:
        if workers is not None:
            client = stack.enter_context(_local_client(int(workers)))
        else:
            assert address is not None
            client = stack.enter_context(_connect(address, timeout))
        yield client


@contextmanager
def _local_client(workers: int) -> Iterator[Client]:
    from distributed import LocalCluster

    try:
        cluster = LocalCluster(
            n_workers=workers,
            processes=True,
            dashboard_address=None,  # no port to collide with other jobs on the machine
            silence_logs=logging.ERROR,
        )
    except Exception as e:
        msg = f"cannot start a local dask cluster of {workers} workers: {type(e).__name__}: {e}"
        raise ClusterError(msg) from e
    with cluster, _as_default(cluster) as client:
        yield client


@contextmanager
def _connect(address: str, timeout: float) -> Iterator[Client]:
    try:
        with _as_default(address, timeout=timeout) as client:
            yield client
    except _ConnectError as e:
        cause = e.__cause__
        msg = (
            f"cannot connect to the dask scheduler at {address!r} ({type(cause).__name__}: "
            f"{cause}). Check the address (tcp://host:port or a scheduler file), that the "
            f"scheduler is running, or unset {ENV_VAR}"
        )
        raise ClusterError(msg) from cause


class _ConnectError(Exception):
    """Internal: the Client could not be created (``__cause__`` says why)."""


@contextmanager
def _as_default(target: Any, timeout: float = 10.0) -> Iterator[Client]:
    """A Client on ``target`` (a cluster, an address or a scheduler file), made dask's
    scheduler for the block only.

    ``Client(set_as_default=True)`` is avoided on purpose: it registers the client as
    distributed's global default *before* connecting, so a failed connection would leave a
    never-connected client that dask then picks for every later computation of the process
    (which never finish). Here the client becomes the default only once connected, and only
    through this block's context and configuration.
    """
    import dask
    from distributed import Client

    try:
        if isinstance(target, str) and os.path.isfile(target):
            client = Client(scheduler_file=target, timeout=timeout, set_as_default=False)
        else:
            client = Client(target, timeout=timeout, set_as_default=False)
    except Exception as e:  # OSError, TimeoutError, ValueError for a malformed address...
        raise _ConnectError from e
    with client, client.as_current(), dask.config.set(scheduler=client):
        yield client


def active_client() -> Any:
    """The ``dask.distributed`` Client dask would compute on now, or None."""
    from dask.base import get_scheduler

    client = getattr(get_scheduler(), "__self__", None)
    if client is not None and type(client).__module__.startswith("distributed"):
        return client
    return None


def describe(client: Any) -> str:
    """One line naming the scheduler: ``dask threads`` or the cluster's address and workers."""
    if client is None:
        return "dask threaded scheduler"
    try:
        n = str(len(client.scheduler_info().get("workers", {})))
    except Exception:  # informational only: never fail a command for it
        n = "?"
    return f"dask cluster at {client.scheduler.address} ({n} workers)"


# --- progress --------------------------------------------------------------------------------
@contextmanager
def dask_progress(enabled: bool = True, description: str = "dask tasks") -> Iterator[None]:
    """Show a rich progress bar on stderr for the dask tasks computed inside the block.

    One bar counts every task computed in the block (its total grows as new graphs start);
    it appears with the first computation, so a block that computes nothing shows nothing.

    Parameters
    ----------
    enabled
        False makes this a no-op (``--quiet``).
    description
        The bar's label.

    Examples
    --------
    >>> with dask_progress(description="registering"):  # doctest: +SKIP
    ...     SCVI.setup_anndata(adata, batch_key="batch")
    """
    if not enabled:
        yield
        return
    bar = _Bar(description)
    client = active_client()
    with bar, _LocalCallback(bar):
        poller = _SchedulerPoller(client, bar) if client is not None else None
        try:
            yield
        finally:
            if poller is not None:
                poller.stop()


class _Bar:
    """A rich progress display with one task, created on first use."""

    def __init__(self, description: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._description = description
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tasks"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._task: Any = None
        self._total = 0
        self._lock = threading.Lock()

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def _ensure(self) -> Any:
        with self._lock:
            if self._task is None:
                self._task = self._progress.add_task(self._description, total=0)
            return self._task

    def add_total(self, n: int) -> None:
        task = self._ensure()
        with self._lock:
            self._total += n
            self._progress.update(task, total=self._total)

    def advance(self) -> None:
        self._progress.advance(self._ensure(), 1)

    def set(self, completed: int, total: int) -> None:
        self._progress.update(self._ensure(), completed=completed, total=total)


class _LocalCallback:
    """Counts tasks of dask's local schedulers (threads, processes, synchronous)."""

    def __init__(self, bar: _Bar) -> None:
        from dask.callbacks import Callback

        def start_state(dsk: Any, state: Any) -> None:
            bar.add_total(sum(len(state[k]) for k in ("ready", "waiting", "running")))

        def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            bar.advance()

        self._callback = Callback(start_state=start_state, posttask=posttask)

    def __enter__(self) -> _LocalCallback:
        self._callback.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._callback.__exit__(*exc)


def _group_counts_on_scheduler() -> Any:
    """A function for ``Client.run_on_scheduler``: ``{task group: (tasks, done)}``.

    Built inside a function so that it is pickled by value: the scheduler need not be able to
    import atlasloader.
    """

    def counts(dask_scheduler: Any) -> dict[str, tuple[int, int]]:
        # A finished task is "memory" until its result is released ("released"), then
        # "forgotten"; new tasks leave "released" for "waiting" as soon as they arrive.
        done_states = ("memory", "erred", "released", "forgotten")
        return {
            name: (sum(tg.states.values()), sum(tg.states.get(s, 0) for s in done_states))
            for name, tg in dask_scheduler.task_groups.items()
        }

    return counts


class _SchedulerPoller:
    """Follows a distributed cluster's task groups that appear after it starts.

    Groups the scheduler forgets (their results released) count as done. Polling runs in a
    daemon thread and is never waited on for long: a scheduler that does not answer, or an
    error, ends the polling silently (progress is never worth failing or hanging for).
    """

    def __init__(self, client: Any, bar: _Bar) -> None:
        self._client = client
        self._bar = bar
        self._fn = _group_counts_on_scheduler()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._seen: dict[str, tuple[int, int]] = {}
        self._baseline: set[str] | None = None
        self._thread = threading.Thread(target=self._run, name="atlasloader-progress", daemon=True)
        self._thread.start()
        # Groups present before the block are not counted: wait (briefly) for that baseline.
        self._ready.wait(_WAIT_SECONDS)

    def _poll(self) -> dict[str, tuple[int, int]] | None:
        try:
            return self._client.run_on_scheduler(self._fn)
        except Exception:
            return None

    def _update(self) -> bool:
        counts = self._poll()
        if counts is None or self._baseline is None:
            return False
        for name, (total, done) in counts.items():
            if name not in self._baseline:
                self._seen[name] = (total, done)
        for name, (total, _) in list(self._seen.items()):
            if name not in counts:
                self._seen[name] = (total, total)
        total = sum(t for t, _ in self._seen.values())
        if total:
            self._bar.set(sum(d for _, d in self._seen.values()), total)
        return True

    def _run(self) -> None:
        counts = self._poll()
        if counts is not None:
            self._baseline = set(counts)
        self._ready.set()
        if counts is None:
            return
        while not self._stop.wait(_POLL_SECONDS):
            if not self._update():
                return
        self._update()  # the final state, once the block's work is done

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(_WAIT_SECONDS)
