"""The preprocessing passes' compute: an error is raised only once no task still runs."""

from __future__ import annotations

import threading
from pathlib import Path

import dask
import pytest

from atlasloader.preprocess import graph


def test_a_failing_task_is_raised_after_the_tasks_in_flight_end(tmp_path: Path) -> None:
    # A task still writing when the error reached the caller would race the cleanup that
    # drops the staging area, leaving its files behind (seen with a full disk).
    started = threading.Event()
    late = tmp_path / "written-late"

    def slow() -> int:
        started.set()
        threading.Event().wait(0.5)
        late.write_text("done")
        return 1

    def failing() -> int:
        started.wait(5)  # fail while the other task is running
        msg = "no space left"
        raise OSError(msg)

    with dask.config.set(num_workers=2), pytest.raises(OSError, match="no space left"):
        graph.compute(dask.delayed(slow)(), dask.delayed(failing)())
    assert late.read_text() == "done"


@pytest.mark.parametrize("progress", [False, True])
def test_results_come_back_in_order(progress: bool) -> None:
    parts = [dask.delayed(lambda i: i * i)(i) for i in range(6)]
    total = graph.tree_reduce(parts, lambda a, b: a + b, "sum")
    assert graph.compute(total, parts, progress=progress) == (55, [i * i for i in range(6)])
