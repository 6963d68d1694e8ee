"""The picture of one explained image (``dualpt explain -o``, the report): the image CLIP saw, then where each
prompt of a class puts its graph-matching plan (PNG bytes, drawn as :mod:`dualpt_cli.pictures.plots` draws)."""

from __future__ import annotations

import numpy as np

from ..predict.explain import ImageExplanation, upsample
from .plots import _figure, _png, _short

HEAT_CMAP = "inferno"


def explanation_png(expl: ImageExplanation) -> bytes:
    """The image CLIP saw, then one heat map per prompt for each explained class (a row per class).

    Each map is the prompt's plan column over the local-feature grid, stretched bilinearly over the image and
    drawn as a multiple of the uniform plan (1 = the prompt looks everywhere alike); within a row the maps share
    one colour scale, shown by the row's colour bar, so prompts can be compared.
    """
    if expl.view is None or not expl.classes:
        raise ValueError(f"nothing to draw for {expl.image}: {expl.error or 'no classes'}")
    image = np.asarray(expl.view.convert("RGB"))
    H, W = image.shape[:2]
    M = len(expl.classes[0].prompts)
    rows = len(expl.classes)
    fig = _figure(2.3 * (M + 1) + 0.7, 2.9 * rows)
    axes = fig.subplots(rows, M + 1, squeeze=False)
    pixels = (-0.5, W - 0.5, H - 0.5, -0.5)  # the image's own extent: the heat covers exactly its pixels
    for r, cv in enumerate(expl.classes):
        ax = axes[r, 0]
        ax.imshow(image)
        mark = "predicted" if cv.name == expl.prediction else "asked for"
        ax.set_title(_short(f"{expl.image.name}\n{cv.name} ({mark}) p={cv.prob:.1%}", 30, 3), fontsize=8)
        ax.axis("off")
        uniform = 1.0 / cv.prompts[0].heat.numel()
        heats = [upsample(p.heat, (H, W)).numpy() / uniform for p in cv.prompts]  # (H, W) x uniform
        top = max(max(float(h.max()) for h in heats), 2.0)  # a uniform plan sits mid-scale
        positive = all(p.part > 0 for p in cv.prompts)
        for j, (pv, heat) in enumerate(zip(cv.prompts, heats)):
            ax = axes[r, j + 1]
            ax.imshow(image)
            shown = ax.imshow(heat, cmap=HEAT_CMAP, alpha=0.6, vmin=0.0, vmax=top, extent=pixels)
            part = f"{pv.share:.0%} of score" if positive else f"part {pv.part:+.3f}"
            title = f"{_short(cv.name, 22, 1)} · prompt {pv.index + 1} · {part}\npeak {pv.peak:.1f}x uniform"
            if pv.phrase:
                title += "\n" + _short(f"“{pv.phrase}”", 30, 2)
            ax.set_title(title, fontsize=7.5)
            ax.axis("off")
        bar = fig.colorbar(shown, ax=axes[r, 1:].tolist(), shrink=0.8, aspect=15, pad=0.01)
        bar.set_label("plan mass (x uniform)", fontsize=7.5)
        bar.ax.tick_params(labelsize=7)
    return _png(fig)
