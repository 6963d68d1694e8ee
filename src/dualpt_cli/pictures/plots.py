"""The pictures: explained images, training curves, confusion matrices, per-class accuracy, reliability
diagrams (PNG bytes).

matplotlib draws on its Agg canvas through ``matplotlib.figure.Figure`` (no pyplot, no display, no global
state), so every function works on a headless machine and returns the PNG as bytes; callers write them
atomically or embed them in the HTML report.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core.vocab import EvalMethod
from ..model.calibration import ReliabilityBin
from ..predict.explain import ImageExplanation, upsample

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn
    from matplotlib.figure import Figure

DPI = 100
HEAT_CMAP = "inferno"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def plain(text: str) -> str:
    """``text`` drawn as it is: a ``$`` in a class or compare name would start matplotlib's mathtext."""
    return str(text).replace("$", r"\$")


def _short(text: str, width: int = 26, lines: int = 2) -> str:
    return plain("\n".join(textwrap.wrap(text, width, max_lines=lines, placeholder="...")))


# ---------------------------------------------------------------------------------------------------------
# explain


def explanation_png(expl: ImageExplanation) -> bytes:
    """The image CLIP saw, then one heat map per prompt for each explained class (a row per class).

    Each map is the prompt's plan column over the local-feature grid (summing to 1), stretched bilinearly
    over the image; within a row the maps share one colour scale, so prompts can be compared.
    """
    if expl.view is None or not expl.classes:
        raise ValueError(f"nothing to draw for {expl.image}: {expl.error or 'no classes'}")
    image = np.asarray(expl.view.convert("RGB"))
    H, W = image.shape[:2]
    M = len(expl.classes[0].prompts)
    rows = len(expl.classes)
    fig = _figure(2.3 * (M + 1), 2.9 * rows)
    axes = fig.subplots(rows, M + 1, squeeze=False)
    for r, cv in enumerate(expl.classes):
        ax = axes[r, 0]
        ax.imshow(image)
        mark = "predicted" if cv.name == expl.prediction else "asked for"
        ax.set_title(_short(f"{expl.image.name}\n{cv.name} ({mark}) p={cv.prob:.1%}", 30, 3), fontsize=8)
        ax.axis("off")
        heats = [upsample(p.heat, (H, W)).numpy() for p in cv.prompts]
        uniform = 1.0 / cv.prompts[0].heat.numel()
        top = max(max(float(h.max()) for h in heats), 2 * uniform)  # a uniform plan sits mid-scale
        positive = all(p.part > 0 for p in cv.prompts)
        for j, (pv, heat) in enumerate(zip(cv.prompts, heats)):
            ax = axes[r, j + 1]
            ax.imshow(image)
            ax.imshow(heat, cmap=HEAT_CMAP, alpha=0.6, vmin=0.0, vmax=top, extent=(0, W, H, 0))
            part = f"{pv.share:.0%} of score" if positive else f"part {pv.part:+.3f}"
            title = f"{_short(cv.name, 22, 1)} · prompt {pv.index + 1} · {part}\npeak {pv.peak:.1f}x uniform"
            if pv.phrase:
                title += "\n" + _short(f"“{pv.phrase}”", 30, 2)
            ax.set_title(title, fontsize=7.5)
            ax.axis("off")
    return _png(fig)


# ---------------------------------------------------------------------------------------------------------
# training curves

PANELS = (  # (title, which log keys, y label); keys are matched by their "_"-separated words
    ("loss", lambda k: "loss" in k.split("_"), "loss"),
    ("accuracy", lambda k: "acc" in k.split("_") or "accuracy" in k.split("_"), "accuracy"),
    ("learning rate", lambda k: "lr" in k.split("_"), "lr"),
    ("plan entropy", lambda k: "entropy" in k.split("_"), "entropy"),
)


def curve_series(records: Sequence[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Every numeric key of the log lines as (epoch, value) points; lines or keys that are missing are skipped."""
    series: dict[str, list[tuple[float, float]]] = {}
    for n, rec in enumerate(records, start=1):
        x = rec.get("epoch", n)
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            x = n
        for key, value in rec.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                series.setdefault(key, []).append((float(x), float(value)))
    return series


def curve_panels(series: dict[str, list[tuple[float, float]]]) -> list[tuple[str, str, list[str]]]:
    """The panels that have data: (title, y label, keys)."""
    out = []
    for title, wanted, ylabel in PANELS:
        keys = [k for k in series if wanted(k)]
        if keys:
            out.append((title, ylabel, keys))
    return out


def curves_png(records: Sequence[dict[str, Any]]) -> bytes:
    """Loss parts, accuracies (train, validation, zero-shot, ... whatever the log has), learning rate and plan
    entropy per epoch, one panel each; panels without data are left out."""
    series = curve_series(records)
    panels = curve_panels(series)
    if not panels:
        raise ValueError("the training log has no loss, accuracy, learning rate or entropy values")
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig = _figure(5.2 * cols, 3.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, (title, ylabel, keys) in zip(axes, panels):
        for key in keys:
            same = [k for k in keys if k != key and series[k] == series[key]]  # loss = loss_img without an LLM term
            if same and keys.index(same[0]) < keys.index(key):
                continue  # drawn once, under both names
            xs, ys = zip(*series[key])
            label = " = ".join([key, *same])
            ax.plot(xs, ys, label=label, marker="o" if len(xs) < 12 else None, markersize=3)
        values = [y for k in keys for _, y in series[k]]
        if title in ("accuracy", "plan entropy") and 0 <= min(values) and max(values) <= 1:
            ax.set_ylim(-0.02, 1.02)  # a share: its whole range, so that 0.9999 does not look like a change
        elif title == "learning rate" and min(values) > 0:
            ax.set_yscale("log")
        else:
            ax.ticklabel_format(axis="y", style="plain", useOffset=False)  # never "1e-6+9.999e-1"
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if title == "plan entropy" else "best")  # entropy sits near 1
    for ax in axes[len(panels) :]:
        ax.axis("off")
    return _png(fig)


# ---------------------------------------------------------------------------------------------------------
# eval


def accuracy_order(cm: torch.Tensor) -> list[int]:
    """Class indices by per-class accuracy, worst first (classes without images last); ties keep their order."""
    n = cm.sum(1).double()
    acc = torch.where(n > 0, cm.diagonal().double() / n.clamp(min=1), torch.full_like(n, 2.0))
    return sorted(range(len(acc)), key=lambda k: (float(acc[k]), k))


def sparse_ticks(n: int, most: int) -> list[int]:
    step = max(1, math.ceil(n / most))
    return list(range(0, n, step))


def confusion_png(cm: torch.Tensor, names: Sequence[str], title: str) -> bytes:
    """Rows true class, columns prediction, colour = share of the true class's images; classes sorted by
    accuracy (worst first, so errors gather top left); counts written in cells up to 25 classes, class names
    on at most 40 ticks."""
    K = len(names)
    order = accuracy_order(cm)
    sub = cm[order][:, order].double()  # (K, K) in display order
    share = (sub / sub.sum(1, keepdim=True).clamp(min=1)).numpy()
    side = min(max(5.0, 2.5 + 0.13 * K), 24.0)
    fig = _figure(side + 1.2, side)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.7, label="share of the true class")
    ticks = sparse_ticks(K, 40)
    labels = [_short(names[order[i]], 24, 1) for i in ticks]
    ax.set_xticks(
        ticks, labels, rotation=90 if K > 8 else 30, ha="center" if K > 8 else "right", fontsize=7 if K > 20 else 8
    )
    ax.set_yticks(ticks, labels, fontsize=7 if K > 20 else 8)
    if K <= 25:
        for t in range(K):
            for p in range(K):
                if sub[t, p]:
                    ax.text(
                        p,
                        t,
                        str(int(sub[t, p])),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if share[t, p] > 0.5 else "black",
                    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    shown = "" if len(ticks) == K else f"; every {ticks[1] - ticks[0]}th class named"
    ax.set_title(f"{plain(title)}: {int(cm.sum())} images, {K} classes, sorted by accuracy{shown}", fontsize=10)
    return _png(fig)


def per_class_png(per_class: dict[EvalMethod, list[dict[str, Any]]], titles: dict[EvalMethod, str]) -> bytes:
    """Per-class accuracy bars, sorted by the first method's accuracy (worst first); further methods
    (zero-shot CLIP) as bars beside it."""
    methods = list(per_class)
    first = per_class[methods[0]]
    order = sorted(range(len(first)), key=lambda i: (first[i]["accuracy"], i))
    names = [first[i]["class"] for i in order]
    acc = {m: {r["class"]: r["accuracy"] for r in per_class[m]} for m in methods}
    K = len(names)
    fig = _figure(min(max(6.0, 2.0 + 0.28 * K * len(methods)), 30.0), 4.2)
    ax = fig.subplots()
    width = 0.8 / len(methods)
    x = np.arange(K)
    for i, m in enumerate(methods):
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width,
            [acc[m].get(n, float("nan")) for n in names],
            width,
            label=plain(titles.get(m, m)),
        )
    ticks = sparse_ticks(K, 60)
    ax.set_xticks(
        ticks,
        [_short(names[i], 20, 1) for i in ticks],
        rotation=90 if K > 8 else 30,
        ha="center" if K > 8 else "right",
        fontsize=7 if K > 20 else 8,
    )
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    sorted_by = plain(titles.get(methods[0], methods[0]))
    ax.set_title(f"per-class accuracy, {K} classes, sorted by {sorted_by} (worst first)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def reliability_png(bins: Sequence[ReliabilityBin], ece: float, title: str) -> bytes:
    """Reliability diagram: per confidence bin the accuracy (bars) against the diagonal of perfect calibration,
    the gap to the bin's mean confidence hatched; below, the share of the images in each bin (its count written on
    it); ECE in the title."""
    lower = np.array([b.lower for b in bins])
    width = np.array([b.upper - b.lower for b in bins])
    count = np.array([b.count for b in bins], dtype=float)
    seen = count > 0
    acc = np.array([b.accuracy if b.count else 0.0 for b in bins])
    conf = np.array([b.confidence if b.count else 0.0 for b in bins])
    fig = _figure(5.0, 6.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(lower[seen], acc[seen], width[seen], align="edge", edgecolor="black", linewidth=0.6, label="accuracy")
    top.bar(
        lower[seen], conf[seen] - acc[seen], width[seen], bottom=acc[seen], align="edge", color="tab:red",
        alpha=0.25, hatch="//", edgecolor="tab:red", linewidth=0.6, label="gap to mean confidence",
    )  # fmt: skip
    top.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"{plain(title)}: ECE {ece:.1%} over {int(count.sum())} images, {len(bins)} bins", fontsize=10)
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="upper left")
    share = count / max(count.sum(), 1)
    bottom.bar(lower, share, width, align="edge", color="tab:grey", edgecolor="black", linewidth=0.6)
    for x, w, n, h in zip(lower[seen], width[seen], count[seen], share[seen]):
        bottom.text(x + w / 2, h, str(int(n)), ha="center", va="bottom", fontsize=7)  # the bin's images
    bottom.set_ylim(0, 1.25 * max(float(share.max(initial=0.0)), 0.01))
    bottom.set_xlabel("confidence (largest class probability)")
    bottom.set_ylabel("share of images")
    bottom.grid(axis="y", alpha=0.3)
    return _png(fig)


# ---------------------------------------------------------------------------------------------------------
# compare


def percent_range(values: Sequence[float], least: float = 10.0) -> tuple[float, float]:
    """A y-range in [0, 100] around ``values`` (percent) at least ``least`` points tall, with 2 points of margin."""
    pad = max(2.0, (least - (max(values) - min(values))) / 2)
    high = min(100.0, max(max(values) + pad, least))
    return max(0.0, min(min(values) - pad, high - least)), high


def compare_png(panels: Mapping[str, Sequence[Any]], title: str = "", metric: str = "top-1 accuracy") -> bytes:
    """Accuracy vs shots as in the DUAL-PT paper's Fig. 3: one panel per dataset (``panels``: title -> the
    ``compare.Row`` list of that dataset), one line per method, error bars = std over seeds, best marked.
    The y-axis spans at least 10 points, so that a fraction of a point does not look like a gap."""
    if not panels or not any(r.mean is not None for rows in panels.values() for r in rows):
        raise ValueError("no finished cells to plot")
    cols = min(len(panels), 4)
    rows_n = math.ceil(len(panels) / cols)
    one = len(panels) == 1
    fig = _figure(6.4 if one else 4.6 * cols, 4.6 if one else 3.6 * rows_n)
    axes = fig.subplots(rows_n, cols, squeeze=False).flatten()
    for ax, (name, rows) in zip(axes, panels.items()):
        methods = list(dict.fromkeys(r.method for r in rows))
        all_shots = sorted({r.shots for r in rows})
        for method in methods:
            pts = sorted(
                (r.shots, 100 * r.mean, 100 * (r.std or 0.0), r.best)
                for r in rows
                if r.method == method and r.mean is not None
            )
            if not pts:
                continue
            xs, ys, es, best = zip(*pts)
            line = ax.errorbar(xs, ys, yerr=es, marker="o", markersize=4, capsize=3, label=plain(method))
            bx = [x for x, b in zip(xs, best) if b]
            by = [y for y, b in zip(ys, best) if b]
            ax.scatter(bx, by, s=90, facecolors="none", edgecolors=line.lines[0].get_color(), linewidths=1.5)
        ax.scatter([], [], s=90, facecolors="none", edgecolors="0.3", linewidths=1.5, label="best at its shots")
        ax.set_ylim(*percent_range([100 * r.mean for r in rows if r.mean is not None]))
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_shots, [str(s) for s in all_shots])
        ax.set_xlim(all_shots[0] / 1.4, all_shots[-1] * 1.4)  # room for the markers at both ends
        ax.set_title(plain(name), fontsize=10)
        ax.set_xlabel("shots per class (log scale)")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="error bars: std over seeds" if any(r.runs > 1 for r in rows) else None,
                  title_fontsize=7)  # fmt: skip
    for ax in axes[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(plain(title))
    return _png(fig)
