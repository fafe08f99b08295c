"""Benchmark subprocesses: run a fresh process, read the JSON line it prints last."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class RunFailed(RuntimeError):
    """A benchmark subprocess exited with an error (message: command and stderr tail)."""


def run_json(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None, *, inherit: bool = True
) -> dict[str, Any]:
    """Run ``cmd`` in the repository root and parse the last JSON line of its stdout.

    ``env`` is added to this process's environment (``inherit=False``: used as is).
    """
    full_env = {**os.environ, **(env or {})} if inherit else dict(env or {})
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=full_env
        )
    except subprocess.TimeoutExpired as e:
        raise RunFailed(f"timed out after {timeout:.0f} s: {shlex.join(cmd)}") from e
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RunFailed(f"exit {proc.returncode}: {shlex.join(cmd)}\n{tail}")
    return json.loads(lines[-1])
