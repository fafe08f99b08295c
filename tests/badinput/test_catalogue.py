"""Every bad input of the catalogue, through the Python API and the CLI, on real damaged stores.

Each case builds its input from real Zarr stores (damaged by editing their files), runs the
API call and the equivalent ``atlasloader`` command in-process, and checks the named error,
its message, exit code 3 with one ``atlasloader: error:`` line, and that nothing was written
(or, for inputs that must work, that they do).
"""

from __future__ import annotations

import pytest

from atlasloader.testing.badinputs import CASES, OPEN_DEFECTS, run_case


def test_catalogue_is_large_and_named() -> None:
    assert len(CASES) >= 40
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names)
    assert set(OPEN_DEFECTS) <= set(names)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, tmp_path) -> None:
    outcome = run_case(case, tmp_path)
    if case.name in OPEN_DEFECTS:
        assert outcome.problems, f"{case.name} now passes: remove it from OPEN_DEFECTS"
        pytest.xfail(OPEN_DEFECTS[case.name])
    assert outcome.problems == []
