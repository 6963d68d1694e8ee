"""The terminal tables at 80 and 60 columns: no accuracy, class or method is ever cut to "…".

Long class folders (``staffordshire_bull_terrier``), paths and method names are what a narrow terminal cut:
predict once showed the predicted class as ``staffordshire_bull_te…`` at 80 columns, eval's base-to-new table
``zero-sh…`` at 60, compare ``linear-pr…`` at 80 and ``dualpt runs`` lost its eval column at 60.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from rich.console import Console

from dualpt_cli.compare.grid import CellResult, aggregate
from dualpt_cli.describe.ask import DescribeReport
from dualpt_cli.predict.evaluate import EvalResult
from dualpt_cli.ui import console as ui
from dualpt_cli.ui import describe as describe_ui
from dualpt_cli.ui import evaluate as evaluate_ui
from dualpt_cli.ui.compare import compare_table
from dualpt_cli.ui.predict import render_table

CLASSES = ["american pit bull terrier", "Abyssinian", "staffordshire_bull_terrier", "great pyrenees"]
WIDTHS = [80, 60]


@pytest.fixture
def screen(monkeypatch):
    """A recording console of the given width in place of the terminal; its text once printed."""

    def make(width: int) -> Console:
        out = Console(width=width, record=True, file=open(Path("screen.txt"), "w"))  # noqa: SIM115
        monkeypatch.setattr(ui, "console", out)
        return out

    return make


def shown(out: Console, width: int) -> str:
    text = out.export_text()
    assert "…" not in text, text
    assert max(map(len, text.splitlines())) <= width, text
    return text


def unfolded(text: str) -> str:
    """Each column's text read top to bottom, spaces dropped, one column per line: a cell folded or wrapped over
    lines reads whole again (look values up without their spaces)."""
    import re

    tables: list[list[list[str]]] = [[]]  # the lines of each table, split at its column rules
    for line in text.splitlines():
        if re.search("[│┃]", line):
            tables[-1].append(re.split("[│┃]", line))
        elif not re.search("[\u2500-\u257f]", line) and tables[-1]:  # no rule at all: between two tables
            tables.append([])
    columns = ("".join(r[j].replace(" ", "") for r in rows) for rows in tables if rows for j in range(len(rows[0])))
    return "\n".join(columns)


def _metrics(top1: float, split: bool) -> dict:
    per_class = [
        {"class": c, "folder": c.replace(" ", "_"), "images": 40, "correct": int(40 * a), "accuracy": a}
        for c, a in zip(CLASSES, (0.875, 1.0, 0.6, 0.975))
    ]
    confused = [{"true": CLASSES[2], "predicted": CLASSES[0], "count": 16, "share_of_true": 0.4}]
    out = {"images": 160, "classes": 4, "top1": top1, "top5": 1.0, "top5_k": 3, "ece": 0.036}
    out |= {"per_class": per_class, "confused": confused}
    if split:
        out |= {"base": {"accuracy": 0.951}, "new": {"accuracy": 0.702}, "H": 0.808}
    return out


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("split", [False, True], ids=["all-classes", "base-to-new"])
def test_eval_tables(screen, width, split):
    out = screen(width)
    results = {"dualpt": _metrics(0.958, split), "zero_shot": _metrics(0.938, split)}
    evaluate_ui.show(EvalResult("/data/oxford_pets/test", None, "ViT-B-16", [], results))
    text = unfolded(shown(out, width))
    for value in (
        "95.8%",
        "93.8%",
        "100.0%",
        "3.6%",
        "87.5%",
        "60.0%",
        "97.5%",
        "40.0%",
        *(["70.2%", "80.8%"] * split),
    ):
        assert value in text, value
    for name in ("zero-shotCLIP", "DUAL-PT", "staffordshire_bull_terrier", "americanpitbullterrier"):
        assert name in text, name


@pytest.mark.parametrize("width", WIDTHS)
def test_predict_table(screen, width):
    out = screen(width)
    image = "/data/oxford_pets/test/staffordshire_bull_terrier/staffordshire_bull_terrier_101.jpg"
    top = [
        {"class": CLASSES[2], "prob": 0.573},
        {"class": CLASSES[0], "prob": 0.401},
        {"class": "Abyssinian", "prob": 0.01},
    ]
    render_table([{"image": image, "class": CLASSES[2], "prob": 0.573, "top_k": top, "error": None}], 3, sys.stdout)
    text = unfolded(shown(out, width))
    for value in (image, "staffordshire_bull_terrier", "57.3%", "americanpitbullterrier40.1%,Abyssinian1.0%"):
        assert value in text, value


@pytest.mark.parametrize("width", WIDTHS)
def test_describe_table(screen, width):
    out = screen(width)
    entries = [
        {"name": c, "folder": c.replace(" ", "_"), "status": "ok", "phrases": ["a", "b"], "error": None}
        for c in CLASSES
    ]
    report = DescribeReport("ollama", "llama3.1:8b", Path("proj/descriptions.json"), entries, [], [])
    report.asked = [e["folder"] for e in entries]
    describe_ui.print_report(report, json_out=False)
    text = unfolded(shown(out, width))
    assert "staffordshire_bull_terrier" in text and "american_pit_bull_terrier" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_table(width):
    methods = ["zero-shot", "coop", "plot", "dualpt"] + (["linear-probe"] if width == 80 else [])
    cells = [
        CellResult(m, k, seed, "ok", 0.9 + 0.01 * seed + 0.001 * i)
        for i, m in enumerate(methods)
        for k in (1, 2, 4, 8, 16)
        for seed in (1, 2, 3)
    ]
    cells.append(CellResult("plot", 16, 4, "failed", error="out of memory"))
    out = Console(width=width, record=True, file=open(Path("screen.txt"), "w"))  # noqa: SIM115
    out.print(compare_table(aggregate(cells), "dualpt compare: oxford_pets", width=width))
    text = shown(out, width)
    for method in methods:
        assert f"│ {method} " in text, method  # whole, on one line
    assert text.count("± 1.0") == 5 * len(methods) and "1failed" in unfolded(text)  # every mean and spread
    assert text.count("★") == 5
