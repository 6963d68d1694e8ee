"""Terminal side of ``dualpt compare``: a line per cell while the grid runs, then the table of mean ± std."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import TaskID
from rich.table import Table
from rich.text import Text

from ..compare.grid import Callbacks, Cell, CellResult, CompareResult, Row
from ..train.loop import Callbacks as TrainCallbacks
from . import console as ui
from .console import console, err_console, print_json, progress, warn


class RichCallbacks(Callbacks):
    """One line on stderr per cell: run, reused from an earlier run, or failed (with its error)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def warn(self, message: str) -> None:
        warn(message)

    def cell_start(self, cell: Cell, index: int, total: int) -> None:
        if not (self.quiet or ui.QUIET):
            err_console.print(
                f"[dim][{index + 1}/{total}][/] {escape(cell.method)}, {cell.shots} shot(s), seed {cell.seed} ..."
            )

    def cell_done(self, result: CellResult, reused: bool) -> None:
        name = f"{escape(result.method)}, {result.shots} shot(s), seed {result.seed}"
        if result.status == "failed":
            err_console.print(f"[red]failed:[/] {name}: {escape(result.error or '')}", soft_wrap=True)
        elif not (self.quiet or ui.QUIET):
            how = "[dim](from the earlier run)[/]" if reused else f"[dim]{result.seconds:.1f} s[/]"
            err_console.print(f"  {name}: {result.accuracy:.1%} {how}")


class CellProgress(TrainCallbacks):
    """Training hooks of one cell: a transient bar (encoding, then epochs) that leaves no lines behind;
    the cell's warnings are printed, its info lines are not."""

    def __init__(self, quiet: bool = False):
        self.bar = progress(transient=True)
        self.bar.disable = self.bar.disable or quiet
        self.task: TaskID | None = None

    def __enter__(self) -> CellProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def warn(self, message: str) -> None:
        warn(message)

    def _task(self, name: str, total: int) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(f"  {name}", total=total, status="")

    def _advance(self, n: int) -> None:
        if self.task is not None:  # the current stage's bar
            self.bar.advance(self.task, n)

    def stage(self, name: str, total: int) -> Callable[[int], None]:
        self._task(name, total)
        return lambda n: self._advance(n)

    def epoch(self, epoch: int, total: int, steps: int) -> Callable[[dict[str, Any]], None]:
        self._task(f"epoch {epoch + 1}/{total}", steps)

        def tick(stats: dict[str, Any]) -> None:
            if self.task is not None:
                self.bar.update(self.task, advance=1, status=f"loss {stats['loss']:.3f}  acc {stats['acc']:.1%}")

        return tick


def cell_text(row: Row, stacked: bool = False) -> str:
    """``71.2 ± 1.3`` in percent (``71.2`` from one seed: no spread to show), bold with a star for the best at its
    shot count; failures noted. ``stacked``: the spread on a line of its own (a narrow terminal)."""
    if row.mean is None:
        text = "[red]failed[/]" if row.failed else "—"
    else:
        spread = ("\n" if stacked else " ") + f"± {100 * (row.std or 0.0):.1f}"
        text = f"{100 * row.mean:.1f}" + (spread if row.runs > 1 else "")
        if row.best:
            text = f"[bold green]{text} ★[/]"
        if row.failed:
            text += f"\n[red]{row.failed} failed[/]" if stacked else f" [red]({row.failed} failed)[/]"
    return text


def compare_table(
    rows: Sequence[Row], title: str = "dualpt compare", metric: str = "accuracy", width: int | None = None
) -> Table:
    """Methods down, shot counts across; ``metric`` (accuracy, or H for base-to-new) in percent, mean ± std.
    Where one line per cell is wider than ``width`` the spread goes below the mean; a method name is never cut."""
    methods = list(dict.fromkeys(r.method for r in rows))
    shots = sorted({r.shots for r in rows})
    by = {(r.method, r.shots): r for r in rows}

    def cells(stacked: bool) -> list[list[str]]:
        return [[cell_text(by[m, k], stacked) if (m, k) in by else "—" for k in shots] for m in methods]

    body = cells(False)
    wide = max(Text.from_markup(c).cell_len for line in body for c in line)  # the widest one-line cell
    if width is not None and (max(map(len, methods)) + 3) + len(shots) * (wide + 3) + 1 > width:
        body = cells(True)
    table = Table(title=title)
    table.add_column("method", no_wrap=True, min_width=max(map(len, methods)))
    for k in shots:
        table.add_column(f"{k} shot{'s' if k > 1 else ''}", justify="right")
    for method, line in zip(methods, body):
        table.add_row(escape(method), *line)
    return table


def report(
    result: CompareResult,
    png: Path | None = None,
    json_out: bool = False,
    metric: str = "accuracy",
    title: str = "dualpt compare",
) -> None:
    """The table (or JSON with ``--json``), then what its numbers are and where the results and the plot are.
    Failed cells were reported as they failed; the caller says how many (exit code 1)."""
    if json_out:
        from dataclasses import asdict

        print_json(
            {
                "compare_json": str(result.path),
                "plot": str(png) if png else None,
                "ran": result.ran,
                "reused": result.reused,
                "summary": [asdict(r) for r in result.rows],
                "failed": [asdict(r) for r in result.failed],
            }
        )
        return
    console.print(compare_table(result.rows, title, metric=metric, width=console.width))
    if any(r.base is not None for r in result.rows):
        console.print(
            "[dim]H (%) of the base and new accuracies, each averaged over seeds first (CoCoOp's tables); "
            "± the std of the per-seed H; ★ best per shot count[/]"
        )
    else:
        console.print(f"[dim]{metric} (%) on the test images, mean ± std over seeds; ★ best per shot count[/]")
    console.print(
        f"results: {escape(str(result.path))} ({result.ran} cell(s) run, {result.reused} reused)"
        + (f"; plot: {escape(str(png))}" if png else ""),
        soft_wrap=True,
    )
