"""What each prompt looks at: the graph-matching plan of a class, per prompt, over the local-feature grid.

For an image with local features Z (N, d) and a class with prompt features W (M, d), the plan T (N, M)
that scores the class (paper Eq. 8, ``s = sum_ij T_ij cos(z_i, w_j)``) comes from the same
:class:`~dualpt_cli.model.matcher.Matcher` as predict's logits. Column j of T, divided by its mass 1/M, is a
distribution over the N local features: where prompt j looks. The local features are the cells of the
image tower's grid in row-major order (RN: the attention-pool tokens of the 7x7 feature map; ViT: the patch
tokens), so column j reshaped to (rows, cols) is a heat map over the image CLIP saw (after its resize and
centre crop). Prompt j's share of the score is ``sum_i T_ij cos(z_i, w_j) / s``; with descriptions, the
phrase nearest to w_j is the one whose text feature ("{class}, which has {phrase}.") has the largest cosine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ..core.project import Project, read_json, resolve_project
from ..data.classes import ClassEntry, find_trained
from ..data.images import BadImage, expand_inputs, load_image
from ..errors import DataError, ProjectError
from ..model.prompts import DESCRIPTION_TEMPLATE, description_features
from .classifier import Classifier, load_classifier

TOP = re.compile(r"top([-+]?\d+)?$", re.IGNORECASE)  # top, top3; top0 and top-1 are refused (check_selectors)


# ---------------------------------------------------------------------------------------------------------
# the numbers


def prompt_maps(T: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Where each prompt looks: (M, rows, cols) maps, each summing to 1, from a plan T (N, M).

    Local feature i is grid cell (i // cols, i % cols) (row-major, as the image towers emit them).
    """
    rows, cols = grid
    N, M = T.shape
    if N != rows * cols:
        raise ValueError(f"plan has {N} local features, grid {rows}x{cols} has {rows * cols}")
    maps = T.T.reshape(M, rows, cols)  # (M, rows, cols): row j is column j of T
    return maps / maps.sum((-2, -1), keepdim=True)


def prompt_parts(T: torch.Tensor, Z: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """(M,) each prompt's part ``sum_i T_ij cos(z_i, w_j)`` of the class score ``s = sum_ij T_ij cos(z_i, w_j)``.

    T: plan (N, M); Z: local features (N, d) (any norm); W: normalised prompt features (M, d).
    """
    cos = F.normalize(Z.float(), dim=-1) @ W.float().T  # (N, M)
    return (T * cos).sum(0)


def upsample(heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (rows, cols) map stretched bilinearly over an image of ``size`` (H, W): cell centres stay put."""
    return F.interpolate(heat[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]


@dataclass
class PromptView:
    index: int  # j, 0-based
    part: float  # sum_i T_ij cos(z_i, w_j): this prompt's part of the class score s
    share: float  # part / s (meaningful when every part is positive, as with trained CLIP features)
    heat: torch.Tensor  # (rows, cols), sums to 1
    phrase: str | None = None  # nearest description phrase, when the class has descriptions

    @property
    def peak(self) -> float:
        """The map's largest cell over the uniform 1/N: 1.0 means the prompt looks everywhere alike."""
        return float(self.heat.max()) * self.heat.numel()


@dataclass
class ClassView:
    index: int  # class index in the classifier
    name: str
    folder: str
    prob: float
    score: float  # s_k = sum_ij T_ij cos(z_i, w_kj) (the logit divided by exp(logit_scale))
    prompts: list[PromptView]


@dataclass
class ImageExplanation:
    image: Path
    grid: tuple[int, int] = (0, 0)
    view: Image.Image | None = None  # the image as CLIP saw it (resized and cropped, not normalised)
    prediction: str | None = None
    prob: float | None = None
    classes: list[ClassView] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Numbers only: per class and prompt, the share of the score and the plan over the grid (rows)."""
        return {
            "image": str(self.image), "prediction": self.prediction,
            "prob": None if self.prob is None else round(self.prob, 6),
            "grid": list(self.grid), "error": self.error,
            "classes": [{
                "class": c.name, "folder": c.folder, "prob": round(c.prob, 6), "score": round(c.score, 6),
                "prompts": [{"prompt": p.index + 1, "part": round(p.part, 6), "share": round(p.share, 6),
                             "peak_over_uniform": round(p.peak, 4), "phrase": p.phrase,
                             "plan": [[round(v, 6) for v in row] for row in p.heat.tolist()]}
                            for p in c.prompts],
            } for c in self.classes],
        }  # fmt: skip


class PhraseIndex:
    """The description phrase nearest to each prompt feature; phrase features encoded once per class."""

    def __init__(self, clf: Classifier, phrases: dict[str, list[str]], template: str = DESCRIPTION_TEMPLATE):
        self.clf, self.phrases, self.template = clf, phrases, template
        self._feats: dict[int, torch.Tensor] = {}

    def nearest(self, k: int) -> list[str | None]:
        """For each prompt j of class k: the phrase h maximising cos(w_kj, h), or None without phrases."""
        entry = self.clf.classes[k]
        items = self.phrases.get(entry.folder, [])
        M = self.clf.W.shape[1]
        if not items:
            return [None] * M
        if k not in self._feats:
            _, _, sets = description_features(self.clf.bb, [entry.name], [items], self.template)
            self._feats[k] = sets[0].float()  # (e, d), normalised
        best = (self.clf.W[k].float() @ self._feats[k].T).argmax(dim=1)  # (M,)
        return [items[i] for i in best.tolist()]


def explain_local(
    clf: Classifier,
    z: torch.Tensor,
    Z: torch.Tensor,
    chosen: list[list[int]],
    phrases: PhraseIndex | None = None,
) -> list[list[ClassView]]:
    """Per image, a :class:`ClassView` for each chosen class index, from global (B, d) and local (B, N, d)
    features. Each class's ``prob`` is predict's (the classifier the prompt file keeps:
    :meth:`Classifier.logits_from_features`); its ``score`` and prompt parts are the Eq. 8 plan's."""
    grid = clf.bb.grid
    probs = clf.logits_from_features(z, Z).softmax(-1).cpu()  # (B, K)
    out = []
    for b, ks in enumerate(chosen):
        idx = torch.tensor(ks, device=clf.W.device)
        Zb = Z[b : b + 1].to(clf.W.device)
        with torch.no_grad():
            T = clf.matcher.plan(Zb, clf.W[idx])[0].cpu()  # (k, N, M)
        W = clf.W[idx].float().cpu()  # (k, M, d)
        Zc = Zb[0].float().cpu()  # (N, d)
        views = []
        for i, k in enumerate(ks):
            maps = prompt_maps(T[i], grid)  # (M, rows, cols)
            parts = prompt_parts(T[i], Zc, W[i])  # (M,)
            score = float(parts.sum())
            near = phrases.nearest(k) if phrases else [None] * len(parts)
            entry = clf.classes[k]
            prompts = [
                PromptView(j, float(parts[j]), float(parts[j]) / score if score else float("nan"), maps[j], near[j])
                for j in range(len(parts))
            ]
            views.append(ClassView(k, entry.name, entry.folder, float(probs[b, k]), score, prompts))
        out.append(views)
    return out


def choose_classes(selectors: list[str], probs: torch.Tensor, classes: list[ClassEntry]) -> list[int]:
    """Class indices named by ``selectors``: ``top`` (the prediction), ``topN`` (the N best), or class names
    or folders; in order, without repeats."""
    order = probs.argsort(descending=True).tolist()
    out: dict[int, None] = {}
    for sel in selectors:
        top = TOP.match(sel.strip())
        if top:
            out.update(dict.fromkeys(order[: int(top.group(1) or 1)]))  # N >= 1: check_selectors
            continue
        k = find_trained(ClassEntry(folder=sel, name=sel), classes)
        if k is None:
            known = ", ".join(c.name for c in classes[:8]) + (" ..." if len(classes) > 8 else "")
            raise DataError(
                f"--classes {sel!r} is not a class of this prompt file ({known}); pass a class name, "
                "a folder name, or top"
            )
        out[k] = None
    return list(out)


def check_selectors(selectors: list[str]) -> None:
    """A :class:`DataError` for no selector at all, or ``topN`` with N below 1 (``top0`` is not ``top1``)."""
    if not selectors:
        raise DataError("--classes needs at least one value: top, topN, or a class name")
    for sel in selectors:
        top = TOP.match(sel.strip())
        if top and top.group(1) and int(top.group(1)) < 1:
            raise DataError(f"--classes {sel!r}: N in topN is how many of the best classes, 1 or more (top, top3)")


def display_transform(clf: Classifier) -> Callable[[Image.Image], Image.Image]:
    """The model's preprocessing up to (not including) the tensor conversion: the crop CLIP sees, as an image."""
    from torchvision import transforms

    preprocess: Any = clf.bb.eval_transform()  # a torchvision Compose
    steps = preprocess.transforms
    keep = []
    for t in steps:
        if "ToTensor" in type(t).__name__ or isinstance(t, transforms.Normalize):
            break
        keep.append(t)
    crop: Callable[[Image.Image], Image.Image] = transforms.Compose(keep)
    return crop


# ---------------------------------------------------------------------------------------------------------
# the command


@dataclass
class ExplainConfig:
    """Everything ``dualpt explain`` needs."""

    inputs: list[str]  # image files, folders (recursive) and globs
    classes: list[str] = field(default_factory=lambda: ["top"])  # top, topN, or class names/folders
    project: str | None = None  # project whose prompts (and descriptions) to use
    prompts: str | None = None  # a prompt file (wins over project)
    model: str | None = None  # override the model named in the prompt file (same architecture)
    pretrained: str | None = None
    device: str = "auto"
    precision: str = "auto"


def descriptions_for(cfg: ExplainConfig) -> tuple[dict[str, list[str]], str]:
    """The phrases per class folder and the description template of the prompts' project (empty if none)."""
    from ..data.descriptions import load_descriptions, phrases_by_folder

    proj = resolve_project(cfg.project) if cfg.project or not cfg.prompts else Project(Path(cfg.prompts).parent)
    try:
        phrases = phrases_by_folder(load_descriptions(proj))
    except ProjectError:
        phrases = {}
    template = DESCRIPTION_TEMPLATE
    if proj.run_config.is_file():
        try:
            template = read_json(proj.run_config, "run config").get("description_template") or template
        except (ProjectError, AttributeError):
            pass
    return phrases, template


class Explainer:
    """The classifier, description phrases and transforms of ``cfg``, loaded once for many images."""

    def __init__(self, cfg: ExplainConfig):
        self.clf = load_classifier(
            cfg.prompts, cfg.project, cfg.model, cfg.pretrained, None, cfg.device, cfg.precision, batch_size=1
        )
        self.clf.require_local_matching()
        phrases, template = descriptions_for(cfg)
        self.phrases = PhraseIndex(self.clf, phrases, template) if phrases else None
        self.to_pixels, self.to_view = self.clf.bb.eval_transform(), display_transform(self.clf)

    def image(self, path: Path, selectors: list[str]) -> ImageExplanation:
        """The classes ``selectors`` name (see :func:`choose_classes`) explained on one image."""
        check_selectors(selectors)
        try:
            img = load_image(path)
        except BadImage as exc:
            return ImageExplanation(image=path, error=str(exc))
        clf = self.clf
        z, Z = clf.bb.encode_images(self.to_pixels(img)[None])  # (1, d), (1, N, d)
        probs = clf.logits_from_features(z, Z).softmax(-1)[0].cpu()  # (K,): predict's probabilities
        views = explain_local(clf, z, Z, [choose_classes(selectors, probs, clf.classes)], self.phrases)[0]
        top = int(probs.argmax())
        return ImageExplanation(
            image=path,
            grid=clf.bb.grid,
            view=self.to_view(img),
            prediction=clf.classes[top].name,
            prob=float(probs[top]),
            classes=views,
        )


def explain_images(cfg: ExplainConfig, paths: list[Path] | None = None) -> Iterator[ImageExplanation]:
    """One :class:`ImageExplanation` per input image (``paths``, default: expanded ``cfg.inputs``), in order;
    unreadable images carry their error."""
    paths = expand_inputs(cfg.inputs) if paths is None else paths
    check_selectors(cfg.classes)
    explainer = Explainer(cfg)
    for path in paths:
        yield explainer.image(path, cfg.classes)


def picture_names(paths: list[Path]) -> list[str]:
    """A distinct PNG name per image: its stem, with parent folders added where stems collide."""
    names = [p.stem for p in paths]
    depth = 1
    while len(set(names)) < len(names) and depth < 8:
        names = [
            "_".join([*p.parent.parts[-depth:], p.stem]) if names.count(n) > 1 else n for p, n in zip(paths, names)
        ]
        depth += 1
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(f"{n}.png" if seen[n] == 1 else f"{n}_{seen[n]}.png")
    return out
