"""``atlasloader`` as a whole: help texts, exit codes, quiet mode, the console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from atlasloader.cli import build_parser, main

COMMANDS = ("convert", "setup", "view", "transfer", "preprocess", "validate", "bench", "demo")
HEAVY = ("convert", "setup", "transfer", "preprocess", "validate")


def test_help_lists_every_command_and_the_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"\n    {command}" in out
    assert "exit codes:" in out
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "130 "):
        assert f"\n  {code}" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(capsys, command: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:\n" in out
    assert f"  atlasloader {command} " in out
    assert "exit codes:" in out
    heavy = command in HEAVY
    assert ("--scheduler ADDRESS" in out) is heavy
    assert ("--workers N" in out) is heavy
    assert ("ATLASLOADER_SCHEDULER" in out) is heavy
    assert ("--quiet" in out) is (command != "bench")


def test_command_is_required(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate", "x.zarr", "--no-such-option"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_scheduler_and_workers_exclude_each_other(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["setup", "x.zarr", "--scheduler", "tcp://h:1", "--workers", "2"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_workers_must_be_a_positive_integer(capsys, bad: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate", "x.zarr", "--workers", bad])
    assert exc.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_parser_fields() -> None:
    args = build_parser().parse_args(
        ["setup", "s.zarr", "--categorical-covariate-keys", "a", "b", "--batch-key", "k"]
    )
    assert args.store == "s.zarr"
    assert args.categorical_covariate_keys == ["a", "b"]
    args = build_parser().parse_args(["convert", "a.h5ad", "b.h5ad", "out.zarr"])
    assert (args.src, args.dst) == (["a.h5ad", "b.h5ad"], "out.zarr")


def test_ctrl_c_exits_130(cli, monkeypatch) -> None:
    from atlasloader.cli import view

    def interrupted(args, ui) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(view, "run", interrupted)
    result = cli("view", "x.zarr")
    assert result.code == 130
    assert result.err.strip() == "atlasloader: interrupted"
    assert "Traceback" not in result.err


def test_bug_exits_4_with_the_traceback(cli, monkeypatch) -> None:
    from atlasloader.cli import view

    def broken(args, ui) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(view, "run", broken)
    result = cli("view", "x.zarr")
    assert result.code == 4
    assert "Traceback" in result.err
    assert "RuntimeError: boom" in result.err
    assert "internal error" in result.err


def test_os_error_exits_3_in_one_line(cli, monkeypatch) -> None:
    from atlasloader.cli import view

    def full(args, ui) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(view, "run", full)
    result = cli("view", "x.zarr")
    assert result.code == 3
    assert result.err == "atlasloader: error: [Errno 28] No space left on device\n"


def test_warnings_are_one_line_notes_and_quiet_drops_them(cli, inputs, tmp_path) -> None:
    # Both inputs name their cells cell_0...: convert warns that it made them unique.
    result = cli("convert", inputs["a"], inputs["b"], tmp_path / "ab.zarr")
    assert result.code == 0, result.err
    warning = [line for line in result.err.splitlines() if "obs_names collide" in line]
    assert len(warning) == 1
    assert warning[0].startswith("atlasloader: warning: ")
    quiet = cli("convert", inputs["a"], inputs["b"], tmp_path / "ab.zarr", "--overwrite", "-q")
    assert (quiet.code, quiet.out, quiet.err) == (0, "", "")


def _console() -> list[str]:
    script = Path(sys.executable).parent / "atlasloader"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "atlasloader.cli"]


def test_console_script_errors_are_one_line(inputs, tmp_path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("ATLASLOADER_SCHEDULER", None)
    missing = tmp_path / "missing.zarr"
    proc = subprocess.run(
        [*_console(), "setup", str(missing), "--batch-key", "batch"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("atlasloader: error: ")
    assert str(missing) in proc.stderr


def test_python_dash_m_runs_the_cli(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "atlasloader.cli", "--version"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0
    assert proc.stdout.startswith("atlasloader ")
