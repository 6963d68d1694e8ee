"""Run history: every train keeps runs/NAME/, `dualpt runs` lists them, --config reruns one, --run picks one."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.ui.runs import print_runs
from imagegen import make_image_folder
from test_tables import unfolded
from trained import TRAINED_CLASSES

runner = CliRunner()


def train(*extra: str, tiny_rn: str):
    args = [
        "train",
        "images",
        "--shots",
        "2",
        "--model",
        tiny_rn,
        "--epochs",
        "2",
        "--aug-views",
        "1",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--json",
        *extra,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_two_trains_leave_two_runs_listed_with_accuracies(tiny_rn, tmp_path):
    make_image_folder(tmp_path / "images", classes=TRAINED_CLASSES, per_class=4)
    make_image_folder(tmp_path / "test", classes=TRAINED_CLASSES, per_class=2, seed=7)
    first = train("--run-name", "first", tiny_rn=tiny_rn)
    second = train("--seed", "2", "--val-shots", "1", tiny_rn=tiny_rn)
    assert first["run"] == "first" and second["run"] != "first"
    runs = tmp_path / "dualpt-project" / "runs"
    for name in (first["run"], second["run"]):
        assert {p.name for p in (runs / name).iterdir()} >= {
            "prompts.safetensors",
            "run_config.json",
            "train_log.jsonl",
            "split.json",
            "result.json",
            "curves.png",
        }
    assert first["curves"] and first["curves"].endswith("curves.png")
    assert (runs / "current").read_text().strip() == second["run"]
    config = json.loads((runs / "first" / "run_config.json").read_text())
    assert config["pretrained"] == ""  # a local-dir model has no pretrained tag

    result = runner.invoke(app, ["eval", "test", "--run", "first", "-q", "--plot", "pics"])
    assert result.exit_code == 0, result.output
    kept, plotted = (json.loads(p.read_text()) for p in (runs / "first" / "eval.json", tmp_path / "pics" / "eval.json"))
    assert kept["dualpt"]["top1"] == plotted["dualpt"]["top1"] and "mistakes" in plotted and "mistakes" not in kept
    assert runner.invoke(app, ["eval", "test", "-q"]).exit_code == 0  # the current run's prompts
    rows = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert [r["name"] for r in rows] == ["first", second["run"]]
    assert [r["seed"] for r in rows] == [1, 2] and [r["shots"] for r in rows] == [2, 2]
    assert rows[0]["eval_top1"] is not None and rows[1]["eval_top1"] is not None
    assert rows[1]["val_accuracy"] is not None and rows[1]["current"] and not rows[0]["current"]
    assert rows[0]["method"] == "DUAL-PT, no LLM"
    explained = runner.invoke(app, ["explain", "test", "--run", "first", "--json", "-q", "--device", "cpu"])
    assert explained.exit_code == 0, explained.output
    assert json.loads(explained.stdout)
    table = runner.invoke(app, ["runs"]).stdout
    assert "dualpt runs" in table and table.count("DUAL-PT") == 2 and "*" in table


def test_config_reruns_a_saved_run_and_options_override(tiny_rn, tmp_path):
    make_image_folder(tmp_path / "images", classes=TRAINED_CLASSES, per_class=4)
    train("--run-name", "base", "--seed", "3", tiny_rn=tiny_rn)
    saved = "dualpt-project/runs/base/run_config.json"
    result = runner.invoke(app, ["train", "--config", saved, "--epochs", "1", "--run-name", "again", "--json"])
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "dualpt-project" / "runs" / "again" / "run_config.json").read_text())
    assert again["seed"] == 3 and again["shots"] == 2 and again["epochs"] == 1 and again["aug_views"] == 1
    assert json.loads(result.stdout)["epochs"] == 1


def test_run_errors(tmp_path):
    result = runner.invoke(app, ["predict", "x.png", "--run", "nope"])
    assert result.exit_code == 2 and "no run 'nope'" in result.output
    result = runner.invoke(app, ["predict", "x.png", "--run", "a", "--prompt-file", "b"])
    assert result.exit_code == 2 and "not both" in " ".join(result.output.split())
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 2 and "pass the ImageFolder" in " ".join(result.output.split())
    (tmp_path / "bad.json").write_text("{}")
    result = runner.invoke(app, ["train", "--config", "bad.json"])
    assert result.exit_code == 2 and "is not a dualpt run_config.json" in result.output
    assert "no runs yet" in runner.invoke(app, ["runs"]).stdout


RUNS = [
    {"current": False, "name": "20261205-131245-4shot-seed1", "method": "DUAL-PT, no LLM", "shots": 4, "seed": 1,
     "epochs": 100, "train_accuracy": 0.958, "val_accuracy": None, "eval_top1": 0.95},
    {"current": True, "name": "20261205-131420-16shot-seed12", "method": "linear probe, descriptions",
     "shots": None, "seed": 12, "epochs": 200, "train_accuracy": 1.0, "val_accuracy": 0.9, "eval_top1": 0.875},
]  # fmt: skip


@pytest.mark.parametrize("width", [60, 80, 100, 160])
def test_runs_table_shows_every_accuracy_at_80_columns(width):
    """At 80 columns the table once cut every accuracy to 'v…' and '…'; at 60 it lost the eval column."""
    out = Console(width=width, record=True)
    print_runs(RUNS, out)
    text = out.export_text()
    assert "…" not in text and max(map(len, text.splitlines())) <= width, text
    for value in ("95.8%", "95.0%", "100.0%", "90.0%", "87.5%", "descriptions"):
        assert value in text, text
    for name in (RUNS[0]["name"], RUNS[1]["name"]):  # whole, folded over lines at 60 columns
        assert name in (text if width > 60 else unfolded(text)), text
    header = next(line for line in text.splitlines() if " run " in line)
    assert ("epochs" in header) == (width >= 160)  # the optional columns give way first, on a narrow terminal
