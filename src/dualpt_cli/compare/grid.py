"""The grid engine of ``dualpt compare``: every (method, shots, seed) cell, resumable, one file of results.

The caller supplies ``run_cell(cell) -> accuracy`` (or a dict with ``"accuracy"`` and any other numbers), so
methods plug in without this module knowing them. After each cell the whole result file is rewritten
atomically (``compare.json``), so Ctrl-C loses at most the cell that was running, and a second run skips
every finished cell. The run's ``settings`` (model, data, epochs, ...: whatever changes the numbers) name its
cells: each cell is keyed by method, shots, seed and the id of its settings (:func:`settings_id`), so a run
with other settings adds cells beside the finished ones and never replaces them, and the summary only ever
mixes cells of one set of settings. A cell that raises is recorded with its error and the grid goes on;
failed cells are tried again on the next run.

compare.json::

    {"format": 2, "settings": {...this run's...}, "settings_id": "3fa2c1d0",
     "setups": {"3fa2c1d0": {...}, "77b0e912": {...an earlier run's...}},
     "cells": {"coop/4/1@3fa2c1d0": {"method": "coop", "shots": 4, "seed": 1, "status": "ok",
                                      "accuracy": 0.71, "metrics": {...}, "seconds": 12.3, "setup": "3fa2c1d0"},
               "plot/4/1@3fa2c1d0": {..., "status": "failed", "error": "DataError: ..."}},
     "summary": [{"method": "coop", "shots": 4, "mean": 0.71, "std": 0.01, "runs": 3, "failed": 0,
                  "best": true}, ...]}   (this run's settings only)

A format 1 file (one ``settings`` for every cell, keys without ``@``) is read as the cells of its settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.project import atomic_write_json
from ..errors import DataError, DualptError, ProjectError
from ..predict.evaluate import harmonic_mean
from .resultfile import KEEP, read_cells

FORMAT = 2


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    method: str
    shots: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.method}/{self.shots}/{self.seed}"


@dataclass
class CellResult:
    """What one cell gave: an accuracy, or the error that stopped it."""

    method: str
    shots: int
    seed: int
    status: str  # "ok" or "failed"
    accuracy: float | None = None  # test accuracy in [0, 1]
    metrics: dict[str, Any] = field(default_factory=dict)  # anything else run_cell returned
    error: str | None = None  # one line, for a failed cell
    seconds: float = 0.0
    setup: str = ""  # settings_id of the settings the cell ran with

    @property
    def key(self) -> str:
        return stored_key(self.cell, self.setup)

    @property
    def cell(self) -> Cell:
        return Cell(self.method, self.shots, self.seed)


@dataclass
class Row:
    """Mean and spread of one method at one shot count, over the seeds that finished."""

    method: str
    shots: int
    mean: float | None  # None when no seed finished
    std: float | None  # sample standard deviation over seeds (0 for one seed)
    runs: int  # seeds that finished
    failed: int  # seeds that failed
    best: bool = False  # the highest mean at this shot count (ties all marked)
    base: float | None = None  # base-to-new: the mean over seeds of the base accuracy ...
    new: float | None = None  # ... and of the new accuracy; ``mean`` is then H(base, new) of these two means


@dataclass
class CompareResult:
    path: Path
    results: list[CellResult]  # in grid order
    rows: list[Row]
    ran: int  # cells run now
    reused: int  # finished cells taken from an earlier run

    @property
    def failed(self) -> list[CellResult]:
        return [r for r in self.results if r.status == "failed"]


class Callbacks:
    """Hooks for progress and messages; the library never prints."""

    def warn(self, message: str) -> None: ...

    def cell_start(self, cell: Cell, index: int, total: int) -> None: ...

    def cell_done(self, result: CellResult, reused: bool) -> None: ...


def plan_grid(methods: Sequence[str], shots: Sequence[int], seeds: Sequence[int]) -> list[Cell]:
    """Cells in the order they run: by shots, then seed, then method (a partial grid compares methods early)."""
    for values, what in ((methods, "--methods"), (shots, "--shots"), (seeds, "--seeds")):
        if not values:
            raise DataError(f"{what} is empty; give at least one value")
        dup = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if dup is not None:
            raise DataError(f"{what} names {dup!r} twice")
    bad = [s for s in shots if s < 1]
    if bad:
        raise DataError(f"--shots must be >= 1, got {bad[0]}")
    return [Cell(m, k, s) for k in shots for s in seeds for m in methods]


def parse_int_list(text: str, what: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4]; a clear error naming the option otherwise."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DataError(f"{what} {text!r} is not a comma-separated list of whole numbers (e.g. 1,2,4)") from None


def settings_id(settings: dict[str, Any]) -> str:
    """A short id of ``settings``: cells that ran with equal settings share it (key order does not matter)."""
    text = json.dumps(_jsonable(settings), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def stored_key(cell: Cell, setup: str) -> str:
    """A cell's key in compare.json: ``method/shots/seed@settings id``."""
    return f"{cell.key}@{setup}"


@dataclass
class Previous:
    """What an earlier compare.json holds: every recorded cell by key, and the settings of each settings id."""

    cells: dict[str, CellResult] = field(default_factory=dict)
    setups: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_previous(path: Path) -> Previous:
    """Every cell and set of settings of ``path`` (format 1 or 2), empty if there is no such file.

    A file that cannot be read is a :class:`ProjectError` naming it (:func:`resultfile.read_cells`), never
    started afresh: the next save would throw its finished cells away."""
    data = read_cells(path)
    if data is None:
        return Previous()
    if data["format"] == 1:  # one set of settings for all its cells
        setup = settings_id(data["settings"])
        setups = {setup: data["settings"]}
        cells = [_stored_cell(value, setup) for value in data["cells"].values()]
    else:
        setups = dict(data["setups"])
        cells = [_stored_cell(value, value["setup"]) for value in data["cells"].values()]
    by_key = {r.key: r for r in cells}
    if len(by_key) < len(cells):  # keyed otherwise by hand: one of them would be lost at the next save
        twice = next(r.key for r in cells if sum(c.key == r.key for c in cells) > 1)
        raise ProjectError(f"{path} holds cell {twice} twice; {KEEP}")
    return Previous(by_key, setups)


def _stored_cell(value: dict[str, Any], setup: str) -> CellResult:
    """A cell as compare.json holds it (checked by :func:`resultfile.read_cells`); other keys are ignored."""
    return CellResult(
        value["method"],
        value["shots"],
        value["seed"],
        value["status"],
        value.get("accuracy"),
        dict(value.get("metrics") or {}),
        value.get("error"),
        float(value.get("seconds") or 0.0),
        setup,
    )


def _warn_other_settings(path: Path, previous: Previous, settings: dict[str, Any], cb: Callbacks) -> None:
    """Say that cells of other settings stay in the file, and which settings differ from the latest of them."""
    setup = settings_id(settings)
    others = [r for r in previous.cells.values() if r.setup != setup and r.status == "ok"]
    if not others:
        return
    new = _jsonable(settings)
    old = previous.setups.get(others[-1].setup, {})
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    cb.warn(
        f"{path} keeps {len(others)} finished cell(s) of other settings ({', '.join(changed) or 'unknown'} "
        "differ); they stay beside this run's cells and are not mixed into its summary"
    )


def run_compare(
    path: str | Path,
    cells: Sequence[Cell],
    settings: dict[str, Any],
    run_cell: Callable[[Cell], float | dict[str, Any]],
    cb: Callbacks | None = None,
) -> CompareResult:
    """Run every cell not already finished with the same ``settings``, saving ``path`` after each one.

    Cells of other settings in ``path`` are kept as they are (and not reused): a changed setting adds cells.

    ``run_cell`` returns the cell's test accuracy in [0, 1], or a dict with ``"accuracy"`` and more numbers.
    Any exception it raises (other than KeyboardInterrupt and SystemExit) fails that cell only. Finished
    cells of the file that are not in ``cells`` are kept, so a grid can grow run by run.
    """
    cb = cb or Callbacks()
    path = Path(path)
    if path.is_dir():
        raise ProjectError(f"{path} is a folder; give the file compare.json should be written to")
    previous = load_previous(path)
    _warn_other_settings(path, previous, settings, cb)
    setup = settings_id(settings)
    results: dict[str, CellResult] = dict(previous.cells)  # every cell of every settings stays in the file
    setups = {**previous.setups, setup: _jsonable(settings)}
    ran = reused = 0
    for index, cell in enumerate(cells):
        key = stored_key(cell, setup)
        done = results.get(key)
        if done is not None and done.status == "ok":
            reused += 1
            cb.cell_done(done, reused=True)
            continue
        cb.cell_start(cell, index, len(cells))
        start = time.perf_counter()
        try:
            accuracy, metrics = _outcome(run_cell(cell))
            result = CellResult(cell.method, cell.shots, cell.seed, "ok", accuracy, metrics, setup=setup)
        except Exception as exc:  # noqa: BLE001 - one failed cell is recorded, the grid goes on
            result = CellResult(cell.method, cell.shots, cell.seed, "failed", error=_one_line(exc), setup=setup)
        result.seconds = round(time.perf_counter() - start, 3)
        results[key] = result
        ran += 1
        _save(path, settings, setups, results)
        cb.cell_done(result, reused=False)
    ordered = [results[stored_key(c, setup)] for c in cells]
    if not ran:
        _save(path, settings, setups, results)  # the summary of a fully reused grid, in this run's order
    return CompareResult(path, ordered, aggregate(ordered), ran, reused)


def _outcome(value: float | dict[str, Any]) -> tuple[float, dict[str, Any]]:
    metrics = dict(value) if isinstance(value, dict) else {"accuracy": value}
    accuracy = metrics.pop("accuracy", None)
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"the method returned accuracy {accuracy!r}, not a number in [0, 1]")
    return float(accuracy), _jsonable(metrics)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = type(exc).__name__
    return text if isinstance(exc, DualptError) and text else f"{kind}: {text}" if text else kind


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, paths strings), so stored and new compare equal."""
    return json.loads(json.dumps(obj, default=str))


def _save(
    path: Path, settings: dict[str, Any], setups: dict[str, dict[str, Any]], results: dict[str, CellResult]
) -> None:
    setup = settings_id(settings)
    rows = aggregate([r for r in results.values() if r.setup == setup])
    atomic_write_json(
        path,
        {
            "format": FORMAT,
            "settings": _jsonable(settings),
            "settings_id": setup,
            "setups": {k: v for k, v in setups.items() if any(r.setup == k for r in results.values())},
            "cells": {key: asdict(r) for key, r in results.items()},
            "summary": [asdict(r) for r in rows],
        },
    )


def aggregate(results: Sequence[CellResult]) -> list[Row]:
    """Mean ± sample std over seeds per (method, shots), in first-seen order; the best mean per shot marked.

    Base-to-new cells (every finished seed with ``H``, ``base`` and ``new`` among its metrics) give, as CoCoOp's
    tables do, the harmonic mean of the seed-averaged base and new accuracies, not the mean of the per-seed H;
    the std is still that of the per-seed H."""
    groups: dict[tuple[str, int], list[CellResult]] = {}
    for r in results:
        groups.setdefault((r.method, r.shots), []).append(r)
    rows = []
    for (method, shots), group in groups.items():
        accs = [r.accuracy for r in group if r.status == "ok" and r.accuracy is not None]
        mean = sum(accs) / len(accs) if accs else None
        std = (
            math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1))
            if len(accs) > 1 and mean is not None
            else (0.0 if accs else None)
        )
        row = Row(method, shots, mean, std, len(accs), len(group) - len(accs))
        done = [r.metrics for r in group if r.status == "ok" and r.accuracy is not None]
        if done and all(m.get(k) is not None for m in done for k in ("H", "base", "new")):
            row.base = sum(m["base"] for m in done) / len(done)
            row.new = sum(m["new"] for m in done) / len(done)
            row.mean = harmonic_mean(row.base, row.new)
        rows.append(row)
    for shots in {row.shots for row in rows}:
        means = [row.mean for row in rows if row.shots == shots and row.mean is not None]
        for row in rows:
            if row.shots == shots:
                row.best = row.mean is not None and row.mean == max(means)
    return rows
