"""Start-up: the commands that need no model (help, completion, describe, runs, cache info, report) import none
of torch, open_clip, matplotlib or numpy. Each runs as its own process, as a user starts it, and reports which
of those modules ended up in ``sys.modules``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trained import TRAINED_CLASSES

HEAVY = ("torch", "open_clip", "matplotlib", "numpy", "safetensors")

# runs ``dualpt ARGS`` as the installed script does, then writes which HEAVY modules were imported
PROBE = """
import json, sys
sys.argv = ["dualpt", *json.loads(sys.argv[1])]
code = 0
try:
    from dualpt_cli.cli.app import main
    main()
except SystemExit as exc:
    code = exc.code or 0
with open({out!r}, "w") as f:
    json.dump({{"code": code, "heavy": [m for m in {heavy!r} if m in sys.modules]}}, f)
"""


def imported(args: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> dict:
    """{"code": exit code, "heavy": the HEAVY modules imported} of ``dualpt ARGS`` in a fresh process."""
    out = tmp_path / "probe.json"
    src = Path(__file__).resolve().parents[2] / "src"
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }
    code = PROBE.format(out=str(out), heavy=HEAVY)
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], env=full_env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return {**json.loads(out.read_text()), "stdout": proc.stdout, "stderr": proc.stderr}


HELP = [
    ["--help"],
    ["-h"],
    *[[command, "-h"] for command in ("describe", "train", "runs", "predict", "eval", "explain", "report")],
    ["compare", "-h"],
    ["info", "-h"],
    ["cache", "-h"],
    ["cache", "info", "-h"],
    ["--version"],
]


@pytest.mark.parametrize("args", HELP, ids=" ".join)
def test_help_imports_no_model_code(args, tmp_path):
    result = imported(args, tmp_path)
    assert result["code"] == 0, result["stderr"]
    assert result["heavy"] == [], f"dualpt {' '.join(args)} imported {result['heavy']}"


@pytest.mark.parametrize(
    "words, expected",
    [("dualpt tr", "train"), ("dualpt train --me", "--method"), ("dualpt train --method co", "coop")],
)
def test_shell_completion_imports_no_model_code(words, expected, tmp_path):
    """Bash runs the program at every Tab: it answers without loading torch."""
    env = {"_DUALPT_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    result = imported([], tmp_path, env)
    assert expected in result["stdout"].split()
    assert result["heavy"] == []


@pytest.fixture
def project(trained, tmp_path) -> Path:
    """A copy of the trained project with descriptions, a recorded run, curves.png and an evaluation."""
    from dualpt_cli.core.project import Project
    from dualpt_cli.pictures.figures import write_curves
    from dualpt_cli.train.runs import record_run

    proj = tmp_path / "proj"
    shutil.copytree(trained[0] / "proj", proj, ignore=shutil.ignore_patterns("cache", "checkpoint"))
    record_run(Project(proj), {"method": "dualpt", "epochs": 2, "train_accuracy": 0.5}, "first")
    write_curves(Project(proj))  # newer than train_log.jsonl: report shows it as it is
    per_class = [{"class": c, "folder": c, "images": 2, "accuracy": 0.5} for c in TRAINED_CLASSES]
    result = {"images": 6, "classes": 3, "top1": 0.5, "top5": 1.0, "ece": 0.1, "per_class": per_class}
    (proj / "eval").mkdir()
    (proj / "eval" / "eval.json").write_text(json.dumps({"images": "test", "model": "tiny", "dualpt": result}))
    (tmp_path / "classes.txt").write_text("".join(f"{c}\n" for c in TRAINED_CLASSES))
    (tmp_path / "phrases.json").write_text(json.dumps({c: [f"{c} colour"] for c in TRAINED_CLASSES}))
    return proj


def test_commands_without_a_model_import_no_model_code(project, tmp_path):
    cache = tmp_path / "user-cache"
    p = str(project)
    for args in (
        ["describe", str(tmp_path / "classes.txt"), "--provider", "none", "-p", p],
        ["describe", str(tmp_path / "classes.txt"), "--phrases", str(tmp_path / "phrases.json"), "-p", p],
        ["describe", "--show", "-p", p],
        ["describe", "--show", "red", "-p", p, "--json"],
        ["runs", "-p", p],
        ["runs", "-p", p, "--json"],
        ["cache", "info"],
        ["cache", "info", "--json"],
        ["report", "-p", p, "--examples", "0"],
    ):
        result = imported(args, tmp_path, {"DUALPT_CACHE": str(cache)})
        assert result["code"] == 0, (args, result["stderr"])
        assert result["heavy"] == [], f"dualpt {' '.join(args)} imported {result['heavy']}"
    page = (project / "report.html").read_text()
    assert "Training curves" in page and "red colour" in page and "DUAL-PT" in page
