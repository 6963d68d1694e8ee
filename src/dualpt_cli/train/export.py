"""The prompt file a training run writes: the context, the final class prompt features and the metadata
that makes it self-describing (:class:`~dualpt_cli.promptfile.meta.PromptMeta`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..clip.fingerprint import image_fingerprint
from ..core.project import Project
from ..model.conditional import meta_net_tensors
from ..model.head import ZERO_SHOT_TEMPLATE, Decision
from ..model.prompts import ConditionalPromptLearner, PromptLearner
from ..promptfile.io import save_prompt_file
from ..promptfile.meta import PromptMeta, version_for
from .config import TrainConfig
from .hooks import BestEpoch
from .objective import Objective
from .trainset import TrainData


@dataclass(frozen=True)
class RunRecord:
    """What the prompt file records of a run besides its prompts."""

    cfg: TrainConfig  # the resolved options (shots, seed, recipe, method, base classes)
    objective: Objective  # the matcher's settings, beta and whether there were descriptions
    data: TrainData  # the classes (and the new ones of a base-to-new run)
    epochs: int  # epochs run (0: fitted in closed form)
    best: BestEpoch = field(default_factory=BestEpoch)  # the best held-out epoch, if any


@dataclass(frozen=True)
class Kept:
    """The classifier a prompt file keeps: the guard's decision and the prior prototypes (K, d) it blends."""

    decision: Decision = field(default_factory=lambda: Decision("trained", 1.0, 0.0, "names", reason="DUAL-PT alone"))
    prior: torch.Tensor | None = None


@dataclass(frozen=True)
class MethodExtras:
    """What a method adds to the prompt file: its own tensors (the probe's weights, Tip-Adapter's cache, the
    residual head's) and metadata fields."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def save_prompts(
    project: Project,
    learner: PromptLearner,
    run: RunRecord,
    kept: Kept | None = None,
    extras: MethodExtras | None = None,
) -> Path:
    """Write prompts.safetensors: context, final class prompt features and self-describing metadata (with the
    method's ``extras``; codualpt's meta-net is added here). Without ``kept``: DUAL-PT alone, no prior."""
    kept, extras = kept or Kept(), extras or MethodExtras()
    bb, cfg, objective, data, decision = learner.bb, run.cfg, run.objective, run.data, kept.decision
    with torch.no_grad():
        learner.eval()
        class_features = learner().float()  # (K, M, d), normalised
    name, pretrained = bb.spec.resolved()
    m, s = objective.matcher, objective.matcher.solver
    meta = PromptMeta(
        model=name, pretrained=pretrained or "", class_names=[c.name for c in data.classes],
        n_prompts=learner.n_prompts, n_ctx=learner.n_ctx, embed_dim=bb.embed_dim,
        class_specific=learner.class_specific,
        logit_scale=m.logit_scale, alpha=s.alpha, lam=s.lam, outer_iters=s.outer_iters, inner_iters=s.inner_iters,
        tol=s.tol, placeholder=learner.placeholder, name_template=learner.name_template,
        class_folders=[c.folder for c in data.classes], text_width=bb.text_width, num_local=bb.num_local,
        dual_weight=decision.dual_weight, prior_weight=decision.prior_weight, zero_shot_template=ZERO_SHOT_TEMPLATE,
        image_fingerprint=image_fingerprint(bb),  # checked on load: the image tower is the trained one
        prompt_texts=learner.class_texts if learner.per_prompt else None,  # per class and prompt, after ctx
        dualpt_version=__version__, image_size=bb.image_size,
        preprocess={k: list(v) if isinstance(v, tuple) else v for k, v in bb.preprocess_cfg.items()},
        beta=objective.beta, shots=cfg.shots, seed=cfg.seed, epochs=run.epochs, best_epoch=run.best.epoch,
        precision=bb.precision, llm_context=bool(objective.desc_has.any()), recipe=cfg.recipe,
        prior=decision.prior, guard=decision.to_json(), method=cfg.method,
        align=s.align, base_classes=cfg.base_classes, new_class_names=[c.name for c in data.new_classes] or None,
        new_class_folders=[c.folder for c in data.new_classes] or None,
        format_version=version_for(
            cfg.method, s.align, "residual_weights" in extras.tensors, bool(extras.meta.get("uniform_mix"))
        ), **extras.meta,
    )  # fmt: skip
    tensors = extras.tensors
    if isinstance(learner, ConditionalPromptLearner):
        tensors = {**tensors, **meta_net_tensors(learner)}
    prior = kept.prior if decision.prior_weight else None
    save_prompt_file(project.prompts, learner.ctx.detach(), class_features, meta, prior, tensors)
    return project.prompts
