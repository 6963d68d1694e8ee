"""The one-page HTML report of a project (the pictures it shows are written by :mod:`dualpt_cli.pictures.figures`).

The report is one self-contained HTML file: every picture is embedded as a ``data:`` URI and there is no
script, font or stylesheet from elsewhere, so it opens offline and can be mailed around. Its parts come from
the project folder (run_config.json, descriptions.json, train_log.jsonl, prompts.safetensors) and from the
folder ``dualpt eval --plot DIR`` wrote (eval.json and its PNGs).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.jsonshape import check_shape
from ..core.project import Project, atomic_write_text, output_path, read_json, resolve_project
from ..core.userfiles import Protected
from ..core.vocab import EVAL_TITLES as TITLES
from ..errors import DataError, DualptError, ProjectError
from .figures import CURVES, EVAL_JSON, PER_CLASS, read_eval, read_train_log, write_curves

if TYPE_CHECKING:
    from ..predict.explain import Explainer, ImageExplanation

# A report of files already written needs no torch, open_clip or matplotlib: the model loads only to explain
# images, and curves.png is drawn again only when train_log.jsonl is newer than it.

# ---------------------------------------------------------------------------------------------------------
# the HTML report


@dataclass
class ReportConfig:
    """Everything ``dualpt report`` needs."""

    project: str | None = None
    output: str | None = None  # HTML file (None: <project>/report.html)
    eval_dir: str | None = None  # folder written by eval --plot (None: <project>/eval when it has eval.json)
    examples: int = 4  # images to explain when none are named
    explain: list[str] = field(default_factory=list)  # images to explain (default: picked, see pick_examples)
    device: str = "auto"
    precision: str = "auto"


@dataclass
class ReportResult:
    path: Path
    curves: Path | None
    sections: list[str]
    notes: list[str]


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str) -> str:
    return f'<img src="{_data_uri(png)}" alt="{html.escape(alt)}">'


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    table = f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="scroll">{table}</div>'  # a table wider than a phone scrolls, not the page


def _pct(x: Any) -> str:
    return "-" if not isinstance(x, (int, float)) or x != x else f"{x:.1%}"


def _config_section(project: Project) -> str:
    if not project.run_config.is_file():
        return "<p>No run_config.json: this project was not trained yet.</p>"
    cfg = check_shape(read_json(project.run_config, "run config"), {}, project.run_config, "train again")
    rows = [[k, json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v] for k, v in cfg.items()]
    third = -(-len(rows) // 3)
    tables = [_table(["setting", "value"], rows[i : i + third], "config") for i in range(0, len(rows), third)]
    return f'<div class="columns">{"".join(tables)}</div>'


def _descriptions_section(project: Project) -> str:
    from ..data.descriptions import load_descriptions

    entries = load_descriptions(project)
    if not entries:
        return "<p>No descriptions.json: training ran without LLM context.</p>"
    rows = [[e["name"], e["folder"], e["status"], "; ".join(e["phrases"]) or "-"] for e in entries]
    return _table(["class", "folder", "status", "phrases"], rows, "descriptions")


def _curves_section(project: Project, notes: list[str]) -> tuple[str, Path | None]:
    try:
        records = read_train_log(project.train_log)
        path = project.root / CURVES
        if not _newer(path, project.train_log):
            path = write_curves(project, records)
    except ProjectError as exc:
        notes.append(str(exc))
        return f"<p>No curves: {html.escape(str(exc))}</p>", None
    last = records[-1]
    facts = [[k, _pct(v) if "acc" in k else (f"{v:.4g}" if isinstance(v, float) else v)] for k, v in last.items()]
    return _img(path.read_bytes(), "training curves") + "<h3>Last epoch</h3>" + _table(["", "value"], facts), path


def _newer(path: Path, than: Path) -> bool:
    """Whether ``path`` exists and was written after ``than`` (so drawing it again would give the same)."""
    try:
        return path.stat().st_mtime_ns > than.stat().st_mtime_ns
    except OSError:
        return False


def _eval_section(folder: Path | None) -> str:
    if folder is None or not (folder / EVAL_JSON).is_file():
        return (
            "<p>No evaluation: run <code>dualpt eval TEST_IMAGES --zero-shot --plot "
            "&lt;project&gt;/eval</code> first (or pass --eval DIR).</p>"
        )
    data = read_eval(folder)
    methods = [m for m in TITLES if isinstance(data.get(m), dict)]
    first = data[methods[0]]
    parts = [
        f"<p>{html.escape(str(data.get('images')))}: {html.escape(str(first['images']))} images, "
        f"{html.escape(str(first['classes']))} classes ({html.escape(str(data.get('model')))})</p>"
    ]
    parts.append(
        _table(
            ["method", "top-1", f"top-{first.get('top5_k', 5)}", "ECE"],
            [[TITLES[m], _pct(data[m]["top1"]), _pct(data[m]["top5"]), _pct(data[m].get("ece"))] for m in methods],
            "summary",
        )
    )
    if data.get("gain_top1") is not None:
        parts.append(f"<p>gain from training: {float(data['gain_top1']) * 100:+.1f} points top-1</p>")
    per = {m: {r["class"]: r for r in data[m]["per_class"]} for m in methods}
    rows = [
        [r["class"], r["images"], *[_pct(per[m].get(r["class"], {}).get("accuracy")) for m in methods]]
        for r in first["per_class"]
    ]
    parts.append("<h3>Per class</h3>" + _table(["class", "images", *[TITLES[m] for m in methods]], rows, "perclass"))
    confused = first.get("confused") or []
    if confused:
        parts.append(
            f"<h3>Most confused ({TITLES[methods[0]]})</h3>"
            + _table(
                ["true class", "predicted as", "images", "share"],
                [[c["true"], c["predicted"], c["count"], _pct(c["share_of_true"])] for c in confused],
            )
        )
    for pictures in (
        [(f"confusion_{m}.png", f"confusion matrix, {TITLES[m]}") for m in methods],
        [(PER_CLASS, "per-class accuracy")],
        [(f"reliability_{m}.png", f"reliability diagram, {TITLES[m]}") for m in methods],
    ):  # side by side where the page is wide enough
        row = [_img((folder / name).read_bytes(), alt) for name, alt in pictures if (folder / name).is_file()]
        parts.append(f'<div class="pictures">{"".join(row)}</div>')
    return "\n".join(parts)


def pick_examples(project: Project, eval_dir: Path | None, n: int) -> list[tuple[str, list[str]]]:
    """Images to explain, each with the classes to show: the most confident mistake in each of the ``n`` worst
    classes of the evaluation (its prediction and its true class: where the classifier errs), else one image
    of each of those classes, else one training image of each of the first ``n`` classes of split.json."""
    from ..data.images import scan_image_folder

    if n <= 0:
        return []
    if eval_dir is not None and (eval_dir / EVAL_JSON).is_file():
        data = read_eval(eval_dir)
        main = data.get("dualpt") or data.get("zero_shot") or {}
        worst = [r["folder"] for r in sorted(main.get("per_class", []), key=lambda r: r["accuracy"])][:n]
        wrong: dict[str, str] = {}
        for m in (data.get("mistakes") or {}).get("most_confident") or []:
            wrong.setdefault(m["true"], m["image"])
        try:
            folders = scan_image_folder(data["images"])
        except (DualptError, KeyError, TypeError):
            folders = {}
        picked = []
        for folder in worst:
            if folder in wrong and Path(wrong[folder]).is_file():
                picked.append((wrong[folder], ["top", folder]))
            elif folders.get(folder):
                picked.append((str(folders[folder][0]), ["top"]))
        if picked:
            return picked
    if project.split.is_file():
        split = read_json(project.split, "few-shot split")
        root = Path(split.get("images", "."))
        out = []
        for files in split.get("train", {}).values():
            if files and (root / files[0]).is_file():
                out.append((str(root / files[0]), ["top"]))
            if len(out) == n:
                break
        return out
    return []


def _explain_section(cfg: ReportConfig, project: Project, eval_dir: Path | None, notes: list[str]) -> str:
    examples = [(p, ["top"]) for p in cfg.explain] or pick_examples(project, eval_dir, cfg.examples)
    if not examples:
        return "<p>No images to explain (pass --explain IMAGE).</p>"
    if not project.prompts.is_file():
        return "<p>No prompts.safetensors: nothing to explain yet.</p>"
    from ..predict.explain import ExplainConfig, Explainer
    from .explainplot import explanation_png

    parts = [
        "<p>Each row: the image as CLIP saw it, then where each prompt of a class puts its mass (the "
        "graph-matching plan over the local features), with the prompt's share of the class score and the "
        "nearest description phrase. For a misclassified image the second row is its true class.</p>"
    ]
    try:
        explainer = Explainer(
            ExplainConfig(inputs=[], project=str(project.root), device=cfg.device, precision=cfg.precision)
        )
        explained = [_explain_one(explainer, Path(path), selectors) for path, selectors in examples]
    except DualptError as exc:  # e.g. the model cannot be loaded here: the rest of the report still stands
        notes.append(f"no explained images: {exc}")
        return f"<p>No explained images: {html.escape(str(exc))}</p>"
    for expl in explained:
        if expl.error:
            notes.append(f"{expl.image}: {expl.error}")
            continue
        truth = f"; true class {html.escape(expl.classes[1].name)}" if len(expl.classes) > 1 else ""
        parts.append(
            f"<figure>{_img(explanation_png(expl), f'explained {expl.image.name}')}"
            f"<figcaption>{html.escape(str(expl.image))}: predicted {html.escape(expl.prediction or '')}"
            f" ({_pct(expl.prob)}){truth}</figcaption></figure>"
        )
    return "\n".join(parts)


def _explain_one(explainer: Explainer, path: Path, selectors: list[str]) -> ImageExplanation:
    try:
        return explainer.image(path, selectors)
    except DataError:  # a true class the prompt file does not have (base-to-new evaluation)
        return explainer.image(path, ["top"])


# inert whatever the project's files hold: no script runs, nothing is fetched (pictures are data: URIs)
CSP = (
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
    "style-src 'unsafe-inline'\">"
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.scroll { max-width: 100%; overflow-x: auto; }
code, figcaption, p, table.config td + td, table.descriptions td:last-child { overflow-wrap: anywhere; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
nav a { margin-right: 1em; display: inline-block; } section { margin-bottom: 2em; }
.columns { display: flex; flex-wrap: wrap; gap: 0 1.5em; align-items: flex-start; }
.columns > * { min-width: 0; }
.pictures { display: flex; flex-wrap: wrap; gap: 0 1.5em; align-items: flex-start; }
"""


def build_report(cfg: ReportConfig) -> ReportResult:
    """Write the HTML report of a project; see the module doc for where each part comes from."""
    project = resolve_project(cfg.project)
    if not project.root.is_dir():
        raise ProjectError(f"project folder {project.root} does not exist; pass --project DIR")
    if cfg.examples < 0:
        raise DataError(f"--examples must be >= 0, got {cfg.examples}")
    eval_dir = Path(cfg.eval_dir) if cfg.eval_dir else project.root / "eval"
    if cfg.eval_dir and not (eval_dir / EVAL_JSON).is_file():
        raise DataError(f"--eval {eval_dir} has no {EVAL_JSON}; write it with dualpt eval IMAGES --plot {eval_dir}")
    output = Path(cfg.output) if cfg.output else project.root / "report.html"
    if output.is_dir():
        raise DataError(f"--output {output} is a folder; give a file name such as report.html")
    inputs: list[str | Path] = [eval_dir / EVAL_JSON, *cfg.explain]
    if output_path(output, "--output", project.owned() + Protected.inputs(inputs)) is None:  # no device, no input
        raise DataError(f"--output {output}: the report is a file; give a file name such as report.html")
    notes: list[str] = []
    curves_html, curves = _curves_section(project, notes)
    sections = [  # results first; what produced them after
        ("eval", "Evaluation", _eval_section(eval_dir if eval_dir.is_dir() else None)),
        ("explain", "What each prompt looks at", _explain_section(cfg, project, eval_dir, notes)),
        ("curves", "Training curves", curves_html),
        ("descriptions", "Descriptions per class", _descriptions_section(project)),
        ("config", "Run configuration", _config_section(project)),
    ]
    nav = "".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title, _ in sections)
    body = "\n".join(
        f'<section id="{key}"><h2>{html.escape(title)}</h2>\n{content}\n</section>' for key, title, content in sections
    )
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">{CSP}'
        f"<title>dualpt report: {html.escape(str(project.root))}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>dualpt report</h1><p>project <code>{html.escape(str(project.root.resolve()))}</code>, "
        f"written {when}</p><nav>{nav}</nav>\n{body}\n</body></html>\n"
    )
    atomic_write_text(output, page)
    return ReportResult(path=output, curves=curves, sections=[k for k, _, _ in sections], notes=notes)
