"""``dualpt compare`` end to end on the tiny model, and ``--dataset coop:`` for train, eval and compare."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clihelpers import one_line_error
from dualpt_cli.cli.app import app
from dualpt_cli.compare import cells as compare_cells
from dualpt_cli.errors import DataError
from imagegen import make_image

runner = CliRunner()
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}
FAST = ["--epochs", "1", "--device", "cpu", "--precision", "fp32", "--pretrained", ""]


def write_folder(root: Path, per_class: int, seed: int) -> Path:
    for c, (name, colour) in enumerate(COLOURS.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_image(colour, size=48, seed=seed * 1000 + c * 100 + i).save(root / name / f"{name}_{i}.png")
    return root


def fake_coop(root: Path) -> Path:
    """A tiny DTD laid out as CoOp's DATASETS.md (images/<class>/..., split_zhou_DescribableTextures.json)."""
    folder = root / "dtd"
    split = {"train": [], "val": [], "test": []}
    for label, (name, colour) in enumerate(COLOURS.items()):
        for which, n in (("train", 3), ("val", 1), ("test", 2)):
            for i in range(n):
                rel = f"{name}/{which}_{i}.jpg"
                (folder / "images" / name).mkdir(parents=True, exist_ok=True)
                make_image(colour, size=48, seed=label * 100 + i + 10 * len(which)).save(folder / "images" / rel)
                split[which].append([rel, label, name])
    (folder / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    return folder


def cache_entries() -> int:
    """Images with cached features (one file each, whatever the number of views)."""
    return len(list(Path(os.environ["DUALPT_CACHE"]).rglob("*.safetensors")))


def compare(*args: str):
    return runner.invoke(app, ["compare", *args, *FAST])


@pytest.mark.slow
def test_compare_table_json_png_and_a_second_run_reuses_everything(tiny_rn, tmp_path):
    train, test = write_folder(tmp_path / "train", 3, 1), write_folder(tmp_path / "test", 2, 2)
    args = [
        str(train),
        "--test",
        str(test),
        "--methods",
        "dualpt",
        "--shots",
        "1,2",
        "--seeds",
        "1",
        "--model",
        tiny_rn,
        "-p",
        "proj",
    ]
    first = compare(*args, "--json")
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    assert (out["ran"], out["reused"]) == (2, 0)
    assert [(r["method"], r["shots"], r["runs"]) for r in out["summary"]] == [("dualpt", 1, 1), ("dualpt", 2, 1)]
    folder = tmp_path / "proj" / "compare" / "train"
    assert out["compare_json"] == str(folder / "compare.json") and out["plot"] == str(folder / "compare.png")
    assert (folder / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((folder / "compare.json").read_text())
    setup = saved["settings_id"]
    cell = saved["cells"][f"dualpt/2/1@{setup}"]
    assert cell["status"] == "ok" and 0 <= cell["accuracy"] <= 1 and cell["metrics"]["test_images"] == 6
    assert (folder / "cells" / f"dualpt-2shot-seed1-{setup}" / "prompts.safetensors").is_file()
    # views are cached by file content and seed: the 2-shot cell re-used the 1-shot cell's image; the test
    # images' evaluation view is cached once for both cells
    entries = cache_entries()
    assert entries == len(COLOURS) * 2 + len(COLOURS) * 2

    again = compare(*args)  # the table for people, nothing trained or encoded again
    assert again.exit_code == 0, again.output
    assert "dualpt" in again.stdout and "★" in again.stdout and "0 cell(s) run, 2 reused" in again.stdout
    assert cache_entries() == entries

    more = compare(*args[:3], "--methods", "dualpt,coop", *args[5:], "--json")  # a method added: only its cells
    assert more.exit_code == 0, more.output
    assert (json.loads(more.stdout)["ran"], json.loads(more.stdout)["reused"]) == (2, 2)
    assert cache_entries() == entries  # the extra method encoded nothing


def test_failed_cell_is_reported_and_exit_1_and_ctrl_c_keeps_finished_cells(tmp_path, monkeypatch):
    train, test = write_folder(tmp_path / "train", 2, 1), write_folder(tmp_path / "test", 1, 2)
    calls = []

    def fake_runner(spec, *hooks):
        def run_cell(cell):
            calls.append(cell.key)
            if cell.method == "coop":
                raise DataError("coop cannot train on this")
            if cell.method == "plot" and len(calls) < 4:
                raise KeyboardInterrupt
            return {"accuracy": 0.5 + 0.1 * cell.shots}

        return run_cell

    monkeypatch.setattr(compare_cells, "cell_runner", fake_runner)
    monkeypatch.setattr(compare_cells.CompareSpec, "check_model", lambda self: None)  # RN50: not offline
    args = [
        str(train),
        "--test",
        str(test),
        "--methods",
        "dualpt,coop,plot",
        "--shots",
        "1",
        "--seeds",
        "1",
        "--model",
        "RN50",
        "-p",
        "proj",
    ]
    stopped = compare(*args)
    assert stopped.exit_code == 130 and "interrupted" in stopped.stderr
    saved = json.loads((tmp_path / "proj" / "compare" / "train" / "compare.json").read_text())
    cells = {key.split("@")[0]: cell for key, cell in saved["cells"].items()}
    assert cells["dualpt/1/1"]["status"] == "ok" and cells["coop/1/1"]["status"] == "failed"
    assert "plot/1/1" not in cells

    resumed = compare(*args)
    assert resumed.exit_code == 1, resumed.output
    assert calls == ["dualpt/1/1", "coop/1/1", "plot/1/1", "coop/1/1", "plot/1/1"]  # dualpt kept, coop retried
    assert "failed: coop, 1 shot(s), seed 1: coop cannot train on this" in resumed.stderr
    assert "error: 1 of 3 cell(s) failed" in resumed.stderr
    assert "(2 cell(s) run, 1 reused)" in resumed.stdout and "60.0 ★" in resumed.stdout
    assert "± 0.0" not in resumed.stdout  # one seed: no spread to show
    assert not (tmp_path / "proj" / "compare" / "compare.png").exists()  # one comparison: its own plot only

    second = compare(*args[:4], "dualpt", *args[5:], "--name", "second")  # another comparison of the project
    assert second.exit_code == 0, second.output
    assert (tmp_path / "proj" / "compare" / "second" / "compare.png").is_file()
    assert (tmp_path / "proj" / "compare" / "compare.png").read_bytes()[:4] == b"\x89PNG"  # a panel per comparison
    assert "all comparisons of the project" in second.stderr


def test_a_model_that_cannot_load_fails_before_anything_is_written(tiny_rn, tmp_path, monkeypatch):
    """Dropping --model once (RN50 offline) used to replace a finished grid with one failed cell."""
    train, test = write_folder(tmp_path / "train", 1, 1), write_folder(tmp_path / "test", 1, 2)
    monkeypatch.setattr(compare_cells, "cell_runner", lambda spec, *hooks: lambda cell: 0.5 + 0.1 * cell.shots)
    args = [str(train), "--test", str(test), "--methods", "dualpt,coop", "--shots", "1", "-p", "proj"]
    assert compare(*args, "--model", tiny_rn).exit_code == 0
    path = tmp_path / "proj" / "compare" / "train" / "compare.json"
    finished = path.read_bytes()
    for extra in (["--model", f"local-dir:{tmp_path / 'nowhere'}"], ["--model", "local-dir:nowhere", "--name", "x"]):
        failed = compare(*args, *extra)
        assert failed.exit_code != 0 and "Traceback" not in failed.output
        assert "nowhere does not exist" in " ".join(failed.stderr.split())
    assert path.read_bytes() == finished  # nothing written: no failed cells over the finished ones
    assert not (tmp_path / "proj" / "compare" / "x").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["imgs", "--dataset", "coop:data/dtd"], "--dataset brings its own train and test splits"),
        (["imgs"], "pass the training ImageFolder and --test TEST_IMAGES"),
        (["imgs", "--test", "imgs"], "is the training folder"),
        (["imgs", "--test", "t", "--shots", "1,x"], "--shots '1,x' is not a comma-separated list"),
        (["imgs", "--test", "t", "--seeds", "1,1"], "--seeds names 1 twice"),
        (["--dataset", "coop:nowhere/dtd"], "dataset folder nowhere/dtd does not exist"),
        (["imgs", "--test", "t", "--name", "../up"], "--name '../up' cannot be a folder name"),
    ],
)
def test_compare_bad_input_is_one_line(args, message):
    result = compare(*args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.output


@pytest.mark.slow
def test_dataset_for_train_eval_and_compare(tiny_rn, tmp_path):
    data = fake_coop(tmp_path)
    model = ["--model", tiny_rn]
    train = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            f"coop:{data}",
            "--shots",
            "2",
            "--seed",
            "1",
            "--aug-views",
            "1",
            "--val-shots",
            "2",
            *model,
            *FAST,
            "-p",
            "proj",
            "--json",
        ],
    )
    assert train.exit_code == 0, train.output
    split = json.loads((tmp_path / "proj" / "split.json").read_text())
    assert split["dataset"] == f"coop:{data}" and split["images"] == str(data)
    assert all(len(v) == 2 for v in split["train"].values())  # CoOp's sample: 2 of the 3 train images
    assert all(v and all(p.rsplit("/", 1)[1].startswith("val_") for p in v) for v in split["val"].values())
    evaluated = runner.invoke(
        app,
        [
            "eval",
            "--dataset",
            f"coop:{data}",
            "-p",
            "proj",
            "--zero-shot",
            "--json",
            "--device",
            "cpu",
            "--precision",
            "fp32",
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads(evaluated.stdout)
    assert scores["dualpt"]["images"] == 6 and scores["zero_shot"]["images"] == 6  # the test split

    plain = runner.invoke(
        app,
        [
            "eval",
            "--dataset",
            f"coop:{data}",
            "-p",
            "empty",
            "--zero-shot",
            *model,
            "--json",
            "--device",
            "cpu",
            "--precision",
            "fp32",
        ],
    )  # zero-shot CLIP alone, no prompt file
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["classes"] == list(COLOURS) and "dualpt" not in json.loads(plain.stdout)

    both = runner.invoke(app, ["eval", "imgs", "--dataset", f"coop:{data}", "-p", "proj"])
    assert both.exit_code == 2 and "not both" in both.output

    grid = compare(
        "--dataset",
        f"coop:{data}",
        "--methods",
        "dualpt",
        "--shots",
        "1",
        "--seeds",
        "1",
        *model,
        "-p",
        "proj",
        "--json",
    )
    assert grid.exit_code == 0, grid.output
    out = json.loads(grid.stdout)
    assert out["compare_json"].endswith("compare/DTD/compare.json")
    assert json.loads(Path(out["compare_json"]).read_text())["settings"]["dataset"] == f"coop:{data}"


def test_train_dataset_errors_are_one_line(tmp_path):
    (tmp_path / "dtd").mkdir()
    missing = runner.invoke(app, ["train", "--dataset", f"coop:{tmp_path / 'dtd'}", *FAST])
    assert missing.exit_code == 2 and "split_zhou_DescribableTextures.json does not exist" in missing.stderr
    bad = runner.invoke(app, ["train", "--dataset", "imagenet", *FAST])
    assert bad.exit_code == 2 and "--dataset 'imagenet' is not understood; use coop:ROOT/NAME" in bad.stderr
    both = runner.invoke(app, ["train", "imgs", "--dataset", f"coop:{tmp_path / 'dtd'}", *FAST])
    assert both.exit_code == 2 and "not both" in both.stderr


def test_settings_name_what_changes_the_numbers(tmp_path):
    from dualpt_cli.core.project import Project

    proj = Project(tmp_path / "p")
    spec = compare_cells.CompareSpec(folder=tmp_path / "c", project=proj, images="a", test="b")
    before = spec.settings()
    proj.ensure().descriptions.write_text("{}")
    assert spec.settings()["descriptions"] != before["descriptions"] and before["images"] == str(tmp_path / "a")
    assert compare_cells.compare_name(None, "coop:x/caltech-101") == "Caltech101"


def test_base_to_new_cells_compare_h(tmp_path, monkeypatch):
    """--base-classes passes through to TrainConfig.base_classes; the cell's accuracy is H, top-1 kept beside."""
    from types import SimpleNamespace

    from dualpt_cli.compare.grid import Cell
    from dualpt_cli.core.project import Project

    seen = {}

    def fake_train(cfg, cb):
        seen["train"] = cfg
        return SimpleNamespace(epochs=3, seconds=1.0, guard=None)

    def fake_eval(cfg, progress):
        seen["eval"] = cfg
        scores = {
            "top1": 0.5,
            "top5": 1.0,
            "images": 6,
            "base": {"accuracy": 0.8},
            "new": {"accuracy": 0.4},
            "H": 2 * 0.8 * 0.4 / 1.2,
        }
        return SimpleNamespace(results={"dualpt": scores})

    monkeypatch.setattr(compare_cells, "run_training", fake_train)
    monkeypatch.setattr(compare_cells, "evaluate_folder", fake_eval)
    monkeypatch.setattr(compare_cells.CompareSpec, "check_model", lambda self: None)  # RN50: not offline
    train, test = write_folder(tmp_path / "train", 1, 1), write_folder(tmp_path / "test", 1, 2)
    spec = compare_cells.CompareSpec(
        folder=tmp_path / "c", project=Project(tmp_path / "p"), images=str(train), test=str(test), base_classes="half"
    )
    spec.check(["dualpt"])
    out = compare_cells.cell_runner(spec)(Cell("dualpt", 4, 1))
    assert seen["train"].base_classes == "half" and seen["train"].method == "dualpt"
    assert out["accuracy"] == pytest.approx(0.5333333) and out["top1"] == 0.5
    assert (out["base"], out["new"]) == (0.8, 0.4)
    listed = Path(seen["eval"].classes).read_text().splitlines()
    assert listed == ["blue: blue", "green: green", "red: red"]  # every test class, so the untrained ones are new
    assert spec.settings()["base_classes"] == "half"


# ---------------------------------------------------------------------------------------------------------
# issue 23, item 13: a compare.json that cannot be read is refused and kept, never a traceback or a fresh grid

GOOD_CELL = {"method": "dualpt", "shots": 1, "seed": 1, "status": "ok", "accuracy": 0.6, "setup": "0"}


def _one_cell(**change) -> str:
    """A format 2 compare.json of one finished cell, with ``change`` made to the cell."""
    return json.dumps({"format": 2, "setups": {"0": {}}, "cells": {"k": {**GOOD_CELL, **change}}})


def _fake_grid(tmp_path: Path, monkeypatch) -> list[str]:
    """Training and test folders, compare with a made-up accuracy per cell; the options of a run."""
    train, test = write_folder(tmp_path / "train", 1, 1), write_folder(tmp_path / "test", 1, 2)
    monkeypatch.setattr(compare_cells, "cell_runner", lambda spec, *hooks: lambda cell: 0.5 + 0.1 * cell.shots)
    monkeypatch.setattr(compare_cells.CompareSpec, "check_model", lambda self: None)  # RN50: not offline
    return [str(train), "--test", str(test), "--methods", "dualpt", "--shots", "1", "--seeds", "1", "-p", "proj"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[1, 2]", ["the file should be an object"]),
        ('{"format": 2, "setups": {}}', ["cells is missing"]),
        ('{"format": 2, "setups": {}, "cells": []}', ["cells should be an object"]),
        (_one_cell(accuracy="x"), ['cells["k"].accuracy should be a number']),
        (_one_cell(shots=[1]), ['cells["k"].shots should be an integer']),
        (_one_cell(accuracy=None), ['cells["k"].accuracy should be a number in [0, 1]']),
        (_one_cell(metrics={"H": "x"}), ['cells["k"].metrics.H should be a number']),
        (json.dumps({"format": 2, "setups": {}, "cells": {"a": GOOD_CELL, "b": GOOD_CELL}}), ["dualpt/1/1@0 twice"]),
        ('{"format": 1, "settings": [], "cells": {}}', ["settings should be an object"]),
        ('{"format": 3}', ["format 3", "reads formats 1, 2"]),
        ('{"format": true}', ["format True"]),
        ("[" * 100_000 + "]" * 100_000, ["nested too deeply"]),
        ("{half", ["is not valid JSON"]),
    ],
)  # fmt: skip
def test_malformed_compare_json_is_refused_and_kept(tmp_path, monkeypatch, text, words):
    args = _fake_grid(tmp_path, monkeypatch)
    path = tmp_path / "proj" / "compare" / "train" / "compare.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    result = compare(*args)
    line = one_line_error(result, *words)
    assert str(path) in " ".join(result.stderr.split()) and "move it away" in line and "--name" in line
    assert path.read_text() == text  # the finished cells it may hold are still there
    assert not (path.parent / "cells").exists() and not (path.parent / "compare.png").exists()


def test_an_unreadable_panel_is_left_out_with_a_warning(tmp_path, monkeypatch):
    """Another comparison's damaged compare.json: this one still finishes, the warning names the file."""
    args = _fake_grid(tmp_path, monkeypatch)
    assert compare(*args, "--name", "first").exit_code == 0
    bad = tmp_path / "proj" / "compare" / "first" / "compare.json"
    data = json.loads(bad.read_text())
    data["summary"][0]["mean"] = "x"
    bad.write_text(json.dumps(data))
    second = compare(*args, "--name", "second")
    assert second.exit_code == 0, second.output
    said = " ".join(second.stderr.split())
    assert f"left out of {tmp_path / 'proj' / 'compare' / 'compare.png'}" in said
    assert f"{bad}: summary[0].mean should be a number" in said and "Traceback" not in second.output
    assert json.loads(bad.read_text()) == data
    assert (tmp_path / "proj" / "compare" / "second" / "compare.png").is_file()


def test_project_panels_name_what_each_comparison_trained_and_tested_on(tmp_path, monkeypatch):
    """The project's compare.png titles each panel by its comparison and task, not by the comparison's name alone."""
    args = _fake_grid(tmp_path, monkeypatch)
    assert compare(*args, "--name", "first").exit_code == 0
    other = write_folder(tmp_path / "other" / "held-out", 1, 2)
    assert compare(*args[:2], str(other), *args[3:], "--name", "second").exit_code == 0
    titles = list(compare_cells.panels(tmp_path / "proj" / "compare"))
    tail = tmp_path.name
    assert titles == [
        f"first: trained on {tail}/train, tested on {tail}/test",
        f"second: trained on {tail}/train, tested on other/held-out",
    ]
    assert (tmp_path / "proj" / "compare" / "compare.png").is_file()
