"""The pictures: training curves, confusion matrices, per-class accuracy, reliability diagrams, compare's
accuracy vs shots (PNG bytes; the explained images are :mod:`dualpt_cli.pictures.explainplot`'s).

matplotlib draws on its Agg canvas through ``matplotlib.figure.Figure`` (no pyplot, no display, no global
state), so every function works on a headless machine and returns the PNG as bytes; callers write them
atomically or embed them in the HTML report. Legends sit beside or below the axes, never over the data.
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

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

DPI = 100


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


def _legend_beside(ax: Axes, **kw: Any) -> None:
    """The legend to the right of ``ax`` (constrained layout makes room): it cannot hide a line or a bar."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, **kw)


def _percent_axis(axis: Axis) -> None:
    from matplotlib.ticker import PercentFormatter

    axis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))  # as the tables print accuracies


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


CURVE_LABELS = {  # what the keys of train_log.jsonl that train writes are (other keys are shown as they are)
    "loss": "loss (minimised)",
    "loss_img": "loss_img (cross-entropy)",
    "loss_llm": "loss_llm (to descriptions)",
    "acc": "acc (training images)",
    "val_acc": "val_acc (--val-shots images)",
    "zero_shot_acc": "zero-shot accuracy",
    "lr": "learning rate",
    "plan_entropy": "plan entropy (1 = uniform)",
}


def curves_png(records: Sequence[dict[str, Any]], title: str = "") -> bytes:
    """Loss parts, accuracies (train, validation, zero-shot, ... whatever the log has), learning rate and plan
    entropy per epoch, one panel each; panels without data are left out; ``title`` names the run."""
    series = curve_series(records)
    panels = curve_panels(series)
    if not panels:
        raise ValueError("the training log has no loss, accuracy, learning rate or entropy values")
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig = _figure(6.0 * cols, 3.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, (name, ylabel, keys) in zip(axes, panels):
        for key in keys:
            same = [k for k in keys if k != key and series[k] == series[key]]  # loss = loss_img without an LLM term
            if same and keys.index(same[0]) < keys.index(key):
                continue  # drawn once, under both names
            xs, ys = zip(*series[key])
            label = " = ".join([key, *same]) if same else CURVE_LABELS.get(key, key)
            ax.plot(xs, ys, label=label, marker="o" if len(xs) < 12 else None, markersize=3)
        values = [y for k in keys for _, y in series[k]]
        if name in ("accuracy", "plan entropy") and 0 <= min(values) and max(values) <= 1:
            ax.set_ylim(-0.02, 1.02)  # a share: its whole range, so that 0.9999 does not look like a change
            if name == "accuracy":
                _percent_axis(ax.yaxis)
        elif name == "learning rate" and min(values) > 0:
            ax.set_yscale("log")
        else:
            ax.ticklabel_format(axis="y", style="plain", useOffset=False)  # never "1e-6+9.999e-1"
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        _legend_beside(ax)
    for ax in axes[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(plain(title))
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
    on at most 40 ticks; ``title`` names the method and the images."""
    K = len(names)
    order = accuracy_order(cm)
    sub = cm[order][:, order].double()  # (K, K) in display order
    share = (sub / sub.sum(1, keepdim=True).clamp(min=1)).numpy()
    side = min(max(5.0, 2.5 + 0.13 * K), 24.0)
    fig = _figure(side + 1.2, side)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    _percent_axis(fig.colorbar(im, ax=ax, shrink=0.7, label="share of the true class's images").ax.yaxis)
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


def per_class_png(
    per_class: dict[EvalMethod, list[dict[str, Any]]], titles: dict[EvalMethod, str], task: str = ""
) -> bytes:
    """Per-class accuracy bars, sorted by the first method's accuracy (worst first); further methods
    (zero-shot CLIP) as bars beside it; ``task`` (the test images) in the title."""
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
    _percent_axis(ax.yaxis)
    ax.set_ylabel("accuracy")
    sorted_by = plain(titles.get(methods[0], methods[0]))
    on = f" on {plain(task)}" if task else ""
    ax.set_title(f"per-class accuracy{on}, {K} classes, sorted by {sorted_by} (worst first)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _legend_beside(ax)
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
    fig = _figure(5.0, 6.4)
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
    fig.legend(fontsize=8, loc="outside lower center", ncols=2)  # below the figure: over no bar
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


def _wrapped(title: str, width: int) -> str:
    """A panel title on lines of at most ``width`` characters, breaking after the comparison's name first."""
    head, sep, rest = title.partition(": ")
    if len(title) <= width or not sep:
        return "\n".join(textwrap.wrap(title, width)) or title
    return head + ":\n" + "\n".join(textwrap.wrap(rest, width))


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
        ax.set_title(_wrapped(plain(name), 48 if not one else 64), fontsize=10)
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
