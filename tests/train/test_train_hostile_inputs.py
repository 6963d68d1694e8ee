"""Issue 23's hostile inputs, the cases that attack train: moved from tests/test_hostile_inputs.py.

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clihelpers import invoke, one_line_error, snapshot, tiny_train
from trained import TRAINED_CLASSES

DEEP = "[" * 100_000

pytestmark = pytest.mark.images(classes=TRAINED_CLASSES, per_class=2, seed=5)


# ---------------------------------------------------------------------------------------------------------
# 7. --run-name is checked before training touches the project; so is a `runs` that is a file


def test_bad_run_name_is_refused_before_training(project, images, tiny_rn):
    before = snapshot(project)
    result = tiny_train(tiny_rn, "--project", project, "--run-name", "a/b")
    one_line_error(result, "--run-name", "a/b")
    assert snapshot(project) == before  # prompts, run_config and split untouched


def test_runs_that_is_a_file_is_refused_before_training(project, images, tiny_rn):
    (project / "runs").write_text("not a folder")
    before = snapshot(project)
    one_line_error(tiny_train(tiny_rn, "--project", project), "runs", "is a file")
    assert snapshot(project) == before


# ---------------------------------------------------------------------------------------------------------
# 12, 13. run metadata and JSON files read back: a bad one is a blank or one line, never a traceback


def _run(project: Path, name: str, config: str, result: str = "{}", evaluation: str | None = None) -> None:
    folder = project / "runs" / name
    folder.mkdir(parents=True)
    (folder / "run_config.json").write_text(config)
    (folder / "result.json").write_text(result)
    if evaluation is not None:
        (folder / "eval.json").write_text(evaluation)


def test_runs_lists_runs_with_bad_metadata(project):
    good = json.dumps({"method": "dualpt", "shots": 2, "seed": 1, "epochs": 2, "beta": 0.1, "model": "m"})
    _run(project, "good", good, json.dumps({"train_accuracy": 0.5}), json.dumps({"dualpt": {"top1": 0.75}}))
    _run(project, "bad-eval", good, "{}", json.dumps({"dualpt": [1]}))
    _run(project, "bad-method", json.dumps({"method": ["x"], "shots": "lots", "beta": "x"}))
    _run(project, "deep", good, DEEP, DEEP)
    result = invoke("runs", "--project", project, "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["good"]["eval_top1"] == 0.75 and rows["good"]["train_accuracy"] == 0.5
    assert rows["bad-eval"]["eval_top1"] is None
    assert rows["bad-method"]["shots"] is None and rows["bad-method"]["method"].startswith("DUAL")
    assert invoke("runs", "--project", project).exit_code == 0  # the table too


def test_deep_descriptions_json_is_one_error(project, images):
    (project / "descriptions.json").write_text(DEEP)
    result = invoke("report", "--project", project, "--examples", 0)
    one_line_error(result, "descriptions.json", "nested too deeply")
