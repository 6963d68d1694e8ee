"""Pictures written to disk (explained images, curves.png, eval plots) and the one-page HTML report.

The report is one self-contained HTML file: every picture is embedded as a ``data:`` URI and there is no
script, font or stylesheet from elsewhere, so it opens offline and can be mailed around. Its parts come from
the project folder (run_config.json, descriptions.json, train_log.jsonl, prompts.safetensors) and from the
folder ``dualpt eval --plot DIR`` wrote (eval.json and its PNGs).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import plots
from .data import expand_inputs
from .errors import DataError, DualptError, ProjectError
from .evaluate import TITLES
from .explain import ExplainConfig, Explainer, ImageExplanation, explain_images, picture_names
from .project import Project, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json, resolve_project

CURVES = "curves.png"
EVAL_JSON = "eval.json"
PER_CLASS = "per_class.png"
MISTAKES = "mistakes.csv"
MISTAKES_KEPT = 100  # most confident mistakes listed in eval.json (mistakes.csv has all)


# ---------------------------------------------------------------------------------------------------------
# files


def writable_folder(folder: str | Path, flag: str) -> Path:
    """``folder``, created if needed; a clear error naming ``flag`` if it is a file or cannot be made."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{flag} {folder} is a file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {flag} folder {folder}: {exc.strerror}") from None
    return folder


def write_explanations(cfg: ExplainConfig, out_dir: str | Path | None,
                       on_image: Callable[[ImageExplanation, Path | None], None] | None = None
                       ) -> list[ImageExplanation]:
    """Explain every input; with ``out_dir``, write one PNG per readable image there (named by
    :func:`picture_names`). ``on_image(explanation, png or None)`` after each image."""
    paths = expand_inputs(cfg.inputs)  # bad paths fail before the model loads
    names = picture_names(paths)
    folder = writable_folder(out_dir, "--output") if out_dir is not None else None
    items = []
    for i, expl in enumerate(explain_images(cfg, paths)):
        png = None
        if folder is not None and expl.error is None:
            png = folder / names[i]
            atomic_write_bytes(png, plots.explanation_png(expl))
        items.append(expl)
        if on_image:
            on_image(expl, png)
    return items


def read_train_log(path: Path) -> list[dict[str, Any]]:
    """The log's lines as dicts; a line cut off by an interrupt (or otherwise unreadable) is skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProjectError(f"{path} does not exist; run dualpt train first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"cannot read {path}: {exc}") from None
    records = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def write_curves(project: Project, records: list[dict[str, Any]] | None = None) -> Path:
    """Draw ``curves.png`` in the project from its ``train_log.jsonl`` (or from ``records`` read from it)."""
    records = read_train_log(project.train_log) if records is None else records
    try:
        png = plots.curves_png(records)
    except ValueError as exc:
        raise ProjectError(f"{project.train_log}: {exc}") from None
    path = project.root / CURVES
    atomic_write_bytes(path, png)
    return path


def write_eval_plots(result, folder: str | Path) -> list[Path]:
    """``dualpt eval --plot DIR``: per method a confusion-matrix PNG and CSV (the counts), the per-class
    accuracy bars (zero-shot beside DUAL-PT), and eval.json (what ``--json`` prints) for the report."""
    folder = writable_folder(folder, "--plot")
    names = [c.name for c in result.classes]
    written = []
    for method in result.logits:
        cm = result.confusion(method)
        png = folder / f"confusion_{method}.png"
        atomic_write_bytes(png, plots.confusion_png(cm, names, TITLES[method]))
        buf = io.StringIO()
        table = csv.writer(buf, lineterminator="\n")
        table.writerow(["true \\ predicted", *names])
        for name, row in zip(names, cm.tolist()):
            table.writerow([name, *row])
        atomic_write_text(folder / f"confusion_{method}.csv", buf.getvalue())
        written += [png, folder / f"confusion_{method}.csv"]
    per_class = {m: r["per_class"] for m, r in result.results.items()}
    atomic_write_bytes(folder / PER_CLASS, plots.per_class_png(per_class, TITLES))
    method = "dualpt" if "dualpt" in result.logits else "zero_shot"
    wrong = mistakes(result, method)
    buf = io.StringIO()
    table = csv.DictWriter(buf, ["image", "true", "predicted", "prob"], lineterminator="\n")
    table.writeheader()
    table.writerows(wrong)
    atomic_write_text(folder / MISTAKES, buf.getvalue())
    data = {**result.to_json(), "images": str(Path(result.images).resolve()),
            "mistakes": {"method": method, "count": len(wrong), "most_confident": wrong[:MISTAKES_KEPT]}}
    atomic_write_json(folder / EVAL_JSON, data)
    return [*written, folder / PER_CLASS, folder / MISTAKES, folder / EVAL_JSON]


def mistakes(result, method: str) -> list[dict[str, Any]]:
    """The images ``method`` got wrong, most confident first: image (absolute), true and predicted class
    folders, probability of the prediction."""
    probs = result.logits[method].float().softmax(dim=1)  # (I, K)
    p, pred = probs.max(dim=1)
    out = [{"image": str(Path(path).resolve()), "true": result.classes[t].folder,
            "predicted": result.classes[k].folder, "prob": round(float(q), 6)}
           for path, t, k, q in zip(result.paths, result.labels.tolist(), pred.tolist(), p.tolist()) if t != k]
    return sorted(out, key=lambda r: -r["prob"])


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
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _pct(x: Any) -> str:
    return "-" if not isinstance(x, (int, float)) or x != x else f"{x:.1%}"


def _config_section(project: Project) -> str:
    if not project.run_config.is_file():
        return "<p>No run_config.json: this project was not trained yet.</p>"
    cfg = read_json(project.run_config, "run config")
    rows = [[k, json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v] for k, v in cfg.items()]
    third = -(-len(rows) // 3)
    tables = [_table(["setting", "value"], rows[i : i + third], "config") for i in range(0, len(rows), third)]
    return f'<div class="columns">{"".join(tables)}</div>'


def _descriptions_section(project: Project) -> str:
    from .describe import load_descriptions

    entries = load_descriptions(project)
    if not entries:
        return "<p>No descriptions.json: training ran without LLM context.</p>"
    rows = [[e["name"], e["folder"], e["status"], "; ".join(e["phrases"]) or "-"] for e in entries]
    return _table(["class", "folder", "status", "phrases"], rows, "descriptions")


def _curves_section(project: Project, notes: list[str]) -> tuple[str, Path | None]:
    try:
        records = read_train_log(project.train_log)
        path = write_curves(project, records)
    except ProjectError as exc:
        notes.append(str(exc))
        return f"<p>No curves: {html.escape(str(exc))}</p>", None
    last = records[-1]
    facts = [[k, _pct(v) if "acc" in k else (f"{v:.4g}" if isinstance(v, float) else v)]
             for k, v in last.items()]
    return _img(path.read_bytes(), "training curves") + "<h3>Last epoch</h3>" + _table(["", "value"], facts), path


def _eval_section(folder: Path | None) -> str:
    if folder is None or not (folder / EVAL_JSON).is_file():
        return ("<p>No evaluation: run <code>dualpt eval TEST_IMAGES --zero-shot --plot "
                "&lt;project&gt;/eval</code> first (or pass --eval DIR).</p>")
    data = read_json(folder / EVAL_JSON, "eval results")
    methods = [m for m in TITLES if isinstance(data.get(m), dict)]
    if not methods:
        raise ProjectError(f"{folder / EVAL_JSON} has no results; run dualpt eval --plot again")
    first = data[methods[0]]
    parts = [f"<p>{html.escape(str(data.get('images')))}: {first['images']} images, {first['classes']} classes "
             f"({html.escape(str(data.get('model')))})</p>"]
    parts.append(_table(["method", "top-1", f"top-{first.get('top5_k', 5)}"],
                        [[TITLES[m], _pct(data[m]["top1"]), _pct(data[m]["top5"])] for m in methods], "summary"))
    if "gain_top1" in data:
        parts.append(f"<p>gain from training: {data['gain_top1'] * 100:+.1f} points top-1</p>")
    per = {m: {r["class"]: r for r in data[m]["per_class"]} for m in methods}
    rows = [[r["class"], r["images"], *[_pct(per[m].get(r["class"], {}).get("accuracy")) for m in methods]]
            for r in first["per_class"]]
    parts.append("<h3>Per class</h3>" + _table(["class", "images", *[TITLES[m] for m in methods]], rows, "perclass"))
    confused = first.get("confused") or []
    if confused:
        parts.append(f"<h3>Most confused ({TITLES[methods[0]]})</h3>" + _table(
            ["true class", "predicted as", "images", "share"],
            [[c["true"], c["predicted"], c["count"], _pct(c["share_of_true"])] for c in confused]))
    for name, alt in [(f"confusion_{m}.png", f"confusion matrix, {TITLES[m]}") for m in methods] + \
                     [(PER_CLASS, "per-class accuracy")]:
        if (folder / name).is_file():
            parts.append(_img((folder / name).read_bytes(), alt))
    return "\n".join(parts)


def pick_examples(project: Project, eval_dir: Path | None, n: int) -> list[tuple[str, list[str]]]:
    """Images to explain, each with the classes to show: the most confident mistake in each of the ``n`` worst
    classes of the evaluation (its prediction and its true class: where the classifier errs), else one image
    of each of those classes, else one training image of each of the first ``n`` classes of split.json."""
    from .data import scan_image_folder

    if n <= 0:
        return []
    if eval_dir is not None and (eval_dir / EVAL_JSON).is_file():
        data = read_json(eval_dir / EVAL_JSON, "eval results")
        main = data.get("dualpt") or data.get("zero_shot") or {}
        worst = [r["folder"] for r in sorted(main.get("per_class", []), key=lambda r: r["accuracy"])][:n]
        wrong: dict[str, str] = {}
        for m in (data.get("mistakes") or {}).get("most_confident", []):
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
    parts = ["<p>Each row: the image as CLIP saw it, then where each prompt of a class puts its mass (the "
             "graph-matching plan over the local features), with the prompt's share of the class score and the "
             "nearest description phrase. For a misclassified image the second row is its true class.</p>"]
    try:
        explainer = Explainer(ExplainConfig(inputs=[], project=str(project.root), device=cfg.device,
                                            precision=cfg.precision))
        explained = [_explain_one(explainer, Path(path), selectors) for path, selectors in examples]
    except DualptError as exc:  # e.g. the model cannot be loaded here: the rest of the report still stands
        notes.append(f"no explained images: {exc}")
        return f"<p>No explained images: {html.escape(str(exc))}</p>"
    for expl in explained:
        if expl.error:
            notes.append(f"{expl.image}: {expl.error}")
            continue
        truth = f"; true class {html.escape(expl.classes[1].name)}" if len(expl.classes) > 1 else ""
        parts.append(f"<figure>{_img(plots.explanation_png(expl), f'explained {expl.image.name}')}"
                     f"<figcaption>{html.escape(str(expl.image))}: predicted {html.escape(expl.prediction or '')}"
                     f" ({_pct(expl.prob)}){truth}</figcaption></figure>")
    return "\n".join(parts)


def _explain_one(explainer: Explainer, path: Path, selectors: list[str]) -> ImageExplanation:
    try:
        return explainer.image(path, selectors)
    except DataError:  # a true class the prompt file does not have (base-to-new evaluation)
        return explainer.image(path, ["top"])


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
nav a { margin-right: 1em; } section { margin-bottom: 2em; }
.columns { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
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
    notes: list[str] = []
    curves_html, curves = _curves_section(project, notes)
    sections = [
        ("config", "Run configuration", _config_section(project)),
        ("descriptions", "Descriptions per class", _descriptions_section(project)),
        ("curves", "Training curves", curves_html),
        ("eval", "Evaluation", _eval_section(eval_dir if eval_dir.is_dir() else None)),
        ("explain", "What each prompt looks at", _explain_section(cfg, project, eval_dir, notes)),
    ]
    nav = "".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title, _ in sections)
    body = "\n".join(f'<section id="{key}"><h2>{html.escape(title)}</h2>\n{content}\n</section>'
                     for key, title, content in sections)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>dualpt report: {html.escape(str(project.root))}</title><style>{STYLE}</style></head>\n"
            f"<body><h1>dualpt report</h1><p>project <code>{html.escape(str(project.root.resolve()))}</code>, "
            f"written {when}</p><nav>{nav}</nav>\n{body}\n</body></html>\n")
    atomic_write_text(output, page)
    return ReportResult(path=output, curves=curves, sections=[k for k, _, _ in sections], notes=notes)
