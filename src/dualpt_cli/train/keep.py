"""What a training run keeps: the classifier (the guard, or the blend under the residual head) and the prompt
file, written on rank 0 only under torchrun."""

from __future__ import annotations

from typing import Any

import torch

from ..core.project import Project
from ..model.head import (
    CHOOSE_WEIGHT_MIN_VAL,
    Decision,
    HeldOut,
    Prototypes,
    choose,
    collapsed,
)
from ..model.prompts import PromptLearner
from ..model.residual import ResidualHead
from .export import Kept, MethodExtras, RunRecord, save_prompts
from .headfit import prior_of
from .hooks import Callbacks
from .methods import batched_logits


def describe_head(head: ResidualHead) -> str:
    """One line on the fitted head: its cross-validated gain, or what it was fitted on at one shot."""
    cv = head.cv_acc
    calibration = f"temperature {head.temperature:.2f}" + (f", uniform share {head.mix:.2f}" if head.mix else "")
    if head.folds == 0:
        return f"head: residual fitted on 1 shot per class, {calibration} (no folds at 1 shot)"
    return (
        f"head: cross-validated accuracy {cv['head']:.1%} ({head.folds} folds; zero-shot {cv['zero-shot']:.1%}, "
        f"blend {cv['blend']:.1%}), {calibration}"
    )


def finish(
    run: RunRecord,
    cb: Callbacks,
    project: Project,
    learner: PromptLearner,
    last: dict[str, Any],
    head: ResidualHead | None = None,
) -> Decision:
    """Choose the classifier to keep (the guard, from the ``last`` epoch's record and the held-out images) and
    write the prompt file; on rank 0 only under torchrun."""
    cfg = run.cfg
    kept = decide(run, learner, last)
    decision = kept.decision
    if decision.collapsed:
        cb.warn(
            "training collapsed: the loss is near ln K and training accuracy at chance (every class scores "
            "alike)" + ("" if cfg.guard else "; the default recipe's guard would keep zero-shot CLIP")
        )
    if decision.classifier != "trained":
        cb.warn(
            f"training did not beat {decision.classifier} on the held-out images; the prompt file keeps "
            f"{decision.classifier} ({decision.reason})"
        )
    extras = None
    if head is not None:
        meta = {"temperature": head.temperature, "uniform_mix": head.mix, "head": head.to_json()}
        extras = MethodExtras({"residual_weights": head.weights}, meta)
    save_prompts(project, learner, run, kept, extras)
    return decision


@torch.no_grad()
def decide(run: RunRecord, learner: PromptLearner, last: dict[str, Any]) -> Kept:
    """The classifier to save (:func:`head.choose`) and the prior prototypes (K, d) it blends."""
    bb, cfg, objective, data = learner.bb, run.cfg, run.objective, run.data
    assert cfg.prior_weight is not None  # set by registry.resolve_recipe
    names, prior, kind = prior_of(learner, objective)  # (K, d), (K, d)
    is_collapsed = bool(last) and collapsed(last["loss_img"], last["acc"], learner.num_classes)
    if not cfg.guard:
        why = "residual head on the blend" if cfg.head == "residual" else "no guard"
        return Kept(Decision("trained", 1.0, cfg.prior_weight, kind, collapsed=is_collapsed, reason=why), prior)
    held_out = None
    if data.val is not None and data.val_labels is not None:  # (set together)
        dual = batched_logits(objective, learner, data.val.local[:, 0], data.val.global_[:, 0])  # (V, K)
        held_out = HeldOut(dual, data.val.global_[:, 0].to(bb.device).float(), data.val_labels)
    per_class = len(held_out.labels) / learner.num_classes if held_out is not None else 0
    protos = Prototypes(names, prior, kind == "descriptions", bb.logit_scale)
    decision = choose(
        held_out, protos, cfg.prior_weight, is_collapsed, choose_weight=per_class >= CHOOSE_WEIGHT_MIN_VAL
    )
    return Kept(decision, names if decision.prior == "names" else prior)
