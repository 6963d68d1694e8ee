"""Issue 23's hostile inputs, the cases that attack data: moved from tests/test_hostile_inputs.py.

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clihelpers import CPU, invoke, one_line_error

# ---------------------------------------------------------------------------------------------------------
# 16. CoOp split files: a class with no train rows, an empty class name, an empty test split


def _caltech(tmp_path: Path, change) -> Path:
    from test_coopdata import fake_caltech

    folder = fake_caltech(tmp_path / "data")
    split_file = folder / "split_zhou_Caltech101.json"
    split = json.loads(split_file.read_text())
    change(split)
    split_file.write_text(json.dumps(split))
    return folder


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda s: s.update(train=[r for r in s["train"] if r[1] != 2]), ["'accordion'", "no train images"]),
        (lambda s: [r.__setitem__(2, "") for part in s.values() for r in part if r[1] == 0], ["empty class name"]),
        (lambda s: s.update(test=[]), ["test split is empty"]),
    ],
)
def test_broken_coop_splits_are_refused_before_training(tmp_path, tiny_rn, change, words):
    folder = _caltech(tmp_path, change)
    result = invoke("train", "--dataset", f"coop:{folder}", "--model", tiny_rn, "--pretrained", "", *CPU)
    one_line_error(result, "split_zhou_Caltech101.json", *words)
    assert not Path("dualpt-project/prompts.safetensors").exists()
