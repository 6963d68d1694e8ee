"""Pictures on disk and the HTML report: curves.png, eval --plot, dualpt report (and Chromium opening it)."""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.core.project import Project
from dualpt_cli.model.calibration import ReliabilityBin
from dualpt_cli.pictures import explainplot, plots
from dualpt_cli.pictures.figures import curves_title, read_train_log
from dualpt_cli.pictures.plots import (
    accuracy_order,
    confusion_png,
    curve_panels,
    curve_series,
    curves_png,
    per_class_png,
    reliability_png,
    sparse_ticks,
)
from dualpt_cli.pictures.report import CSP, pick_examples
from dualpt_cli.predict import explain as explain_mod
from dualpt_cli.predict.explain import ExplainConfig, explain_images
from imagegen import make_image, make_image_folder
from test_explain import _classifier, _dominant, png_size
from trained import TRAINED_CLASSES

runner = CliRunner()


# ---------------------------------------------------------------------------------------------------------
# training curves


def test_curves_tolerate_missing_and_unknown_keys(tmp_path):
    log = tmp_path / "train_log.jsonl"
    lines = [
        {"epoch": 1, "loss": 2.0, "loss_img": 2.1, "loss_llm": 0.5, "acc": 0.3, "lr": 1e-5},
        {"epoch": 2, "loss": 1.5, "loss_img": 1.6, "acc": 0.5, "lr": 2e-3, "val_acc": 0.4, "plan_entropy": 3.1},
        {
            "epoch": 3,
            "loss": 1.0,
            "acc": 0.7,
            "lr": 1e-3,
            "val_acc": None,
            "zero_shot_acc": 0.45,
            "plan_entropy": 2.9,
            "note": "text",
            "flag": True,
            "seconds": 1.5,
            "match_outer_iters": 3,
        },
    ]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"epoch": 4, "loss": 0.9, "ac')  # cut off
    records = read_train_log(log)
    assert len(records) == 3
    series = curve_series(records)
    assert series["val_acc"] == [(2.0, 0.4)] and "note" not in series and "flag" not in series
    panels = {title: keys for title, _, keys in curve_panels(series)}
    assert panels == {
        "loss": ["loss", "loss_img", "loss_llm"],
        "accuracy": ["acc", "val_acc", "zero_shot_acc"],
        "learning rate": ["lr"],
        "plan entropy": ["plan_entropy"],
    }
    assert png_size(curves_png(records)) == (1200, 680)  # 2 x 2 panels of 6.0 (legend beside) x 3.4 in at 100 dpi
    assert png_size(curves_png([{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}])) == (600, 340)
    with pytest.raises(ValueError, match="no loss"):
        curves_png([{"epoch": 1, "seconds": 1.0}])


# ---------------------------------------------------------------------------------------------------------
# every picture reads at a glance: nothing clipped, no legend over the data, every labelled mark in a legend


def drawn(monkeypatch, module=plots) -> list:
    """The matplotlib figures ``module``'s functions draw from now on (their PNG bytes are still made)."""
    figures: list = []
    real = module._png
    monkeypatch.setattr(module, "_png", lambda fig: figures.append(fig) or real(fig))
    return figures


def assert_reads_at_a_glance(fig) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays the figure out (constrained layout) as savefig did
    renderer = canvas.get_renderer()
    box = fig.bbox
    parts = [(ax.get_title() or ax.get_ylabel(), ax.get_tightbbox(renderer)) for ax in fig.axes]  # drawn ticks only
    parts += [(t.get_text(), t.get_window_extent(renderer)) for t in fig.texts if t.get_text().strip()]
    parts += [(fig.get_suptitle(), fig._suptitle.get_window_extent(renderer))] if fig._suptitle else []
    parts += [("figure legend", leg.get_window_extent(renderer)) for leg in fig.legends]
    for name, ext in parts:
        inside = box.x0 - 1 <= ext.x0 and ext.x1 <= box.x1 + 1 and box.y0 - 1 <= ext.y0 and ext.y1 <= box.y1 + 1
        assert inside, f"clipped: {name!r} at {ext} in {box}"
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    shown = {t.get_text() for leg in legends for t in leg.get_texts()}
    for ax in fig.axes:
        if not ax.has_data():
            continue
        for leg in legends:
            assert not leg.get_window_extent(renderer).overlaps(ax.bbox), f"legend over {ax.get_title()!r}"
        labels = ax.get_legend_handles_labels()[1]
        assert set(labels) <= shown, f"marks without a legend entry: {set(labels) - shown}"


DEMO_LOG = [  # a noisy loss that fills its panel, as a 4-shot run's does (the legend used to sit on it)
    {"epoch": e, "loss": 0.05 + 0.04 * (e % 3), "loss_img": 0.06 + 0.05 * (e % 3), "loss_llm": 1e-3,
     "acc": 0.96 + 0.04 * (e % 2), "lr": 2e-3 * (1 - e / 101), "plan_entropy": 0.99999}
    for e in range(1, 101)
]  # fmt: skip


def test_curves_read_at_a_glance(monkeypatch):
    figures = drawn(monkeypatch)
    curves_png(DEMO_LOG, "training curves: dualpt, 4 shots per class of train, seed 1")
    (fig,) = figures
    assert_reads_at_a_glance(fig)
    assert fig.get_suptitle() == "training curves: dualpt, 4 shots per class of train, seed 1"
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert [t.get_text() for t in panels["loss"].get_legend().get_texts()] == [
        "loss (minimised)",
        "loss_img (cross-entropy)",
        "loss_llm (to descriptions)",
    ]
    accuracy = panels["accuracy"]
    assert accuracy.get_ylim() == (-0.02, 1.02)  # its whole range, as a percentage like the tables
    assert accuracy.yaxis.get_major_formatter()(1.0, 0) == "100%"
    assert panels["plan entropy"].get_ylim() == (-0.02, 1.02)
    assert panels["learning rate"].get_yscale() == "log"


def test_curves_title_names_the_run(tmp_path):
    project = Project(tmp_path)
    assert curves_title(project) == ""  # no run_config.json: the curves still draw, untitled
    project.run_config.write_text(json.dumps({"images": "/data/birds/train", "shots": 4, "seed": 2, "method": "coop"}))
    assert curves_title(project) == "training curves: coop, 4 shots per class of train, seed 2"
    project.run_config.write_text('{"dataset": "coop:/data/caltech-101", "shots": 16, "method": "dualpt"}')
    assert curves_title(project) == "training curves: dualpt, 16 shots per class of caltech-101"
    project.run_config.write_text("[1, 2]")
    assert curves_title(project) == ""


def test_eval_pictures_read_at_a_glance(monkeypatch):
    figures = drawn(monkeypatch)
    names = ["green circle", "green square", "blue square", "blue star", "red circle", "red star"]
    per_class = {  # two classes near the top of the axis, where the legend used to be drawn
        m: [{"class": n, "accuracy": a} for n, a in zip(names, acc)]
        for m, acc in (("dualpt", [0.85, 0.9, 1, 1, 1, 1]), ("zero_shot", [0.9, 0.8, 1, 1, 1, 1]))
    }
    per_class_png(per_class, {"dualpt": "DUAL-PT", "zero_shot": "zero-shot CLIP"}, "test")
    bins = [ReliabilityBin(k / 15, (k + 1) / 15, 0, float("nan"), float("nan")) for k in range(15)]
    bins[7] = ReliabilityBin(7 / 15, 8 / 15, 1, 0.5, 1.0)  # a confident bin at the left, up to the top
    bins[14] = ReliabilityBin(14 / 15, 1.0, 97, 0.99, 0.98)
    reliability_png(bins, 0.049, "DUAL-PT on test")
    confusion_png(torch.tensor([[17, 3], [2, 18]]), names[:2], "DUAL-PT on test")
    bars, diagram, matrix = figures
    for fig in figures:
        assert_reads_at_a_glance(fig)
    (ax,) = bars.axes
    assert ax.get_title() == "per-class accuracy on test, 6 classes, sorted by DUAL-PT (worst first)"
    assert ax.get_ylim() == (0.0, 1.02) and ax.yaxis.get_major_formatter()(0.5, 0) == "50%"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["DUAL-PT", "zero-shot CLIP"]
    assert diagram.axes[0].get_title() == "DUAL-PT on test: ECE 4.9% over 98 images, 15 bins"
    legend = {t.get_text() for leg in diagram.legends for t in leg.get_texts()}
    assert legend == {"accuracy", "gap to mean confidence", "perfect calibration"}
    assert matrix.axes[0].get_title().startswith("DUAL-PT on test: 40 images, 2 classes")
    assert matrix.axes[1].get_ylabel() == "share of the true class's images"  # the colour bar, in percent
    assert matrix.axes[1].yaxis.get_major_formatter()(1.0, 0) == "100%"


def test_explained_picture_reads_at_a_glance(tiny_vit, tmp_path, monkeypatch):
    clf = _classifier(tiny_vit)
    Z = _dominant(clf, 0, 3, (0, clf.bb.grid[1] - 1))
    monkeypatch.setattr(explain_mod, "load_classifier", lambda *a, **k: clf)
    monkeypatch.setattr(clf.bb, "encode_images", lambda x: (Z.mean(1), Z))
    path = tmp_path / "img.png"
    make_image((200, 40, 40), size=80).save(path)
    (expl,) = list(explain_images(ExplainConfig(inputs=[str(path)], classes=["class 0", "class 1"])))
    figures = drawn(monkeypatch, explainplot)
    explainplot.explanation_png(expl)
    (fig,) = figures
    assert_reads_at_a_glance(fig)
    maps = [ax for ax in fig.axes if len(ax.images) == 2]  # the image, a prompt's plan over it
    assert len(maps) == 2 * 4
    for ax in maps:
        photo, heat = ax.images
        assert heat.get_extent() == photo.get_extent()  # the plan covers the image's pixels, no strip beside
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "plan mass (x uniform)"]
    assert len(bars) == 2  # a colour bar per explained class: what the colours mean
    assert all(bar.get_ylim()[0] == 0.0 and bar.get_ylim()[1] >= 2.0 for bar in bars)  # uniform (1) mid-scale


def test_train_writes_curves_and_report_redraws_them(tiny_rn, tmp_path):
    make_image_folder("images", per_class=3)
    result = runner.invoke(
        app,
        [
            "train",
            "images",
            "--shots",
            "2",
            "--model",
            tiny_rn,
            "--epochs",
            "2",
            "--precision",
            "fp32",
            "--project",
            "proj",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    curves = Path("proj/curves.png")
    assert json.loads(result.stdout)["curves"] == str(curves)
    assert png_size(curves) == (1200, 680)  # loss, accuracy, learning rate
    curves.unlink()
    result = runner.invoke(app, ["report", "--project", "proj", "--examples", "0"])
    assert result.exit_code == 0, result.output
    assert png_size(curves) == (1200, 680)


# ---------------------------------------------------------------------------------------------------------
# eval --plot


def _read_confusion(path: Path) -> tuple[list[str], torch.Tensor]:
    rows = list(csv.reader(path.open()))
    names = rows[0][1:]
    assert [r[0] for r in rows[1:]] == names
    return names, torch.tensor([[int(v) for v in r[1:]] for r in rows[1:]])


def test_eval_plot_counts_equal_evals_numbers(prompts, tmp_path):
    images = make_image_folder(tmp_path / "test", classes=TRAINED_CLASSES, per_class=4, seed=11)
    out = tmp_path / "plots"
    result = runner.invoke(
        app,
        ["eval", str(images), "--prompt-file", prompts, "--zero-shot", "--plot", str(out), "--json", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for method in ("dualpt", "zero_shot"):
        names, cm = _read_confusion(out / f"confusion_{method}.csv")
        m = report[method]
        assert int(cm.sum()) == m["images"] == 12
        for row in m["per_class"]:
            k = names.index(row["class"])
            assert int(cm[k].sum()) == row["images"] and int(cm[k, k]) == row["correct"]
        off = {(names[t], names[p]): int(cm[t, p]) for t in range(3) for p in range(3) if t != p and cm[t, p]}
        assert off == {(c["true"], c["predicted"]): c["count"] for c in m["confused"]}
        assert png_size(out / f"confusion_{method}.png") == (620, 500)
    assert png_size(out / "per_class.png") == (600, 420)
    saved = json.loads((out / "eval.json").read_text())
    assert saved["dualpt"] == report["dualpt"] and saved["zero_shot"] == report["zero_shot"]
    for method in ("dualpt", "zero_shot"):
        assert png_size(out / f"reliability_{method}.png") == (500, 640)
        bins = saved["reliability"][method]
        assert len(bins) == 15 and sum(b["count"] for b in bins) == 12
        full = [b for b in bins if b["count"]]
        assert all(b["lower"] < b["confidence"] <= b["upper"] for b in full)
        gap = sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in full) / 12
        assert gap == pytest.approx(report[method]["ece"], abs=1e-6)  # the JSON rounds to 6 decimals
        assert 0.0 <= report[method]["ece"] <= 1.0
    wrong = list(csv.DictReader((out / "mistakes.csv").open()))
    m = report["dualpt"]
    assert len(wrong) == saved["mistakes"]["count"] == m["images"] - sum(r["correct"] for r in m["per_class"])
    assert all(r["true"] != r["predicted"] and Path(r["image"]).parent.name == r["true"] for r in wrong)
    assert [float(r["prob"]) for r in wrong] == sorted((float(r["prob"]) for r in wrong), reverse=True)
    result = runner.invoke(app, ["eval", str(images), "--prompt-file", prompts, "--plot", str(out / "eval.json")])
    assert result.exit_code == 2 and "--plot" in result.output and "is a file" in result.output


def test_confusion_matrix_for_many_classes_is_sorted_and_sparsely_labelled():
    K = 120
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(K).repeat_interleave(5)
    pred = torch.where(
        torch.rand(len(labels), generator=gen) < 0.7, labels, torch.randint(K, labels.shape, generator=gen)
    )
    cm = torch.bincount(labels * K + pred, minlength=K * K).reshape(K, K)
    order = accuracy_order(cm)
    acc = (cm.diagonal() / cm.sum(1)).tolist()
    assert [acc[k] for k in order] == sorted(acc)
    png = confusion_png(cm, [f"class number {k}" for k in range(K)], "DUAL-PT")
    assert png_size(png) == (1930, 1810)  # (2.5 + 0.13 K + 1.2 colour bar) x (2.5 + 0.13 K) in at 100 dpi
    ticks = sparse_ticks(K, 40)
    assert len(ticks) <= 40 and ticks[0] == 0 and ticks[1] - ticks[0] == 3


# ---------------------------------------------------------------------------------------------------------
# the HTML report


@pytest.fixture
def report_project(trained, tmp_path) -> Path:
    """A copy of the trained project with an evaluation written by eval --plot."""
    project = tmp_path / "proj"
    shutil.copytree(trained[0] / "proj", project, ignore=shutil.ignore_patterns("cache", "checkpoint"))
    images = make_image_folder(tmp_path / "test", classes=TRAINED_CLASSES, per_class=2, seed=5)
    result = runner.invoke(
        app,
        [
            "eval",
            str(images),
            "--project",
            str(project),
            "--zero-shot",
            "--plot",
            str(project / "eval"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    return project


def _report(project: Path) -> str:
    result = runner.invoke(app, ["report", "--project", str(project), "--examples", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return (project / "report.html").read_text()


def test_report_is_one_self_contained_page(report_project):
    page = _report(report_project)
    for title in (
        "Run configuration",
        "Descriptions per class",
        "Training curves",
        "Evaluation",
        "What each prompt looks at",
        "zero-shot CLIP",
        "Most confused",
        "Last epoch",
        "<th>ECE</th>",
        "reliability diagram, DUAL-PT",
    ):
        assert title in page, title
    assert all(name in page for name in TRAINED_CLASSES)
    order = [page.index(f"<h2>{t}</h2>") for t in ("Evaluation", "What each prompt looks at", "Run configuration")]
    assert order == sorted(order)  # results before the configuration that produced them
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert (
        len(sources) == 1 + 5 + 2
    )  # curves; 2 confusion matrices, per-class bars, 2 reliability diagrams; 2 explained
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        png_size(base64.b64decode(src.split(",", 1)[1]))
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing fetched from anywhere
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_report_explains_the_worst_classes_mistakes(report_project):
    data = json.loads((report_project / "eval" / "eval.json").read_text())
    picked = pick_examples(Project(report_project), report_project / "eval", 2)
    assert len(picked) == 2
    wrong = {}
    for m in data["mistakes"]["most_confident"]:
        wrong.setdefault(m["true"], m["image"])
    worst = sorted(data["dualpt"]["per_class"], key=lambda r: r["accuracy"])[:2]
    for (image, selectors), row in zip(picked, worst):
        if row["folder"] in wrong:
            assert (image, selectors) == (wrong[row["folder"]], ["top", row["folder"]])
        else:
            assert Path(image).parent.name == row["folder"] and selectors == ["top"]


def test_report_errors(tmp_path):
    result = runner.invoke(app, ["report", "--project", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output
    (tmp_path / "p").mkdir()
    result = runner.invoke(app, ["report", "--project", str(tmp_path / "p"), "--eval", str(tmp_path)])
    assert result.exit_code == 2 and "has no eval.json" in result.output


# ---------------------------------------------------------------------------------------------------------
# the page in a real browser

PROBE = (
    "<script>window.addEventListener('load', () => document.body.setAttribute('data-probe', JSON.stringify("
    "Array.from(document.images, i => i.complete ? i.naturalWidth : -1))));</script>"
)
# what sticks out of the viewport: the page's scroll width, and every element past its right edge that no
# scrolling box holds (a table in its .scroll box may be wider; the page may not)
LAYOUT_PROBE = """<script>window.addEventListener('load', () => {
  const vw = window.innerWidth, out = [], range = document.createRange();
  const held = (el) => {
    for (let p = el; p && p !== document.body; p = p.parentElement)
      if (getComputedStyle(p).overflowX !== 'visible') return true;
    return false;
  };
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
  for (let node = walk.nextNode(); node; node = walk.nextNode()) {
    const text = node.nodeType === Node.TEXT_NODE;  // a long word overflows its box, not the box itself
    if (text) range.selectNodeContents(node);
    const r = text ? range.getBoundingClientRect() : node.getBoundingClientRect();
    if (r.width === 0 || (r.right <= vw + 0.5 && r.left >= -0.5)) continue;
    const box = text ? node.parentElement : node;
    if (!held(text ? box : box.parentElement))
      out.push(`${text ? node.textContent.slice(0, 40) : box.tagName} ${Math.round(r.left)}-${Math.round(r.right)}`);
  }
  parent.document.body.setAttribute('data-layout', JSON.stringify(
    {viewport: vw, scroll: document.documentElement.scrollWidth, out: out.slice(0, 20)}));
});</script>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("DUALPT_REQUIRE_CHROMIUM"):
        pytest.fail("DUALPT_REQUIRE_CHROMIUM is set (CI installed chromium) but no chromium is on PATH")
    pytest.skip("chromium is not installed and .ci/run could not install it (Debian: apt-get install chromium)")


@pytest.mark.slow
def test_report_opens_in_headless_chromium(report_project, tmp_path):
    browser = _chromium()
    page = _report(report_project)
    assert CSP in page  # scripts are blocked in the report itself: the probe runs in a copy without the policy
    probe = tmp_path / "probe.html"  # the report plus a script that records each image's decoded width
    probe.write_text(page.replace(CSP, "").replace("</body>", PROBE + "</body>"))
    blocked = tmp_path / "blocked.html"  # the same script in the report as written: the policy stops it
    blocked.write_text(page.replace("</body>", PROBE + "</body>"))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    dom = subprocess.run(
        [browser, *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    widths = json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', dom).group(1)))
    inert = subprocess.run(
        [browser, *flags, "--virtual-time-budget=5000", "--dump-dom", blocked.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "<body" in inert and 'data-probe="' not in inert  # no script ran in the report
    assert len(widths) == 8 and all(w > 0 for w in widths), widths  # every image decoded
    assert widths[7] == 1200  # the curves at their own width, after the 5 evaluation and 2 explained pictures
    text = re.sub(r"<[^>]+>", " ", dom)
    for words in ("Training curves", "DUAL-PT", "zero-shot CLIP", "Per class", "Run configuration"):
        assert words in text, words

    shot = tmp_path / "report.png"
    page_uri = (report_project / "report.html").as_uri()
    subprocess.run(
        [
            browser,
            *flags,
            "--hide-scrollbars",
            "--window-size=1280,2600",
            f"--screenshot={shot}",
            page_uri,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert png_size(shot) == (1280, 2600)
    from PIL import Image

    colours = Image.open(shot).convert("RGB").resize((64, 130)).getcolors(64 * 130)
    assert colours is not None and len(colours) > 20  # a drawn page (tables, curves), not a blank one

    # a phone and a laptop: the report in a frame of that width (headless windows are at least 500 px wide)
    framed = page.replace(CSP, "").replace("</body>", LAYOUT_PROBE + "</body>")
    for width in (400, 1280):
        frame = tmp_path / f"frame{width}.html"
        frame.write_text(
            f'<!doctype html><html><body style="margin:0"><iframe style="border:0;width:{width}px;height:3000px" '
            f'srcdoc="{html.escape(framed, quote=True)}"></iframe></body></html>'
        )
        dom = subprocess.run(
            [browser, *flags, "--window-size=1400,3000", "--virtual-time-budget=5000", "--dump-dom", frame.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        layout = json.loads(html.unescape(re.search(r'data-layout="([^"]*)"', dom).group(1)))
        assert layout["viewport"] == width, layout
        assert layout["scroll"] <= width and not layout["out"], layout  # nothing wider than the window
    narrow = tmp_path / "report400.png"  # the page as a phone shows it (--window-size below 500 works here)
    subprocess.run(
        [browser, *flags, "--hide-scrollbars", "--window-size=400,2600", f"--screenshot={narrow}", page_uri],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert png_size(narrow) == (400, 2600)
