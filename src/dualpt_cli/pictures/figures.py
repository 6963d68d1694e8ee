"""Pictures written to disk: explained images, curves.png, and the eval plots (``dualpt eval --plot``).

Every file is written atomically; :mod:`dualpt_cli.pictures.report` puts them on one HTML page.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.jsonshape import Opt, check_shape
from ..core.project import (
    Project,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    protected_reads,
    read_json,
)
from ..core.userfiles import check_output, shown
from ..core.vocab import EVAL_TITLES as TITLES
from ..core.vocab import EvalMethod
from ..errors import DataError, ProjectError

if TYPE_CHECKING:
    from ..predict.evaluate import EvalResult
    from ..predict.explain import ExplainConfig, ImageExplanation

# torch, matplotlib and the model code are imported by the functions that draw (dualpt report reads the
# train log without them)

CURVES = "curves.png"
EVAL_JSON = "eval.json"
PER_CLASS = "per_class.png"
MISTAKES = "mistakes.csv"
MISTAKES_KEPT = 100  # most confident mistakes listed in eval.json (mistakes.csv has all)


_METHOD_SHAPE = {
    "images": int,
    "classes": int,
    "top1": float,
    "top5": float,
    "top5_k": Opt(int),
    "ece": Opt(float),
    "per_class": [{"class": str, "folder": str, "images": int, "accuracy": float}],
    "confused": Opt([{"true": str, "predicted": str, "count": int, "share_of_true": float}]),
}
EVAL_SHAPE = {
    "images": Opt(str),
    "model": Opt(str),
    "dualpt": Opt(_METHOD_SHAPE),
    "zero_shot": Opt(_METHOD_SHAPE),
    "gain_top1": Opt(float),
    "mistakes": Opt({"most_confident": Opt([{"true": str, "image": str}])}),
}


def read_eval(folder: Path) -> dict[str, Any]:
    """``folder``'s eval.json (written by ``eval --plot``), every field the report uses checked."""
    path = folder / EVAL_JSON
    data: dict[str, Any] = check_shape(
        read_json(path, "eval results"), EVAL_SHAPE, path, f"run dualpt eval --plot {folder} again"
    )
    if not any(isinstance(data.get(m), dict) for m in TITLES):
        raise ProjectError(f"{path} has no results; run dualpt eval --plot {folder} again")
    return data


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


def write_explanations(
    cfg: ExplainConfig,
    out_dir: str | Path | None,
    on_image: Callable[[ImageExplanation, Path | None], None] | None = None,
) -> list[ImageExplanation]:
    """Explain every input; with ``out_dir``, write one PNG per readable image there (named by
    :func:`picture_names`). ``on_image(explanation, png or None)`` after each image."""
    from ..data.images import expand_inputs
    from ..predict.explain import explain_images, picture_names
    from .explainplot import explanation_png

    paths = expand_inputs(cfg.inputs)  # bad paths fail before the model loads
    names = picture_names(paths)
    folder = writable_folder(out_dir, "--output") if out_dir is not None else None
    if folder is not None:  # before the model loads: no PNG may replace an input or a project file
        kept = protected_reads(cfg.project, cfg.prompts, paths)
        for name in names:
            check_output(folder / name, "--output", kept)
    items = []
    for i, expl in enumerate(explain_images(cfg, paths)):
        png = None
        if folder is not None and expl.error is None:
            png = folder / names[i]
            atomic_write_bytes(png, explanation_png(expl))
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
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def write_curves(project: Project, records: list[dict[str, Any]] | None = None) -> Path:
    """Draw ``curves.png`` in the project from its ``train_log.jsonl`` (or from ``records`` read from it)."""
    from . import plots

    records = read_train_log(project.train_log) if records is None else records
    try:
        png = plots.curves_png(records, curves_title(project))
    except ValueError as exc:
        raise ProjectError(f"{project.train_log}: {exc}") from None
    path = project.root / CURVES
    atomic_write_bytes(path, png)
    return path


def curves_title(project: Project) -> str:
    """What was trained, for the title of curves.png: method, shots, images and seed from run_config.json
    (nothing when it cannot be read: the curves still draw)."""
    try:
        cfg = json.loads(project.run_config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return ""
    if not isinstance(cfg, dict):
        return ""
    images = cfg.get("dataset") or cfg.get("images")
    title = f"training curves: {cfg.get('method') or 'training'}"
    if cfg.get("shots"):
        title += f", {cfg['shots']} shots per class"
    if images:
        title += f" of {Path(str(images)).name}"
    return title + (f", seed {cfg['seed']}" if cfg.get("seed") is not None else "")


def write_eval_plots(result: EvalResult, folder: str | Path) -> list[Path]:
    """``dualpt eval --plot DIR``: per method a confusion-matrix PNG and CSV (the counts) and a reliability
    diagram, the per-class accuracy bars (zero-shot beside DUAL-PT), and eval.json (what ``--json`` prints, with
    the reliability bins) for the report."""
    from ..model.calibration import reliability_bins
    from . import plots

    folder = writable_folder(folder, "--plot")
    names = [c.name for c in result.classes]
    task = Path(str(result.images)).name  # the test images' folder names the task in every title
    written = []
    reliability = {}
    for method in result.logits:
        cm = result.confusion(method)
        png = folder / f"confusion_{method}.png"
        atomic_write_bytes(png, plots.confusion_png(cm, names, f"{TITLES[method]} on {task}"))
        buf = io.StringIO()
        table = csv.writer(buf, lineterminator="\n")
        table.writerow(["true \\ predicted", *names])
        for name, row in zip(names, cm.tolist()):
            table.writerow([name, *row])
        atomic_write_text(folder / f"confusion_{method}.csv", buf.getvalue())
        written += [png, folder / f"confusion_{method}.csv"]
        bins = reliability_bins(result.logits[method].float().softmax(dim=1), result.labels)  # as metrics' ECE
        reliability[method] = [b.to_json() for b in bins]
        png = folder / f"reliability_{method}.png"
        ece = result.results[method]["ece"]
        atomic_write_bytes(png, plots.reliability_png(bins, ece, f"{TITLES[method]} on {task}"))
        written.append(png)
    per_class = {m: r["per_class"] for m, r in result.results.items()}
    atomic_write_bytes(folder / PER_CLASS, plots.per_class_png(per_class, TITLES, task))
    main: EvalMethod = "dualpt" if "dualpt" in result.logits else "zero_shot"
    wrong = mistakes(result, main)
    buf = io.StringIO()
    rows = csv.DictWriter(buf, ["image", "true", "predicted", "prob"], lineterminator="\n")
    rows.writeheader()
    rows.writerows(wrong)
    atomic_write_text(folder / MISTAKES, buf.getvalue())
    data = {
        **result.to_json(),
        "images": str(Path(result.images).resolve()),
        "mistakes": {"method": main, "count": len(wrong), "most_confident": wrong[:MISTAKES_KEPT]},
        "reliability": reliability,
    }
    atomic_write_json(folder / EVAL_JSON, data)
    return [*written, folder / PER_CLASS, folder / MISTAKES, folder / EVAL_JSON]


def mistakes(result: EvalResult, method: EvalMethod) -> list[dict[str, Any]]:
    """The images ``method`` got wrong, most confident first: image (absolute), true and predicted class
    folders, probability of the prediction."""
    probs = result.logits[method].float().softmax(dim=1)  # (I, K)
    p, pred = probs.max(dim=1)
    out = [
        {
            "image": shown(Path(path).resolve()),
            "true": result.classes[t].folder,
            "predicted": result.classes[k].folder,
            "prob": round(float(q), 6),
        }
        for path, t, k, q in zip(result.paths, result.labels.tolist(), pred.tolist(), p.tolist())
        if t != k
    ]
    return sorted(out, key=lambda r: -r["prob"])
