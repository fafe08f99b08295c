"""What every command shares: exit codes, output (``--quiet``), option groups, help layout."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130

EXIT_CODES = """\
exit codes:
  0    success
  1    validate found problems (view: the store has no registration)
  2    usage error: unknown option, missing or malformed argument
  3    bad input or data: missing file, wrong format, gene mismatch, unknown key,
       new categories, unreachable scheduler (one line "atlasloader: error: ..." on stderr)
  4    internal error: a bug, reported with its traceback
  130  interrupted (Ctrl-C)"""

CLUSTER_HELP = """\
cluster:
  dask graphs run on dask's threaded scheduler unless --scheduler ADDRESS (or the
  ATLASLOADER_SCHEDULER environment variable) names a running dask.distributed scheduler
  (tcp://host:8786, or a scheduler file), or --workers N starts a local cluster of N
  worker processes for the command. Paths must be readable by every worker."""


def add_command(
    sub: Any,
    name: str,
    *,
    summary: str,
    description: str,
    examples: str,
    cluster: bool = False,
) -> argparse.ArgumentParser:
    """A subcommand parser whose help ends with examples and the exit codes."""
    epilog = "examples:\n" + examples.rstrip()
    if cluster:
        epilog += "\n\n" + CLUSTER_HELP
    parser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog + "\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet``: errors only (progress bars show only when stderr is a terminal)."""
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print nothing but errors (no tables, progress bars or warnings), for scripts",
    )


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """``--scheduler ADDRESS`` or ``--workers N`` (one of them)."""
    from ..cluster import ENV_VAR

    group = parser.add_argument_group("cluster (see below)")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help=f"dask.distributed scheduler to run on (default: ${ENV_VAR}, else threads)",
    )
    choice.add_argument(
        "--workers",
        metavar="N",
        type=positive_int,
        default=None,
        help="start a local dask cluster of N worker processes for this command",
    )


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@dataclass
class Ui:
    """Where a command's output goes: stdout for results, stderr for notes and progress."""

    quiet: bool = False

    @property
    def progress(self) -> bool:
        """Whether to show progress bars: on stderr when it is a terminal and not quiet (a
        log file gets nothing from a bar but its last state)."""
        return not self.quiet and _is_tty(sys.stderr)

    def print(self, text: str) -> None:
        """A result line on stdout (plain text: no markup, no wrapping); nothing when quiet."""
        if not self.quiet:
            print(text, flush=True)

    def note(self, text: str) -> None:
        """A remark on stderr (which scheduler runs, where a file went); nothing when quiet."""
        if not self.quiet:
            print(f"atlasloader: {text}", file=sys.stderr, flush=True)

    def error(self, text: str) -> None:
        """One line on stderr, whatever ``quiet`` says."""
        print(f"atlasloader: error: {' '.join(text.split())}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Route warnings to one-line notes (or drop them when quiet); silence stdout when
        quiet, so library code printing tables prints nothing."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            if self.quiet:
                warnings.simplefilter("ignore")
                devnull = stack.enter_context(open(os.devnull, "w"))
                stack.enter_context(contextlib.redirect_stdout(devnull))
                stack.enter_context(_log_level("distributed", logging.ERROR))
            else:
                warnings.showwarning = self._show_warning
            yield

    def _show_warning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        text = " ".join(str(message).split())
        print(f"atlasloader: warning: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _log_level(name: str, level: int) -> Iterator[None]:
    """Raise a logger's level for the block (dask.distributed logs warnings on stderr)."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(max(level, before))
    try:
        yield
    finally:
        logger.setLevel(before)


def check_store_path(path: str) -> str:
    """``path`` unless it is a local file: stores are directories (or URLs), and zarr's own
    error for a file ("File exists") does not say what to do."""
    from ..errors import NotAnnDataStoreError
    from ..store.open import not_a_directory_message

    if "://" not in path and os.path.isfile(path):
        raise NotAnnDataStoreError(not_a_directory_message(path))
    return path
