"""The whole loop a new user runs: describe (no LLM) -> train -> predict -> eval, through the real CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from imagegen import make_image_folder

runner = CliRunner()


def test_describe_train_predict_eval(tmp_path, tiny_vit):
    (tmp_path / "classes.txt").write_text("red: red thing\ngreen: green thing\nblue: blue thing\n")
    make_image_folder(tmp_path / "train", per_class=3)
    make_image_folder(tmp_path / "test", per_class=2, seed=7)

    result = runner.invoke(app, ["describe", "classes.txt", "--provider", "none"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "dualpt-project" / "descriptions.json").is_file()

    result = runner.invoke(app, ["train", "train", "--shots", "2", "--model", tiny_vit, "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "dualpt-project" / "prompts.safetensors").is_file()

    result = runner.invoke(app, ["predict", "test/red/red_0.png", "test/blue", "--format", "json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 3
    assert len(rows[0]["top_k"]) == 2 and rows[0]["error"] is None
    assert {p["class"] for p in rows[0]["top_k"]} <= {"red thing", "green thing", "blue thing"}

    result = runner.invoke(app, ["eval", "test", "--zero-shot", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert 0.0 <= report["dualpt"]["top1"] <= 1.0 and "gain_top1" in report
