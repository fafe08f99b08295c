"""Dask plumbing of the preprocessing passes: per-block tasks, tree reductions, computing.

Every pass is a list of ``dask.delayed`` tasks, one per row block, whose partial results are
combined in a tree (``split_every`` at a time, so no task ever holds more than a few partials)
and computed with :func:`dask.compute`: on the threaded scheduler by default, or on a
``dask.distributed`` cluster when a client is active.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import dask
from dask.callbacks import Callback

__all__ = ["compute", "shared", "tree_reduce"]

T = TypeVar("T")
SPLIT_EVERY = 8


def shared(value: Any, label: str) -> Any:
    """``value`` as one graph key that every task depending on it references.

    Large constants (a per-gene clip table) then travel to each worker once instead of once per
    task; the random key avoids hashing the value to name it.
    """
    return dask.delayed(value, name=f"{label}-{uuid.uuid4().hex}")


def _combine_all(combine: Callable[[T, T], T], parts: Sequence[T]) -> T:
    return functools.reduce(combine, parts)


def tree_reduce(parts: Sequence[Any], combine: Callable[[T, T], T], label: str) -> Any:
    """Combine delayed partial results pairwise-associatively, ``SPLIT_EVERY`` per task."""
    level = list(parts)
    if not level:
        msg = "tree_reduce needs at least one part"
        raise ValueError(msg)
    while len(level) > 1:
        level = [
            dask.delayed(_combine_all, pure=False)(
                combine, level[i : i + SPLIT_EVERY], dask_key_name=f"{label}-{uuid.uuid4().hex}"
            )
            for i in range(0, len(level), SPLIT_EVERY)
        ]
    return level[0]


def _active_client() -> Any:
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return default_client()
    except ValueError:
        return None


def compute(*objects: Any, progress: bool = False, label: str = "preprocess") -> tuple[Any, ...]:
    """``dask.compute(*objects)`` on the active scheduler, with an optional progress bar.

    The bar is drawn with rich on stderr: from task completions on the local schedulers, and
    from the futures' states on a ``dask.distributed`` client.
    """
    client = _active_client()
    if client is not None and dask.config.get("scheduler", None) in (None, "dask.distributed"):
        if not progress:
            return tuple(dask.compute(*objects))
        return _compute_distributed(client, objects, label)
    if not progress:
        return _compute_local(objects)
    with _RichTasks(label):
        return _compute_local(objects)


def _compute_local(objects: Sequence[Any]) -> tuple[Any, ...]:
    """``dask.compute`` on this process's threads, returning only once no task runs.

    dask's threaded scheduler raises a task's error while the other tasks in flight go on;
    those write staged arrays, so a cleanup run at once (dropping the staging area) would race
    them and leave their files behind. Here the pool is ours and is drained before returning
    or raising. Other local schedulers (``synchronous``, ``processes``) are used as configured.
    """
    if dask.config.get("scheduler", None) not in (None, "threads", "threading"):
        return tuple(dask.compute(*objects))
    workers = dask.config.get("num_workers", None) or os.cpu_count() or 1
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="atlasloader-preprocess")
    try:
        return tuple(dask.compute(*objects, scheduler="threads", pool=pool))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _compute_distributed(client: Any, objects: Sequence[Any], label: str) -> tuple[Any, ...]:
    from distributed import as_completed

    futures = client.compute(list(objects))
    with _Bar(label, total=len(futures)) as (progress, task):
        for _ in as_completed(futures):
            progress.advance(task)
    return tuple(client.gather(futures))


class _Bar:
    def __init__(self, label: str, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = self.progress.add_task(label, total=total)

    def __enter__(self) -> tuple[Any, Any]:
        self.progress.start()
        return self.progress, self.task

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


class _RichTasks(Callback):
    """A rich progress bar over the tasks of a graph run by a local dask scheduler."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self._label = label
        self._ctx: _Bar | None = None

    def __enter__(self) -> _RichTasks:
        self._ctx = _Bar(self._label, total=None)
        self._ctx.__enter__()
        return super().__enter__()  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if self._ctx is not None:
            self._ctx.__exit__(*exc)

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        if self._ctx is not None:
            total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
            self._ctx.progress.update(self._ctx.task, total=total)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if self._ctx is not None:
            self._ctx.progress.advance(self._ctx.task)
