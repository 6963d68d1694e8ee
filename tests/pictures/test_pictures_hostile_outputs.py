"""Issue 23's hostile outputs, the cases that attack pictures: moved from tests/test_hostile_outputs.py.

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clihelpers import invoke, one_line_error

# ---------------------------------------------------------------------------------------------------------
# 4. the report escapes every eval.json field and stays inert


def _eval_dir(tmp_path: Path, **changes) -> Path:
    method = {
        "images": 2,
        "classes": 1,
        "top1": 0.5,
        "top5": 1.0,
        "top5_k": 1,
        "ece": 0.1,
        "per_class": [{"class": "red", "folder": "red", "images": 2, "correct": 1, "accuracy": 0.5}],
        "confused": [],
    }
    data = {"images": "imgs", "model": "tiny", "dualpt": method}
    for key, value in changes.items():
        if key.startswith("m_"):
            method[key[2:]] = value
        else:
            data[key] = value
    folder = tmp_path / "ev"
    folder.mkdir(exist_ok=True)
    (folder / "eval.json").write_text(json.dumps(data))
    return folder


SCRIPT = '<script>fetch("http://127.0.0.1:9/x")</script><img src=x onerror=alert(1)>'


def test_report_escapes_text_fields_of_eval_json(tmp_path):
    (tmp_path / "p").mkdir()
    folder = _eval_dir(tmp_path, images=SCRIPT, model=SCRIPT)
    result = invoke("report", "--project", tmp_path / "p", "--eval", folder, "--examples", 0)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "p" / "report.html").read_text()
    assert "<script" not in page and "<img src=x" not in page and "&lt;script&gt;" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


@pytest.mark.parametrize(
    "change, field",
    [
        ({"m_images": SCRIPT}, "dualpt.images"),
        ({"m_classes": SCRIPT}, "dualpt.classes"),
        ({"gain_top1": "x"}, "gain_top1"),
        ({"m_per_class": None}, "dualpt.per_class"),
        ({"m_confused": [1]}, "dualpt.confused[0]"),
        ({"dualpt": [1]}, "dualpt should be an object"),
        ({"dualpt": None}, "no results"),
    ],
)
def test_report_refuses_malformed_eval_json(tmp_path, change, field):
    (tmp_path / "p").mkdir()
    folder = _eval_dir(tmp_path, **change)
    result = invoke("report", "--project", tmp_path / "p", "--eval", folder, "--examples", 0)
    one_line_error(result, "eval.json", field)
    assert not (tmp_path / "p" / "report.html").exists()


# ---------------------------------------------------------------------------------------------------------
# 6. a $ in a class or compare name is drawn as it is (matplotlib's mathtext would fail on it)

MATH = r"a $\bad{$ b"


def test_dollar_in_class_names_draws(tmp_path):
    import torch

    from dualpt_cli.pictures import plots

    png = plots.confusion_png(torch.tensor([[2, 0], [1, 1]]), [MATH, "b$"], MATH)
    assert png.startswith(b"\x89PNG")
    per_class = {"dualpt": [{"class": MATH, "accuracy": 0.5}, {"class": "$x$", "accuracy": 1.0}]}
    assert plots.per_class_png(per_class, {"dualpt": MATH}).startswith(b"\x89PNG")


def test_dollar_in_compare_names_draws():
    from types import SimpleNamespace

    from dualpt_cli.pictures import plots

    rows = [SimpleNamespace(method=MATH, shots=s, mean=0.5, std=0.1, best=s == 2, runs=1) for s in (1, 2)]
    assert plots.compare_png({MATH: rows}, title=MATH).startswith(b"\x89PNG")
