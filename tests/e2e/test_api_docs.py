"""The examples of docs/api.md run as written (read from the file), on the demo model of examples/shapes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import dualpt_cli

ROOT = Path(__file__).resolve().parents[2]


def python_blocks() -> list[str]:
    return re.findall(
        r"^```python\n(.*?)^```", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), flags=re.S | re.M
    )


def test_api_names_load_lazily():
    assert callable(dualpt_cli.fit) and dualpt_cli.Classifier.load and dualpt_cli.Prediction
    with pytest.raises(AttributeError):
        dualpt_cli.no_such_name  # noqa: B018


@pytest.mark.slow
def test_api_examples_run(tmp_path, capsys):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    proc = subprocess.run(
        [sys.executable, "examples/shapes/make_dataset.py", "shapes"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    blocks = python_blocks()
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)  # noqa: S102 - our own documentation
    out = capsys.readouterr().out
    assert "api-demo/prompts.safetensors 20" in out
    assert "shapes/test/red_star/000.png" in out and "<image 1>" in out
    predictions = namespace["predictions"]
    assert [type(p).__name__ for p in predictions] == ["Prediction"] * 3
    assert predictions[0].label in namespace["clf"].class_names and len(predictions[0].top_k) == 3
    probs = [p for _, p in predictions[0].top_k]
    assert probs == sorted(probs, reverse=True) and 0 < predictions[0].prob <= 1
