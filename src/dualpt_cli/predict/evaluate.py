"""Accuracy of trained prompts (and of zero-shot CLIP) on a labelled ImageFolder.

Metrics are pure functions of a logits matrix and labels: top-1/top-5, per-class accuracy, the most
confused (true, predicted) pairs, the expected calibration error of the softmax probabilities (ECE,
:mod:`dualpt_cli.model.calibration`), and for base-to-new splits the accuracy on base classes among base
classes (B), on new classes among new classes (N) and their harmonic mean H = 2BN / (B + N) (CoCoOp's
protocol). Images are encoded once; DUAL-PT uses the local features, zero-shot the global ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..clip.backbone import Backbone
from ..clip.cache import features_dir
from ..clip.evalcache import eval_features
from ..clip.load import load_backbone
from ..clip.spec import ModelSpec
from ..core.checks import bounded
from ..core.distributed import Dist
from ..core.project import resolve_project
from ..core.userfiles import shown
from ..core.vocab import EVAL_TITLES, EvalMethod
from ..data.basenew import recorded_new_classes
from ..data.classes import ClassEntry, class_set, parse_class_list
from ..data.source import test_source
from ..data.stream import StreamProgress, file_digest, shard_inputs
from ..errors import DataError, PromptFileError
from ..model.calibration import expected_calibration_error
from ..model.head import ZERO_SHOT_TEMPLATE, name_features
from ..model.scores import global_logits
from ..promptfile.io import read_prompt_file
from .classifier import Classifier, prompt_path
from .output import rounded

# ---------------------------------------------------------------------------------------------------------
# metrics


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of rows whose label is among the ``k`` largest logits; logits (I, K), labels (I,)."""
    if len(labels) == 0:
        return float("nan")
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices  # (I, k)
    return float((top == labels[:, None]).any(dim=1).float().mean())


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, K: int) -> torch.Tensor:
    """(K, K) counts, rows = true class, columns = predicted class."""
    return torch.bincount(labels * K + pred, minlength=K * K).reshape(K, K)


def split_accuracy(logits: torch.Tensor, labels: torch.Tensor, members: torch.Tensor) -> tuple[float, int]:
    """Top-1 accuracy on images of ``members`` classes, choosing among those classes only.

    Args:
        logits: (I, K); labels: (I,); members: (K,) bool.
    Returns:
        (accuracy, number of images); accuracy is NaN without images.
    """
    rows = members[labels]  # (I,)
    if not bool(rows.any()):
        return float("nan"), 0
    cols = members.nonzero().flatten()  # (K_s,)
    remap = torch.full((len(members),), -1, dtype=torch.long)
    remap[cols] = torch.arange(len(cols))
    return topk_accuracy(logits[rows][:, cols], remap[labels[rows]], 1), int(rows.sum())


def harmonic_mean(b: float, n: float) -> float:
    return 0.0 if b + n == 0 else 2 * b * n / (b + n)


def metrics(
    logits: torch.Tensor,
    labels: torch.Tensor,
    classes: list[ClassEntry],
    base: torch.Tensor | None = None,
    top_confused: int = 10,
) -> dict[str, Any]:
    """Everything ``dualpt eval`` reports for one classifier.

    Args:
        logits: (I, K) scores of I images over K classes.
        labels: (I,) true class indices.
        classes: the K classes.
        base: (K,) bool, the trained classes, when some classes are new (base-to-new); else None.
        top_confused: how many confused pairs to list.
    """
    logits, labels = logits.float().cpu(), labels.long().cpu()
    K = len(classes)
    pred = logits.argmax(dim=1)
    cm = confusion_matrix(pred, labels, K)  # (K, K)
    n = cm.sum(1).tolist()  # (K,) images per true class
    per_class = [
        {"class": c.name, "folder": c.folder, "images": n[k], "correct": int(cm[k, k]),
         "accuracy": int(cm[k, k]) / n[k]}
        for k, c in enumerate(classes) if n[k]
    ]  # fmt: skip
    off = cm.clone()
    off.fill_diagonal_(0)
    counts, flat = off.flatten().sort(descending=True)
    confused = []
    for count, i in zip(counts.tolist()[:top_confused], flat.tolist()[:top_confused]):
        if count == 0:
            break
        t, p = divmod(i, K)
        confused.append(
            {
                "true": classes[t].name,
                "predicted": classes[p].name,
                "count": count,
                "share_of_true": count / int(cm[t].sum()),
            }
        )
    out = {
        "images": len(labels),
        "classes": K,
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "top5_k": min(5, K),
        "ece": expected_calibration_error(logits.softmax(dim=1), labels),  # 15 bins of the top probability
        "per_class": per_class,
        "confused": confused,
    }
    if base is not None and bool(base.any()) and not bool(base.all()):
        acc_base, n_base = split_accuracy(logits, labels, base)
        acc_new, n_new = split_accuracy(logits, labels, ~base)
        out["base"] = {"classes": int(base.sum()), "images": n_base, "accuracy": acc_base}
        out["new"] = {"classes": int((~base).sum()), "images": n_new, "accuracy": acc_new}
        out["H"] = harmonic_mean(acc_base, acc_new) if n_base and n_new else None
    return out


# ---------------------------------------------------------------------------------------------------------
# zero-shot CLIP


class ZeroShotClassifier:
    """Plain CLIP: ``logit_scale * cos(z, t_k)`` with t_k the text feature of "a photo of a {class}."."""

    def __init__(self, bb: Backbone, class_names: list[str], template: str = ZERO_SHOT_TEMPLATE):
        self.bb = bb
        self.text = name_features(bb, class_names, template)  # (K, d)

    def logits_from_global(self, z: torch.Tensor) -> torch.Tensor:
        """(B, K) logits from global image features z (B, d)."""
        return global_logits(z, self.text, self.bb.logit_scale)


# ---------------------------------------------------------------------------------------------------------
# the command

NO_PROMPTS = "train first (dualpt train IMAGES), or evaluate zero-shot CLIP alone: --zero-shot --model RN50"
TITLES = EVAL_TITLES  # how each method is named in tables and plots
METHODS = tuple(TITLES)


@dataclass
class EvalConfig:
    """Everything ``dualpt eval`` needs."""

    images: str | None  # ImageFolder: one sub-folder per class (None with dataset)
    project: str | None = None  # project whose prompts.safetensors to evaluate
    prompts: str | None = None  # a prompt file (wins over project)
    classes: str | None = None  # class list for folders that are not trained classes (base-to-new)
    zero_shot: bool = False  # also (or, without a prompt file, only) evaluate plain CLIP
    model: str | None = None  # model override, or the CLIP for --zero-shot without a prompt file
    pretrained: str | None = None
    batch_size: int = 64
    workers: int | None = None  # DataLoader worker processes (None: data.default_workers)
    device: str = "auto"
    precision: str = "auto"
    top_confused: int = 10  # confused pairs listed
    template: str = ZERO_SHOT_TEMPLATE  # zero-shot prompt
    dataset: str | None = None  # coop:ROOT/NAME: its test split instead of images (and its zero-shot template)

    def __post_init__(self) -> None:
        bounded({"--batch-size": self.batch_size})
        bounded({"--workers": self.workers}, low=0)


@dataclass
class EvalResult:
    images: str
    prompt_file: str | None
    model: str
    classes: list[ClassEntry]
    results: dict[EvalMethod, dict[str, Any]]  # "dualpt" and/or "zero_shot" -> metrics()
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)
    logits: dict[EvalMethod, torch.Tensor] = field(default_factory=dict)  # name -> (I, K), images that were read
    labels: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # (I,) true classes
    paths: list[str] = field(default_factory=list)  # (I,) their files

    def confusion(self, name: EvalMethod) -> torch.Tensor:
        """(K, K) counts of ``name``'s predictions, rows = true class (the matrix behind its metrics)."""
        return confusion_matrix(self.logits[name].argmax(dim=1), self.labels, len(self.classes))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "images": self.images,
            "prompt_file": self.prompt_file,
            "model": self.model,
            "classes": [c.name for c in self.classes],
        }
        for name, metrics in self.results.items():  # "dualpt" and/or "zero_shot"
            out[name] = metrics
        out["failed"] = [{"image": p, "error": e} for p, e in self.failed]
        if len(self.results) == 2:
            out["gain_top1"] = self.results["dualpt"]["top1"] - self.results["zero_shot"]["top1"]
        return dict(rounded(out))


def evaluate_folder(cfg: EvalConfig, progress: StreamProgress | None = None, dist: Dist | None = None) -> EvalResult:
    """Score every image of ``cfg.images`` with the prompts (and zero-shot CLIP with ``cfg.zero_shot``).

    Under torchrun (``dist``, on the device of its rank) each rank scores a contiguous shard of the images
    in whole batches and the logits are summed over the ranks (:func:`gather_scores`), so every rank holds
    the result one process would compute, to the bit.
    """
    dist = dist or Dist()
    if dist.distributed:
        cfg = replace(cfg, device=dist.device)  # cuda:LOCAL_RANK on GPUs
    folders, template, listed = test_source(cfg.images, cfg.dataset, exclude=resolve_project(cfg.project).root)
    extra = parse_class_list(cfg.classes) if cfg.classes else listed  # a dataset names its classes
    path = prompt_path(cfg.prompts, cfg.project)
    use_prompts = not cfg.zero_shot or cfg.prompts is not None or path.is_file()
    if not use_prompts and cfg.model is None:
        raise PromptFileError(
            f"--zero-shot without a prompt file needs --model (no {path}); name the CLIP to evaluate, e.g. --model RN50"
        )
    clf = None
    if use_prompts and not path.exists():
        raise PromptFileError(f"prompt file {path} does not exist: {NO_PROMPTS}")
    if use_prompts:
        tensors, meta = read_prompt_file(path)
        if not cfg.classes and not listed:  # a base-to-new run's held-out classes, when this folder has them
            extra = recorded_new_classes(meta.new_classes, list(folders))  # (a dataset names all its classes)
        classes, index, base = class_set(list(folders), meta.classes, extra, str(path))
        clf = Classifier.from_loaded(
            path,
            tensors,
            meta,
            cfg.model,
            device=cfg.device,
            precision=cfg.precision,
            classes=classes,
            batch_size=cfg.batch_size,
            pretrained=cfg.pretrained,
        )
        bb = clf.bb
    else:
        classes, index, base = class_set(list(folders), None, extra, cfg.classes or str(cfg.images or cfg.dataset))
        assert cfg.model is not None  # checked above
        bb = load_backbone(ModelSpec(cfg.model, cfg.pretrained or "openai"), cfg.device, cfg.precision)
    zs = ZeroShotClassifier(bb, [c.name for c in classes], template or cfg.template) if cfg.zero_shot else None

    paths = [p for files in folders.values() for p in files]
    labels = torch.tensor([index[k] for k, files in enumerate(folders.values()) for _ in files])
    settings: dict[str, Any] = {"--batch-size": cfg.batch_size, "--classes": file_digest(cfg.classes)}
    settings |= {"--zero-shot": cfg.zero_shot, "--prompt-file": file_digest(path) if clf else None}
    settings |= {"--model": [cfg.model, cfg.pretrained]}
    lo, hi = shard_inputs(paths, dist, cfg.batch_size, "eval", settings | {"--precision": cfg.precision})
    scores = run_images(bb, clf, zs, paths[lo:hi], cfg, progress or StreamProgress())
    scores = gather_scores(scores, lo, len(paths), len(classes), dist)
    kept = torch.tensor(scores["kept"], dtype=torch.long)
    logits = {name: torch.cat(scores[name]) for name in EVAL_TITLES if scores[name]}  # dualpt, zero_shot
    results = {name: metrics(x, labels[kept], classes, base, cfg.top_confused) for name, x in logits.items()}
    if not results:
        raise DataError(f"no image in {cfg.images or cfg.dataset} could be read")
    return EvalResult(
        images=str(cfg.images or cfg.dataset),
        prompt_file=str(path) if clf else None,
        model=bb.spec.display,
        classes=classes,
        results=results,
        failed=scores["failed"],
        logits=logits,
        labels=labels[kept],
        paths=[str(paths[i]) for i in scores["kept"]],
    )


def gather_scores(scores: dict[str, list], lo: int, n: int, K: int, dist: Dist) -> dict[str, list]:
    """:func:`run_images`' answer for all ``n`` images from each rank's answer for its shard (from image ``lo``).

    In one process that is ``scores`` itself. Under torchrun each rank puts its logits into a zero (n, K)
    float32 matrix and the matrices are summed over the ranks: x + 0 is x, so the logits are one
    process's, to the bit (metrics compare them in float32 anyway). The sum runs in blocks of at most
    64 MB, so a GPU job never holds a second copy of the whole matrix on the GPU. The indices of the images
    kept and the failures come back in input order.
    """
    if not dist.distributed:
        return scores
    what = "eval: summing the scores of every rank"
    kept = torch.zeros(n, dtype=torch.int64)
    kept[[lo + i for i in scores["kept"]]] = 1
    dist.all_reduce_sum(kept, what)
    rows = kept.nonzero().flatten()
    ran = set().union(*dist.all_gather_json([name for name in METHODS if scores[name]], what))  # a rank may have none
    out: dict[str, list] = {name: [] for name in METHODS}
    for name in (m for m in METHODS if m in ran):
        full = torch.zeros(n, K, dtype=torch.float32)
        if scores[name]:
            full[[lo + i for i in scores["kept"]]] = torch.cat(scores[name]).float()
        block = max(1, (64 << 20) // (4 * K))
        for start in range(0, n, block):
            dist.all_reduce_sum(full[start : start + block], what)
        out[name] = [full[rows]]
    out["kept"] = rows.tolist()
    out["failed"] = [(image, error) for part in dist.all_gather_json(scores["failed"], what) for image, error in part]
    return out


def run_images(
    bb: Backbone,
    clf: Classifier | None,
    zs: ZeroShotClassifier | None,
    paths: list[Path],
    cfg: EvalConfig,
    progress: StreamProgress,
) -> dict[str, list]:
    """Logits of each classifier, indices of the images kept, failures, in input order (features: clip.evalcache)."""
    out: dict[str, list] = {"dualpt": [], "zero_shot": [], "kept": [], "failed": []}
    failed: dict[int, str] = {}
    progress.start("evaluating", len(paths), visible=len(paths) > cfg.batch_size)
    try:
        for batch in eval_features(bb, paths, features_dir(), cfg.batch_size, cfg.workers, progress.advance):
            failed.update(batch.errors)
            if batch.indices:
                if clf is not None:
                    out["dualpt"].append(clf.logits_from_features(batch.z, batch.Z).cpu())
                if zs is not None:
                    out["zero_shot"].append(zs.logits_from_global(batch.z).cpu())
                out["kept"] += batch.indices
    finally:
        progress.stop()
    order = sorted(range(len(out["kept"])), key=out["kept"].__getitem__)  # cached batches come after encoded ones
    if order != list(range(len(order))):
        for name in ("dualpt", "zero_shot"):
            if out[name]:
                out[name] = [torch.cat(out[name])[order]]
        out["kept"] = [out["kept"][k] for k in order]
    out["failed"] = [(shown(paths[i]), failed[i]) for i in sorted(failed)]
    return out
