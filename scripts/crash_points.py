"""Run the crash harness at many kill points and write ``benchmarks/results/crash_points.md``.

Usage: ``python scripts/crash_points.py [--points 50] [--ops setup,convert,...] [--out OUT.md]``.

For each operation of :data:`atlasloader.testing.crash.OPS` a child process is SIGKILLed at
``--points`` moments spread uniformly over its measured clean run; after each kill the store
must open, the user's files must hash as before, validate must find no damage, and a rerun
must give the clean run's result (see :mod:`atlasloader.testing.crash`). Then, where this
process may mount filesystems (root), each operation runs on a nearly full tmpfs (several
amounts of free space) and on a read-only bind mount. Sequential by design: kill points are
times, and a second job on the machine would shift them.
"""

from __future__ import annotations

import argparse
import platform
import re
import tempfile
import time
import warnings
from pathlib import Path

from atlasloader.testing.crash import OPS, can_mount, full_disk, read_only, run_op

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "crash_points.md"
HEADROOMS = (0, 4096, 16384, 65536)  # free bytes left on the tmpfs


def _cell(text: str, limit: int = 140) -> str:
    text = re.sub(r"/tmp/\S*?/(\S+?-(full/w|ro))/", "", " ".join(text.split()))
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    ops = [o for o in args.ops.split(",") if o]
    warnings.simplefilter("ignore")
    start = time.time()
    lines = [
        "# Crash points",
        "",
        f"`python scripts/crash_points.py --points {args.points}` on {platform.node() or 'this'}"
        f" ({platform.machine()}, {time.strftime('%Y-%m-%d')}). Input: 3,000 cells x 200 genes,"
        " CSR, Zarr v3. A kill point survives when the store opens (anndata and atlasloader),"
        " the user's files hash as before, validate finds no damage, and a rerun gives the"
        " clean run's result.",
        "",
        "| operation | kill points | survived | clean run (s) | killed after completion |"
        " left named leftovers |",
        "|---|---|---|---|---|---|",
    ]
    failures: list[str] = []
    total = survived = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in ops:
            r = run_op(name, args.points, tmp)
            print(r.line(), *r.failures, sep="\n  ", flush=True)
            total, survived = total + r.total, survived + r.survived
            lines.append(
                f"| `{name}` | {r.total} | {r.survived}/{r.total} | {r.duration_s:.2f} | "
                f"{r.published} | {r.incomplete} |"
            )
            failures += [f"- `{name}`: {_cell(f, 400)}" for f in r.failures]
        lines += ["", f"**{survived}/{total} kill points survived.**", ""]
        if failures:
            lines += ["Failures:", "", *failures, ""]
        if can_mount():
            lines += [
                "## Stores that cannot take the writes",
                "",
                "A tmpfs filled to a few bytes of free space, and a read-only bind mount. Each"
                " run must fit (and write a sound store) or fail with a named error, its inputs"
                " unchanged and nothing half-written left visible.",
                "",
                "| operation | case | outcome | error |",
                "|---|---|---|---|",
            ]
            n_ok = n = 0
            for name in ops:
                reports = [full_disk(name, tmp, h) for h in HEADROOMS] + [read_only(name, tmp)]
                for nw in reports:
                    print(nw.line(), flush=True)
                    n, n_ok = n + 1, n_ok + nw.ok
                    error = f"`{nw.error['type']}`: {_cell(nw.error['msg'])}" if nw.error else "fit"
                    outcome = "ok" if nw.ok else _cell("; ".join(nw.problems))
                    lines.append(f"| `{name}` | {nw.case} | {outcome} | {error} |")
            lines += ["", f"**{n_ok}/{n} cases held.**", ""]
        else:
            lines += ["(full-disk and read-only cases skipped: mounting needs root)", ""]
    lines.append(f"Wall time: {time.time() - start:.0f} s.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0 if survived == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
