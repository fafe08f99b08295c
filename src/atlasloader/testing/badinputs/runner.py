"""Running a :class:`~.case.Case`: the API call, the command, and the checks of both.

:func:`run_case` builds the input twice (one copy for the API call, one for the command),
checks the error's class and message (naming what is wrong, saying what to do), that nothing
was written (:func:`snapshot` before and after), and the command's exit code and its one
``atlasloader: error: ...`` line.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

from .case import Case, Outcome

__all__ = ["run_case", "run_cli", "snapshot"]

_ADVICE = re.compile(
    r"\b(re-?create|restore|convert|register|pass|use|run|choose|rename|remove|check|upgrade|"
    r"write|fix|give|call|drop|make|delete|add|expected|must|should|need|set|reduce|encode)",
    re.IGNORECASE,
)
_IGNORED = frozenset({".atlasloader-lock"})  # the advisory write lock (store/lock.py), no data


def snapshot(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Every file under ``folder`` (relative path) mapped to the sha256 of its bytes."""
    out: dict[str, str] = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if name in _IGNORED:
                continue
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, folder)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def _changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    keys = sorted(set(before) | set(after))
    return [k for k in keys if before.get(k) != after.get(k)]


def run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """``atlasloader ARGV`` in-process: ``(exit code, stdout, stderr)``."""
    from ...cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 2
    return int(code), out.getvalue(), err.getvalue()


def run_case(case: Case, tmp: str | os.PathLike[str]) -> Outcome:
    """Build the case's input under ``tmp``, run the API call and the command, check both."""
    base = Path(tmp) / "api"
    base.mkdir(parents=True)
    case.build(base)
    cli_base = Path(tmp) / "cli"
    shutil.copytree(base, cli_base)
    outcome = Outcome(case)
    before = snapshot(base)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            case.action(base)
        except Exception as e:
            outcome.error = e
            outcome.message = str(e)
    outcome.changed = _changed(before, snapshot(base))
    p = outcome.problems
    if case.error is None:
        if outcome.error is not None:
            p.append(f"must succeed, raised {type(outcome.error).__name__}: {outcome.message}")
        if case.warns is not None and not any(
            re.search(case.warns, str(w.message)) for w in caught
        ):
            p.append(f"no warning matching {case.warns!r}")
    else:
        if outcome.error is None:
            p.append(f"no error: expected {case.error.__name__}")
        elif not isinstance(outcome.error, case.error):
            p.append(
                f"raised {type(outcome.error).__module__}.{type(outcome.error).__name__}"
                f" ({outcome.message[:300]}), expected {case.error.__name__}"
            )
        else:
            if not re.search(case.match, outcome.message, re.DOTALL):
                p.append(f"message {outcome.message!r} does not match {case.match!r}")
            if not _ADVICE.search(outcome.message):
                p.append(f"message {outcome.message!r} does not say what to do")
        if outcome.changed:
            p.append(f"wrote {outcome.changed[:5]}")
    if case.cli is not None:
        before = snapshot(cli_base)
        code, _, err = run_cli(case.cli(cli_base))
        outcome.cli_exit, outcome.cli_stderr = code, err
        lines = [line for line in err.splitlines() if line.strip()]
        if code != case.cli_exit:
            p.append(f"CLI exit {code}, expected {case.cli_exit}: {err[-500:]!r}")
        if "Traceback" in err:
            p.append("CLI printed a traceback")
        if case.cli_exit == 3:
            if len(lines) != 1 or not lines[0].startswith("atlasloader: error: "):
                p.append(f"CLI stderr is not one 'atlasloader: error:' line: {err[-500:]!r}")
            elif case.error is not None and not re.search(case.match, lines[0]):
                p.append(f"CLI message {lines[0]!r} does not match {case.match!r}")
        if case.error is not None:
            changed = _changed(before, snapshot(cli_base))
            if changed:
                p.append(f"CLI wrote {changed[:5]}")
    return outcome
