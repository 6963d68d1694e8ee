"""Golden outputs: predict and eval on the trained tiny fixture give exactly the rows and metrics stored in
tests/golden/predict_eval.json (made from the code before the issue-14 restructuring; a refactor must not
change them). Regenerate only for an intended change of behaviour: DUALPT_REGEN_GOLDEN=1 pytest tests/e2e/test_golden.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from typer.testing import CliRunner

from dualpt_cli.cli.app import app

GOLDEN = Path(__file__).parents[1] / "golden" / "predict_eval.json"
runner = CliRunner()


def _invoke(args: list[str]) -> dict | list:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _relative(rows: list[dict], root: Path) -> list[dict]:
    return [{**row, "image": Path(row["image"]).relative_to(root).as_posix()} for row in rows]


def _outputs(prompts: str, test_images: Path, tmp_path: Path) -> dict:
    """Predict rows (trained classes, and with one new class), eval metrics (with zero-shot, and base-to-new)."""
    classes = tmp_path / "classes.txt"
    classes.write_text("red\ngreen\nblue\nyellow\n")
    common = ["--prompt-file", prompts, "--device", "cpu", "--precision", "fp32", "--quiet"]
    out = {
        "predict": _relative(_invoke(["predict", str(test_images), "--format", "json", *common]), test_images),
        "predict_new_class": _relative(
            _invoke(["predict", str(test_images), "--format", "json", "--classes", str(classes), *common]), test_images
        ),
        "eval": _invoke(["eval", str(test_images), "--zero-shot", "--json", *common]),
        "eval_new_class": _invoke(["eval", str(test_images), "--classes", str(classes), "--json", *common]),
    }
    for key in ("eval", "eval_new_class"):
        out[key].pop("images")
        out[key].pop("prompt_file")
        out[key].pop("model")
    return out


def _compare(got, want, where: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            _compare(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            _compare(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert isinstance(got, (int, float)), f"{where}: {got!r} != {want!r}"
        assert (math.isnan(got) and math.isnan(want)) or abs(got - want) <= 1e-6, f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_predict_and_eval_match_the_golden_outputs(prompts, test_images, tmp_path):
    got = _outputs(prompts, test_images, tmp_path)
    if os.environ.get("DUALPT_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    _compare(got, want)
    assert got["predict"] and all(row["error"] is None for row in got["predict"])  # the fixture is not empty
