from __future__ import annotations

import json
import math

import pytest
from rich.console import Console

from dualpt_cli.compare.grid import (
    Callbacks,
    Cell,
    CellResult,
    aggregate,
    parse_int_list,
    plan_grid,
    run_compare,
    settings_id,
)
from dualpt_cli.errors import DataError, ProjectError
from dualpt_cli.pictures.plots import compare_png, percent_range
from dualpt_cli.ui.compare import compare_table

SETTINGS = {"model": "RN50", "test": "test/", "epochs": None}
AT = "@" + settings_id(SETTINGS)  # the end of every cell key of SETTINGS in compare.json


def fake_accuracy(cell: Cell) -> float:
    """A made-up, deterministic accuracy: better with more shots, "dualpt" above "coop"."""
    return round(0.5 + 0.05 * math.log2(cell.shots) + (0.1 if cell.method == "dualpt" else 0.0) + 0.01 * cell.seed, 6)


class Recorder(Callbacks):
    def __init__(self):
        self.warnings, self.started, self.reused = [], [], []

    def warn(self, message):
        self.warnings.append(message)

    def cell_start(self, cell, index, total):
        self.started.append(cell.key)

    def cell_done(self, result, reused):
        if reused:
            self.reused.append(result.cell.key)


def test_plan_grid_order_and_checks():
    cells = plan_grid(["coop", "dualpt"], [1, 2], [1, 2])
    assert [c.key for c in cells[:4]] == ["coop/1/1", "dualpt/1/1", "coop/1/2", "dualpt/1/2"]
    assert len(cells) == 8
    with pytest.raises(DataError, match="--methods names 'coop' twice"):
        plan_grid(["coop", "coop"], [1], [1])
    with pytest.raises(DataError, match="--shots must be >= 1"):
        plan_grid(["coop"], [0], [1])
    with pytest.raises(DataError, match="--seeds is empty"):
        plan_grid(["coop"], [1], [])
    assert parse_int_list("1, 2,4", "--shots") == [1, 2, 4]
    with pytest.raises(DataError, match="--shots '1,two'"):
        parse_int_list("1,two", "--shots")


def test_runs_the_grid_and_writes_json_after_each_cell(tmp_path):
    path = tmp_path / "compare.json"
    seen_on_disk = []

    def run_cell(cell):
        if path.exists():  # the file already holds every cell finished before this one
            seen_on_disk.append(len(json.loads(path.read_text())["cells"]))
        return {"accuracy": fake_accuracy(cell), "epochs": 3}

    cells = plan_grid(["coop", "dualpt"], [1, 4], [1, 2, 3])
    result = run_compare(path, cells, SETTINGS, run_cell)
    assert result.ran == 12 and result.reused == 0 and not result.failed
    assert seen_on_disk == list(range(1, 12))
    data = json.loads(path.read_text())
    assert data["settings"] == SETTINGS and len(data["cells"]) == 12
    assert data["cells"]["dualpt/4/2" + AT]["accuracy"] == fake_accuracy(Cell("dualpt", 4, 2))
    assert data["cells"]["dualpt/4/2" + AT]["metrics"] == {"epochs": 3}
    assert len(data["summary"]) == 4


def test_second_run_skips_finished_cells_and_a_grown_grid_runs_only_new_ones(tmp_path):
    path = tmp_path / "compare.json"
    calls = []

    def run_cell(cell):
        calls.append(cell.key)
        return fake_accuracy(cell)

    run_compare(path, plan_grid(["coop"], [1, 2], [1]), SETTINGS, run_cell)
    calls.clear()
    cb = Recorder()
    again = run_compare(path, plan_grid(["coop", "dualpt"], [1, 2], [1]), SETTINGS, run_cell, cb)
    assert calls == ["dualpt/1/1", "dualpt/2/1"]
    assert cb.reused == ["coop/1/1", "coop/2/1"] and again.reused == 2 and again.ran == 2


def test_interrupted_grid_resumes_where_it_stopped(tmp_path):
    path = tmp_path / "compare.json"
    cells = plan_grid(["coop", "dualpt"], [1], [1, 2])

    def interrupted(cell):
        if cell.key == "coop/1/2":
            raise KeyboardInterrupt  # Ctrl-C: not a failed cell, the command stops
        return fake_accuracy(cell)

    with pytest.raises(KeyboardInterrupt):
        run_compare(path, cells, SETTINGS, interrupted)
    assert set(json.loads(path.read_text())["cells"]) == {"coop/1/1" + AT, "dualpt/1/1" + AT}
    calls = []
    result = run_compare(path, cells, SETTINGS, lambda c: calls.append(c.key) or fake_accuracy(c))
    assert calls == ["coop/1/2", "dualpt/1/2"] and result.reused == 2


def test_changed_settings_add_cells_beside_the_finished_ones(tmp_path):
    """A changed setting never discards finished cells: they stay, and the original settings reuse them."""
    path = tmp_path / "compare.json"
    cells = plan_grid(["coop", "dualpt"], [1], [1])
    run_compare(path, cells, SETTINGS, fake_accuracy)
    cb = Recorder()
    changed = run_compare(path, cells, {**SETTINGS, "epochs": 5}, lambda c: 0.25, cb)
    assert changed.ran == 2 and [r.accuracy for r in changed.results] == [0.25, 0.25]
    assert any("keeps 2 finished cell(s) of other settings (epochs differ)" in w for w in cb.warnings), cb.warnings
    saved = json.loads(path.read_text())
    assert len(saved["cells"]) == 4 and len(saved["setups"]) == 2 and saved["settings"]["epochs"] == 5
    assert [row["mean"] for row in saved["summary"]] == [0.25, 0.25]  # this run's settings only, never mixed
    again = run_compare(path, cells, dict(reversed(SETTINGS.items())), lambda c: pytest.fail("ran again"))
    assert (again.ran, again.reused) == (0, 2) and again.results[0].accuracy == fake_accuracy(cells[0])
    assert len(json.loads(path.read_text())["cells"]) == 4


def test_format_1_file_is_read_as_the_cells_of_its_settings(tmp_path):
    path = tmp_path / "compare.json"
    cell = {"method": "coop", "shots": 1, "seed": 1, "status": "ok", "accuracy": 0.6, "metrics": {}, "seconds": 1.0}
    path.write_text(json.dumps({"format": 1, "settings": SETTINGS, "cells": {"coop/1/1": cell}, "summary": []}))
    result = run_compare(path, plan_grid(["coop", "plot"], [1], [1]), SETTINGS, lambda c: 0.5)
    assert (result.ran, result.reused) == (1, 1) and result.results[0].accuracy == 0.6
    assert json.loads(path.read_text())["format"] == 2


def test_one_failed_cell_is_recorded_not_fatal_and_retried(tmp_path):
    path = tmp_path / "compare.json"
    cells = plan_grid(["coop", "plot"], [1, 2], [1])

    def run_cell(cell):
        if cell.method == "plot" and cell.shots == 2:
            raise DataError("class 'cat' has no usable image\nsecond line")
        return fake_accuracy(cell)

    result = run_compare(path, cells, SETTINGS, run_cell)
    assert [r.cell.key for r in result.failed] == ["plot/2/1"]
    assert result.failed[0].error == "class 'cat' has no usable image"
    assert json.loads(path.read_text())["cells"]["plot/2/1" + AT]["status"] == "failed"
    row = next(r for r in result.rows if (r.method, r.shots) == ("plot", 2))
    assert row.mean is None and row.failed == 1
    calls = []
    run_compare(path, cells, SETTINGS, lambda c: calls.append(c.key) or 0.5)
    assert calls == ["plot/2/1"]  # only the failed cell runs again


def test_bad_accuracy_and_other_exceptions_fail_the_cell(tmp_path):
    result = run_compare(
        tmp_path / "c.json", plan_grid(["a", "b"], [1], [1]), SETTINGS, lambda c: 42.0 if c.method == "a" else 1 / 0
    )
    assert "not a number in [0, 1]" in result.results[0].error
    assert result.results[1].error == "ZeroDivisionError: division by zero"


def test_damaged_compare_json_is_refused_and_kept(tmp_path):
    """It used to be replaced by a fresh grid, throwing its finished cells away (issue 22's rule)."""
    path = tmp_path / "compare.json"
    path.write_text("{half")
    calls = []
    with pytest.raises(ProjectError, match="is not valid JSON .* move it away .* another --name"):
        run_compare(path, plan_grid(["a"], [1], [1]), SETTINGS, lambda c: calls.append(c) or 0.5)
    assert path.read_text() == "{half" and not calls


def _r(method, shots, seed, acc):
    return CellResult(method, shots, seed, "ok", acc)


def test_aggregate_mean_std_and_best():
    rows = aggregate(
        [
            _r("coop", 1, 1, 0.5),
            _r("coop", 1, 2, 0.7),
            _r("dualpt", 1, 1, 0.8),
            _r("dualpt", 1, 2, 0.8),
            _r("coop", 2, 1, 0.9),
            _r("dualpt", 2, 1, 0.6),
        ]
    )
    by = {(r.method, r.shots): r for r in rows}
    assert by["coop", 1].mean == pytest.approx(0.6) and by["coop", 1].std == pytest.approx(0.1414213, abs=1e-6)
    assert by["dualpt", 1].std == 0.0 and by["dualpt", 1].runs == 2
    assert [k for k, r in by.items() if r.best] == [("dualpt", 1), ("coop", 2)]
    tie = aggregate([_r("a", 1, 1, 0.5), _r("b", 1, 1, 0.5)])
    assert all(r.best for r in tie)


def test_table_marks_the_best(tmp_path):
    rows = aggregate(
        [
            _r("coop", 1, 1, 0.5),
            _r("dualpt", 1, 1, 0.8),
            CellResult("dualpt", 2, 1, "failed", error="x"),
            _r("coop", 2, 1, 0.6),
        ]
    )
    console = Console(record=True, width=120)
    console.print(compare_table(rows))
    text = console.export_text()
    assert "80.0 ★" in text and "60.0 ★" in text and "failed" in text and "±" not in text  # one seed: no spread
    two = aggregate([_r("coop", 1, 1, 0.5), _r("coop", 1, 2, 0.7)])
    console.print(compare_table(two))
    assert "60.0 ± 14.1 ★" in console.export_text()


def test_accuracy_axis_spans_at_least_ten_points():
    """0.4 points once filled the whole axis (93.75-94.17) and looked like a gap."""
    assert percent_range([93.75, 94.17]) == pytest.approx((88.96, 98.96))
    assert percent_range([99.0, 100.0]) == (90.0, 100.0) and percent_range([0.0, 1.0]) == (0.0, 10.0)
    assert percent_range([20.0, 90.0]) == (18.0, 92.0)


def test_plot_is_written(tmp_path):
    result = run_compare(
        tmp_path / "compare.json", plan_grid(["coop", "dualpt"], [1, 2, 4], [1, 2]), SETTINGS, fake_accuracy
    )
    png = compare_png({"my task": result.rows, "again": result.rows}, title="accuracy vs shots")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    with pytest.raises(ValueError, match="no finished cells"):
        compare_png({"x": [r for r in aggregate([CellResult("a", 1, 1, "failed")])]})


def test_report_json_and_callbacks(tmp_path, capsys):
    from dualpt_cli.ui.compare import RichCallbacks, report

    result = run_compare(
        tmp_path / "compare.json",
        plan_grid(["a"], [1], [1, 2]),
        {"paths": ("x", tmp_path)},
        lambda c: 1 / 0 if c.seed == 2 else 0.5,
        RichCallbacks(),
    )
    assert "failed: a, 1 shot(s), seed 2: ZeroDivisionError" in capsys.readouterr().err
    report(result, png=tmp_path / "compare.png", json_out=True)
    data = json.loads(capsys.readouterr().out)
    assert data["summary"][0]["mean"] == 0.5 and data["failed"][0]["seed"] == 2
    again = run_compare(
        tmp_path / "compare.json", plan_grid(["a"], [1], [1]), {"paths": ("x", tmp_path)}, lambda c: 0.9
    )
    assert again.reused == 1  # tuples and paths in the settings compare equal after the JSON round trip


def test_base_to_new_h_is_of_the_seed_averaged_base_and_new(tmp_path):
    """H of the mean base and mean new accuracies over seeds (CoCoOp's tables), not the mean of per-seed H."""
    per_seed = {1: (0.9, 0.1), 2: (0.1, 0.9)}  # each seed's H is 0.18; the means 0.5 and 0.5 give H = 0.5

    def cell(c: Cell) -> dict:
        base, new = per_seed[c.seed]
        h = 2 * base * new / (base + new)
        return {"accuracy": h, "H": h, "base": base, "new": new, "top1": 0.5}

    result = run_compare(tmp_path / "compare.json", plan_grid(["coop"], [4], [1, 2]), SETTINGS, cell)
    (row,) = result.rows
    assert (row.base, row.new) == pytest.approx((0.5, 0.5))
    assert row.mean == pytest.approx(0.5)
    assert row.std == pytest.approx(0.0)  # the spread of the per-seed H (both 0.18)
    summary = json.loads((tmp_path / "compare.json").read_text())["summary"][0]
    assert summary["mean"] == pytest.approx(0.5) and summary["base"] == pytest.approx(0.5)
    plain = aggregate([_r("coop", 1, 1, 0.9), _r("coop", 1, 2, 0.1)])  # no base/new: the plain mean
    assert plain[0].mean == pytest.approx(0.5) and plain[0].base is None
