"""What ``dualpt train --method NAME`` builds besides DUAL-PT's own loop (docs/method.md, "Methods").

- The prompt-tuning methods (dualpt, plot, coop, codualpt, cocoop) share train.py's loop: :func:`build_learner` gives
  the learner of the method, :func:`trainable` its parameters, :func:`batched_logits` its scores on cached
  features (validation, the guard).
- linear-probe, tip-adapter(-f), zero-shot and descriptions run no epochs of that loop (:func:`run_fixed`): the
  linear probe is fitted in closed form on the cached global features (:mod:`linear_probe`), Tip-Adapter builds
  its cache from them (-F fine-tunes its keys there, :mod:`tip_adapter`), the other two are training-free. They
  still write a prompt file, so predict, eval and explain read every method alike.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from ..clip.backbone import Backbone
from ..core.distributed import SINGLE, Dist
from ..core.project import Project
from ..data.coop import find_layout, parse_dataset_spec
from ..errors import ProjectError
from ..model.conditional import TEXT_BUDGET
from ..model.head import Decision, blend_logits, name_features, prior_features
from ..model.linear_probe import clap_multipliers, fit_clap, probe_logits
from ..model.lpclip import LPClipResult, search_lpclip
from ..model.prompts import ConditionalPromptLearner, PromptLearner
from ..model.tip_adapter import FINE_TUNE_EPOCHS, fit_tip_adapter, tip_logits
from .config import CONDITIONAL_METHODS, TIP_METHODS, TrainConfig, lp_clip
from .export import Kept, MethodExtras, RunRecord, save_prompts
from .hooks import Callbacks, TrainResult
from .objective import Objective
from .trainset import TrainData

FIXED_CONTEXT = "a photo of a"  # the context of a training-free prompt file: its one prompt is zero-shot CLIP's


def build_learner(
    cfg: TrainConfig, bb: Backbone, data: TrainData, class_texts: list[list[str]] | None
) -> PromptLearner:
    """The prompt learner of ``cfg.method`` (codualpt, cocoop: with CoCoOp's meta-net)."""
    names = [c.name for c in data.classes]
    assert cfg.n_ctx is not None and cfg.ctx_init is not None  # set by config.resolve_recipe
    learner: PromptLearner
    if cfg.method in CONDITIONAL_METHODS:
        learner = ConditionalPromptLearner(
            bb,
            names,
            cfg.n_prompts,
            cfg.n_ctx,
            cfg.ctx_init,
            cfg.seed,
            class_texts=class_texts,
            class_specific=cfg.class_specific,
        )
    else:
        learner = PromptLearner(
            bb, names, cfg.n_prompts, cfg.n_ctx, cfg.ctx_init, cfg.class_specific, cfg.seed, class_texts=class_texts
        )
    learner.text_chunk = cfg.text_chunk
    return learner


def trainable(learner: PromptLearner) -> list[torch.nn.Parameter]:
    """What the optimiser updates: the context (and the meta-net for codualpt); CLIP stays frozen."""
    return [p for p in learner.parameters() if p.requires_grad]


def snapshot(learner: PromptLearner) -> dict[str, torch.Tensor]:
    """A copy of the trainable tensors by name (``ctx``, ``meta_net.linear1.weight`` ...): the best epoch's."""
    return {name: p.detach().clone() for name, p in learner.named_parameters()}


@torch.no_grad()
def restore(learner: PromptLearner, state: dict[str, torch.Tensor]) -> None:
    for name, p in learner.named_parameters():
        p.copy_(state[name].to(p.device))


@torch.no_grad()
def batched_logits(
    objective: Objective,
    learner: PromptLearner,
    local: torch.Tensor,
    global_: torch.Tensor,
    batch_size: int = 256,
    dist: Dist = SINGLE,
) -> torch.Tensor:
    """(V, K) logits of cached features ``local`` (V, N, d) and ``global_`` (V, d), as training scores them.

    Under torchrun every rank calls it (its share of the images may be empty): the shared prompts are encoded
    once, with the classes split over the ranks."""
    bb = learner.bb
    conditional = isinstance(learner, ConditionalPromptLearner)
    if conditional:  # every image encodes its own K x M prompts
        batch_size = max(1, min(batch_size, TEXT_BUDGET // (learner.num_classes * learner.n_prompts)))
    W = None if conditional else objective.prompts(learner, None, dist)  # (K, M, d), once
    out = [torch.zeros(0, learner.num_classes, device=bb.device)]
    for start in range(0, len(local), batch_size):
        Z = local[start : start + batch_size].to(bb.device).float()
        z = global_[start : start + batch_size].to(bb.device).float()
        if conditional:
            W = objective.prompts(learner, z)  # (b, K, M, d)
        assert W is not None  # the shared prompts once, or this batch's conditional ones
        with bb.autocast():
            out.append(objective.logits(Z, W, z).float())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------
# linear-probe, tip-adapter(-f), zero-shot, descriptions


def fixed_learner(bb: Backbone, names: list[str]) -> PromptLearner:
    """One prompt whose context is the words "a photo of a": its class features are zero-shot CLIP's, and a
    training-free prompt file stores it as its context so new classes encode the same way as for any method."""
    n_words = int(bb.eot_positions(bb.tokenize([FIXED_CONTEXT]))[0]) - 1
    learner = PromptLearner(bb, names, n_prompts=1, n_ctx=n_words, ctx_init=FIXED_CONTEXT)
    learner.eval()
    return learner


def run_fixed(
    cfg: TrainConfig, cb: Callbacks, project: Project, bb: Backbone, data: TrainData, objective: Objective
) -> TrainResult:
    """linear-probe, tip-adapter(-f), zero-shot or descriptions: fit (or just build) the classifier and write the
    prompt file."""
    t0 = time.perf_counter()
    names = [c.name for c in data.classes]
    learner = fixed_learner(bb, names)
    n_images, n_views = data.train.global_.shape[:2]
    z = data.train.global_.flatten(0, 1).to(bb.device).float()  # (images x views, d): every cached view
    labels = data.train_labels.repeat_interleave(n_views).to(bb.device)
    text = name_features(bb, names)  # (K, d) "a photo of a {name}."
    extra: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    prior, epochs = None, 0
    if cfg.method == "linear-probe" and lp_clip(cfg):
        fitted = fit_lp_clip(data)
        cb.info(
            f"LP-CLIP: C = {fitted.model.C:.3g} (held-out accuracy {fitted.val_acc:.1%} over {len(fitted.tried)} fits)"
        )
        decision = Decision("trained", 1.0, 0.0, "names", reason="linear probe (LP-CLIP)")
        extra = {"probe_weights": fitted.model.weights, "probe_bias": fitted.model.bias}
        meta = {"probe_normalize": False}
        logits = fitted.model.logits(z)
    elif cfg.method == "linear-probe":
        anchors = clap_anchors(bb, names, cfg.dataset)  # (K, d), un-normalised
        zs = probe_logits(z, anchors, bb.logit_scale)
        multipliers = clap_multipliers(zs, labels, len(names)) if cfg.probe_constraint == "clap" else None
        if multipliers is None:
            multipliers = torch.ones(len(names))
        probe = fit_clap(z, labels, anchors, bb.logit_scale, multipliers, n_images, seed=cfg.seed)
        cb.info(f"CLAP probe: {len(labels)} views of {n_images} images, constraint {cfg.probe_constraint}")
        decision = Decision("trained", 1.0, 0.0, "names", reason="linear probe")
        extra, meta = {"probe_weights": probe.weights}, {"probe_normalize": probe.normalize_weights}
        logits = probe.logits(z)
    elif cfg.method in TIP_METHODS:
        epochs = (cfg.epochs or FINE_TUNE_EPOCHS) if cfg.method == "tip-adapter-f" else 0  # 20 from the config
        views = data.train.global_.to(bb.device)  # (images, views, d)
        tip = fit_tip_adapter(
            views, data.train_labels.to(bb.device), text, bb.logit_scale, len(names), epochs, cfg.seed
        )
        tuned = f", keys fine-tuned for {epochs} epochs" if epochs else ""
        cb.info(
            f"{cfg.method}: cache of {n_images} shots x {n_views} views{tuned}; alpha {tip.alpha:.3g}, "
            f"beta {tip.beta:.3g} (leave-one-out accuracy of the shots {tip.search_acc:.1%})"
        )
        prior = text  # the zero-shot term of the logits, blended at weight 1
        decision = Decision("trained", 1.0, 1.0, "names", reason="Tip-Adapter cache model + zero-shot CLIP")
        extra = {"tip_keys": tip.keys, "tip_values": tip.values}
        meta = {"tip_alpha": tip.alpha, "tip_beta": tip.beta}
        logits = tip_logits(z, tip, text, bb.logit_scale)
    else:
        prior = text
        if cfg.method == "descriptions":
            if not bool(objective.desc_has.any()):
                raise ProjectError(
                    f"--method descriptions: no descriptions in {project.descriptions}; run dualpt describe first"
                )
            prior = prior_features(text, objective.desc_mean, objective.desc_has)
        kind = "descriptions" if cfg.method == "descriptions" else "names"
        decision = Decision(cfg.method, 0.0, 1.0, kind, reason="training-free method")
        logits = blend_logits(None, z, prior, bb.logit_scale, 0.0, 1.0)
    loss = float(F.cross_entropy(logits.float(), labels))
    acc = float((logits.argmax(-1) == labels).float().mean())
    run = RunRecord(cfg, objective, data, epochs)
    path = save_prompts(project, learner, run, Kept(decision, prior), MethodExtras(extra, meta))
    return TrainResult(
        prompt_file=path,
        epochs=epochs,
        train_acc=acc,
        loss=loss,
        seconds=time.perf_counter() - t0,
        best_epoch=None,
        val_acc=None,
        skipped=[(str(p), r) for p, r in data.train.bad],
        profile=None,
        guard=None,
        method=cfg.method,
    )


# CoOp's seven ImageNet templates (CLAP averages them with the dataset's own template for ImageNet)
IMAGENET_TEMPLATES_SELECT = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def clap_templates(dataset: str | None) -> list[str]:
    """CLAP's templates: the CoOp dataset's own (ImageNet: the seven select ones too); "a photo of a {}." for an
    ImageFolder."""
    if not dataset:
        return ["a photo of a {}."]
    layout = find_layout(parse_dataset_spec(dataset))
    return [*IMAGENET_TEMPLATES_SELECT, layout.template] if layout.name == "ImageNet" else [layout.template]


@torch.no_grad()
def clap_anchors(bb: Backbone, names: list[str], dataset: str | None) -> torch.Tensor:
    """(K, d) CLAP's zero-shot prototypes: per class the mean over :func:`clap_templates` of the *un-normalised*
    text features (its ``_get_base_text_features``)."""
    templates = clap_templates(dataset)
    tokens = bb.tokenize([t.format(n) for n in names for t in templates])
    feats = bb.encode_text_embeds(bb.token_embeds(tokens), bb.eot_positions(tokens))  # (K * T, d)
    return feats.view(len(names), len(templates), -1).mean(1)


def fit_lp_clip(data: TrainData) -> LPClipResult:
    """CoOp's LP-CLIP on the un-augmented training images, C searched on the held-out ones."""
    if data.val is None or data.val_labels is None:
        raise ProjectError("LP-CLIP needs held-out images to search C; give --val-shots 1 or more")
    train_x = data.train.global_[:, 0].float()  # (I, d) raw features of the un-augmented view
    val_x = data.val.global_[:, 0].float()
    return search_lpclip(train_x, data.train_labels, val_x, data.val_labels, len(data.classes))
