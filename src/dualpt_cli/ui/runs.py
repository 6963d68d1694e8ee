"""Terminal side of ``dualpt runs``: the table of a project's runs, sized to the terminal (no torch needed)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .console import console

# columns of ``dualpt runs``: (header, row key); the accuracies always show, the others give way on a narrow
# terminal, last first (``--json`` has them all)
RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("", "current"),
    ("run", "name"),
    ("method", "method"),
    ("train", "train_accuracy"),
)
RUN_COLUMNS += (("val", "val_accuracy"), ("eval", "eval_top1"), ("shots", "shots"), ("seed", "seed"))
RUN_COLUMNS += (("epochs", "epochs"),)
OPTIONAL_RUN_COLUMNS = ("epochs", "seed", "shots")  # left out in this order until the table fits


def _cell(key: str, value: Any) -> str:
    if key == "current":
        return "*" if value else ""
    if key.endswith(("accuracy", "top1")):
        return "-" if value is None else f"{value:.1%}"
    if key == "shots" and value is None:
        return "all"
    return escape(str(value))


def runs_table(rows: list[dict[str, Any]], width: int) -> Table:
    """The runs as a table no wider than ``width`` where it can be: method names wrap at spaces, the shots, seed
    and epochs columns are left out (epochs first), then run names fold over two lines or more, before an accuracy
    is ever cut."""
    columns = dict(RUN_COLUMNS)
    cells = {h: [h, *(_cell(columns[h], r[columns[h]]) for r in rows)] for h in columns}
    need = {h: max(len(word) for c in cs for word in (c.split() if h == "method" else [c])) for h, cs in cells.items()}
    order = ["", "run", "method", "shots", "seed", "epochs", "train", "val", "eval"]
    for drop in OPTIONAL_RUN_COLUMNS:
        if sum(need[h] + 3 for h in order) + 1 <= width:  # each cell: its text, 2 of padding, 1 border
            break
        order.remove(drop)
    room = width - 1 - sum(need[h] + 3 for h in order if h != "run") - 3  # what the run names may take
    fold = need["run"] > room
    table = Table(title="dualpt runs (* current)")
    for h in order:
        text = h in ("", "run", "method")
        if h == "run" and fold:  # the name whole, over lines: --run needs all of it
            table.add_column(h, overflow="fold", width=max(room, 10))
            continue
        table.add_column(h, justify="left" if text else "right", no_wrap=h != "method", min_width=need[h])
    for i in range(len(rows)):
        table.add_row(*(cells[h][i + 1] for h in order))
    return table


def print_runs(rows: list[dict[str, Any]], out: Console | None = None) -> None:
    """``dualpt runs``: one row per run (the current one starred), sized to the terminal."""
    out = out or console
    if not rows:
        out.print("no runs yet: dualpt train IMAGES makes one")
        return
    out.print(runs_table(rows, out.width))
