"""Run the conversion's task graphs on the active dask scheduler, with an optional progress bar.

- threaded scheduler (dask's default): run on a pool owned here, so that after an error or an
  interrupt no task is still writing when the partial store is removed;
- a ``dask.distributed`` Client set as default: futures, cancelled on error, progress as they
  complete;
- anything else (synchronous, processes): ``dask.compute`` with that scheduler.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tasks import Graph


class Progress:
    """A rich progress display on stderr with one bar per label, or nothing when disabled."""

    def __init__(self, enabled: bool) -> None:
        self._progress: Any = None
        self._bars: dict[str, Any] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("tasks"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=Console(stderr=True),
            )  # fmt: skip

    def __enter__(self) -> Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add(self, labels: dict[Any, str]) -> dict[Any, Any]:
        """Bars for the labels of a graph; returns ``key -> bar id`` (empty when disabled)."""
        if self._progress is None:
            return {}
        totals: dict[str, int] = {}
        for label in labels.values():
            totals[label] = totals.get(label, 0) + 1
        for label, total in totals.items():
            self._bars[label] = self._progress.add_task(label, total=total)
        return {key: self._bars[label] for key, label in labels.items()}

    def advance(self, bar: Any) -> None:
        if self._progress is not None and bar is not None:
            self._progress.advance(bar, 1)


def run(graph: Graph, progress: Progress) -> list[Any]:
    """Compute every task of ``graph`` on the active scheduler; return their results."""
    if not graph.tasks:
        return []
    import dask
    import dask.threaded
    from dask.base import get_scheduler

    bars = progress.add(graph.labels)
    scheduler = get_scheduler(collections=graph.tasks)
    client = getattr(scheduler, "__self__", None)
    if client is not None and type(client).__module__.startswith("distributed"):
        return _run_distributed(client, graph, bars, progress)
    with _Callback(bars, progress):
        if scheduler is dask.threaded.get:
            n = dask.config.get("num_workers", None) or os.cpu_count() or 1
            pool = ThreadPoolExecutor(n, thread_name_prefix="atlasloader-convert")
            try:
                return list(dask.compute(*graph.tasks, scheduler=scheduler, pool=pool))
            finally:
                # After an error, tasks already running finish before the caller cleans up.
                pool.shutdown(wait=True, cancel_futures=True)
        return list(dask.compute(*graph.tasks, scheduler=scheduler))


def _run_distributed(
    client: Any, graph: Graph, bars: dict[Any, Any], progress: Progress
) -> list[Any]:
    from distributed import as_completed

    futures = client.compute(graph.tasks)
    bar_of = {f.key: bars.get(t.key) for f, t in zip(futures, graph.tasks)}
    try:
        for future in as_completed(futures):
            future.result()  # raises the task's own error
            progress.advance(bar_of.get(future.key))
        return list(client.gather(futures))
    except BaseException:
        client.cancel(futures)
        raise


class _Callback:
    """Advance the progress bars as a local dask scheduler finishes tasks."""

    def __init__(self, bars: dict[Any, Any], progress: Progress) -> None:
        self._cb: Any = None
        if bars:
            from dask.callbacks import Callback

            def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                progress.advance(bars.get(key))

            self._cb = Callback(posttask=posttask)

    def __enter__(self) -> _Callback:
        if self._cb is not None:
            self._cb.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cb is not None:
            self._cb.__exit__(*exc)
