"""``compare.json`` read back, checked before a cell or a summary row is built from it.

The file holds finished cells, hours of training: one that cannot be read (damaged, edited by hand, of a
newer format) is refused with one line naming it and the field, never replaced and never a traceback
(:func:`read_cells`, for the grid that resumes it), or left out of the project's plot with a warning
(:func:`read_summary`, for the panels of the other comparisons).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.jsonshape import Each, Opt, check_shape
from ..core.project import read_json
from ..errors import ProjectError

READABLE_FORMATS = (1, 2)  # format 1: the cells of one set of settings, keyed method/shots/seed
KEEP = "move it away (its finished cells stay in it) or give this comparison another --name"
WHAT = "comparison results"

CELL = {
    "method": str,
    "shots": int,
    "seed": int,
    "status": str,
    "accuracy": Opt(float),
    "metrics": Opt({"H": Opt(float), "base": Opt(float), "new": Opt(float)}),  # what aggregate() adds up
    "error": Opt(str),
    "seconds": Opt(float),
}
CELLS = {  # by format
    1: {"settings": {}, "cells": Each(CELL)},
    2: {"setups": Each({}), "cells": Each({**CELL, "setup": str})},
}
ROW = {
    "method": str,
    "shots": int,
    "mean": Opt(float),
    "std": Opt(float),
    "runs": int,
    "failed": int,
    "best": Opt(bool),
    "base": Opt(float),
    "new": Opt(float),
}


def _read(path: Path) -> tuple[int, dict[str, Any]]:
    """The format and content of ``path``, a JSON object of a format this dualpt reads."""
    data = check_shape(read_json(path, WHAT, KEEP), {"format": object}, path, KEEP)
    fmt = data["format"]
    if isinstance(fmt, bool) or fmt not in READABLE_FORMATS:
        raise ProjectError(
            f"{path} is compare.json format {str(fmt)[:20]}, this dualpt reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}; {KEEP} (or upgrade dualpt)"
        )
    return fmt, data


def read_cells(path: Path) -> dict[str, Any] | None:
    """The content of ``path`` with every cell checked (``format``, ``cells``; ``settings`` or ``setups``), or
    None if there is no such file; a :class:`ProjectError` naming the file and the field otherwise."""
    if not os.path.lexists(path):
        return None
    fmt, data = _read(path)
    check_shape(data, CELLS[fmt], path, KEEP)
    for key, cell in data["cells"].items():
        where = f'cells["{key[:40]}"]'
        if cell["status"] not in ("ok", "failed"):
            raise ProjectError(f'{path}: {where}.status should be "ok" or "failed"; {KEEP}')
        accuracy = cell.get("accuracy")
        if cell["status"] == "ok" and (accuracy is None or not 0.0 <= accuracy <= 1.0):
            raise ProjectError(f"{path}: {where}.accuracy should be a number in [0, 1] for a finished cell; {KEEP}")
    return data


TASK = {"images": Opt(str), "test": Opt(str), "dataset": Opt(str)}  # what a panel's title names


def read_summary(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The summary rows of ``path`` and the settings they were measured with (only the task's fields are
    checked), or a :class:`ProjectError` naming the file and the field."""
    _, data = _read(path)
    checked = check_shape(data, {"summary": [ROW], "settings": Opt(TASK)}, path, KEEP)
    return checked["summary"], checked.get("settings") or {}
