"""The terminal side of ``dualpt predict``: the progress bar and the table format as a rich table."""

from __future__ import annotations

import sys
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..predict.rows import PredictCallbacks
from . import console as ui
from .progress import RichProgress


class RichPredictCallbacks(RichProgress, PredictCallbacks):
    """Predict's progress bar, and the table format as a rich table."""

    def render_table(self, rows: list[dict[str, Any]], top_k: int, fh: IO[str]) -> None:
        render_table(rows, top_k, fh)


def render_table(rows: list[dict[str, Any]], top_k: int, fh: IO[str]) -> None:
    """A rich table: image, prediction, probability, and the runners-up (on the terminal's console for stdout)."""
    table = Table(show_edge=False)
    table.add_column("image", overflow="fold")
    table.add_column("prediction")
    table.add_column("prob", justify="right")
    if top_k > 1:
        table.add_column(f"next {top_k - 1}", overflow="fold")
    for row in rows:
        if row["error"]:
            cells = [escape(row["image"]), f"[red]error:[/] {escape(row['error'])}", ""]
            table.add_row(*cells, *([""] if top_k > 1 else []))
            continue
        cells = [escape(row["image"]), escape(row["class"]), f"{row['prob']:.1%}"]
        rest = ", ".join(f"{escape(t['class'])} {t['prob']:.1%}" for t in row["top_k"][1:])
        table.add_row(*cells, *([rest] if top_k > 1 else []))
    console = ui.console if fh is sys.stdout else Console(file=fh, width=160, no_color=True)
    console.print(ui.uncut(table))
