"""Run the ``privsynth`` command as a test sees a subprocess (``returncode``, ``stdout``, ``stderr``), in this
process or in a new one.

A new Python process pays ~3 s of imports per command; :func:`run_cli` runs the same entry point
(:func:`privsynth.cli.main`: the Typer app, its error lines and exit codes, its rich logging on stderr) in this
process under click's test runner, at a fixed terminal width. :func:`run_cli_process` keeps the end-to-end path
(a fresh interpreter, the real streams) for the few tests that check it, and for tests that need process isolation.
Both take the working directory and extra environment variables a test gives and return a
:class:`subprocess.CompletedProcess`, so a test reads the same either way.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

WIDTH = "200"  # wide enough that rich does not wrap table cells


def run_cli(
    *args: str, cwd: Path | str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``privsynth ARGS`` in this process: exit code, stdout and stderr as a subprocess would give them.

    ``env`` adds to (or overrides) the environment for the run only; ``cwd`` is the working directory for the run.
    An exception that escapes ``main`` (under ``--debug``) is printed with its traceback on stderr, exit code 1,
    as Python does.
    """
    # Imported here: test modules whose functions run in spawned processes import this module there too.
    from typer.testing import CliRunner

    from privsynth.cli import main

    environment = {"COLUMNS": WIDTH, **(env or {})}
    with _cwd(cwd), _cli_logging(), _wide_consoles(), CliRunner().isolation(env=environment) as (out, err, _):
        argv = sys.argv
        sys.argv = ["privsynth", *args]
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = _exit_code(exit_.code)
        except Exception:
            traceback.print_exc()
            code = 1
        finally:
            sys.argv = argv
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode("utf-8", "backslashreplace")
    return subprocess.CompletedProcess(["privsynth", *args], code, stdout, stderr)


def run_cli_process(
    *args: str, cwd: Path | str | None = None, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m privsynth ARGS`` in a new process: end to end, from a fresh interpreter."""
    environment = {**os.environ, "COLUMNS": WIDTH, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "privsynth", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=environment,
    )


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message"): Python prints it and exits 1
    return 1


@contextmanager
def _cwd(folder: Path | str | None) -> Iterator[None]:
    before = Path.cwd()
    if folder is not None:
        os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextmanager
def _wide_consoles() -> Iterator[None]:
    """The CLI's consoles at WIDTH columns for the run, then as they were (rich keeps a set width in ``_width``;
    None is "ask the terminal"), so that no test's width leaks into the next."""
    from privsynth.cli import _app

    consoles = (_app.console, _app.err_console)
    saved = [console._width for console in consoles]
    for console in consoles:
        console.width = int(WIDTH)
    try:
        yield
    finally:
        for console, width in zip(consoles, saved, strict=True):
            console._width = width


@contextmanager
def _cli_logging() -> Iterator[None]:
    """Let the command set up logging as it does in its own process (``logging.basicConfig`` with rich on stderr,
    a no-op while pytest's capture handlers sit on the root logger), then put pytest's handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers = handlers
        root.setLevel(level)
