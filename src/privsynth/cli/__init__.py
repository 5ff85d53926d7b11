"""The ``privsynth`` command: parses arguments, calls the Python API, prints with rich. No logic of its own.

Each module registers its commands on the one Typer app in :mod:`privsynth.cli._app`.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from privsynth.cli import bench, data, evaluate, generate, ledger, provenance, related, service, text
from privsynth.cli._app import app, err_console, state
from privsynth.errors import PrivsynthError

__all__ = ["app", "main"]
_COMMAND_MODULES = (data, generate, evaluate, ledger, provenance, bench, text, service, related)


def main() -> None:
    """Entry point: runs the app and turns privsynth errors into one line and an exit code."""
    try:
        app()  # standalone: typer reports usage errors itself and exits
    except PrivsynthError as exc:
        if state["debug"]:
            raise
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)  # [deep] is text, not markup
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: say so in one line, keep the traceback for --debug
        if state["debug"]:
            raise
        err_console.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))} (run with --debug for the traceback "
            "and please report it)",
            highlight=False,
        )
        sys.exit(70)
