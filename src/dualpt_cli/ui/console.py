"""Terminal output shared by the commands: consoles, progress bars, tables."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console()
err_console = Console(stderr=True)
QUIET = False  # --quiet: no progress bars and no hints (set_quiet)


def set_quiet(quiet: bool = True) -> None:
    global QUIET
    QUIET = quiet


def progress(transient: bool = False) -> Progress:
    """A progress bar on stderr, so ``--json`` output on stdout stays clean (none with --quiet)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=err_console,
        transient=transient,
        disable=QUIET,
    )


def uncut(table: Table) -> Table:
    """``table`` with no cell ever shortened to "…" on a narrow terminal: figures (right-aligned columns) never
    wrap, and a word too long for its text column (a class folder, a path) folds onto the next line."""
    for column in table.columns:
        if column.justify == "right":
            column.no_wrap = True
        else:
            column.overflow = "fold"
    return table


def print_json(obj: Any) -> None:
    """Machine output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def hint(message: str) -> None:
    """A suggestion for people at the end of a command, on stderr (none with --quiet)."""
    if not QUIET:
        from rich.markup import escape

        err_console.print(f"[dim]{escape(message)}[/]", soft_wrap=True)


def warn(message: str) -> None:
    from rich.markup import escape

    err_console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


class WarningHandler(logging.Handler):
    """Library log records as ``warning: ...`` lines on stderr, like dualpt's own warnings.

    Installed on the root logger by the CLI, so that no library's ``logging.info()`` call installs Python's
    default ``LEVEL:name:message`` handler behind our back.
    """

    def emit(self, record: logging.LogRecord) -> None:
        warn(record.getMessage())


def setup_logging(level: int = logging.WARNING) -> None:
    """Route log records at ``level`` and above to :class:`WarningHandler` (once per process)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, WarningHandler):
            handler.setLevel(level)
            return
    root.addHandler(WarningHandler(level))
