"""Run the bad-input catalogue and write ``benchmarks/results/bad_inputs.md``.

Usage: ``python scripts/bad_inputs_table.py [OUT.md]``. Each row: the case, the API call, the
error class raised (or "accepted"), its message (shortened, temporary paths removed), the CLI's
exit code, whether nothing was written, and whether the case passed its checks.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from atlasloader.testing.badinputs import CASES, OPEN_DEFECTS, run_case

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "bad_inputs.md"


def _cell(text: str, limit: int = 150) -> str:
    text = re.sub(r"(file://)?/tmp/[^\s'\")]*?/(api|cli)/", "", " ".join(text.split()))
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else OUT
    rows = [
        "| case | group | API call | error class | message | CLI exit | nothing written | passes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    n_ok = 0
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            o = run_case(case, tmp)
        n_ok += o.ok
        if case.error is None:
            error = "accepted" if o.error is None else type(o.error).__name__
            message = case.note if o.error is None else o.message
            written = "n/a (must succeed)"
        else:
            error = "none" if o.error is None else type(o.error).__name__
            message = o.message
            written = "yes" if o.nothing_written else "no: " + ", ".join(o.changed[:2])
        cli = "-" if o.cli_exit is None else str(o.cli_exit)
        status = "yes" if o.ok else ("known: " if case.name in OPEN_DEFECTS else "NO: ")
        if not o.ok:
            status += _cell("; ".join(o.problems), 90)
        rows.append(
            f"| `{case.name}` | {case.group} | `{_cell(case.api, 80)}` | {error} | "
            f"{_cell(message)} | {cli} | {_cell(written, 60)} | {status} |"
        )
    head = (
        "# Bad inputs\n\n"
        f"`scripts/bad_inputs_table.py` ran the {len(CASES)} cases of "
        "`atlasloader.testing.badinputs` ({n_ok} pass their checks; `known:` rows are listed "
        "in `OPEN_DEFECTS`). Expected CLI exit: 3 for errors (one `atlasloader: error:` "
        "line, no traceback), 0 for inputs that must be accepted.\n\n"
    ).replace("{n_ok}", str(n_ok))
    text = head + "\n".join(rows) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
