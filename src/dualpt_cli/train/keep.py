"""What a training run keeps: the classifier (the guard, or the blend under the residual head) and the prompt
file, written on rank 0 only under torchrun."""

from __future__ import annotations

from typing import Any

import torch

from ..core.project import Project
from ..model.head import (
    CHOOSE_WEIGHT_MIN_VAL,
    Decision,
    choose,
    collapsed,
)
from ..model.prompts import PromptLearner
from ..model.residual import ResidualHead
from .config import TrainConfig
from .export import save_prompts
from .headfit import prior_of
from .hooks import BestEpoch, Callbacks
from .methods import batched_logits
from .objective import Objective
from .trainset import TrainData


def describe_head(head: ResidualHead) -> str:
    """One line on the fitted head: its cross-validated gain, or what it was fitted on at one shot."""
    cv = head.cv_acc
    if head.folds == 0:
        return f"head: residual fitted on 1 shot per class, temperature {head.temperature:.2f} (no folds at 1 shot)"
    return (
        f"head: cross-validated accuracy {cv['head']:.1%} ({head.folds} folds; zero-shot {cv['zero-shot']:.1%}, "
        f"blend {cv['blend']:.1%}), temperature {head.temperature:.2f}"
    )


def finish(
    cfg: TrainConfig,
    cb: Callbacks,
    project: Project,
    learner: PromptLearner,
    objective: Objective,
    data: TrainData,
    epochs: int,
    best: BestEpoch,
    last: dict[str, Any],
    head: ResidualHead | None = None,
) -> Decision:
    """Choose the classifier to keep (the guard) and write the prompt file; on rank 0 only under torchrun."""
    decision, prior = decide(cfg, learner, objective, data, last)
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
    if head is not None:
        extra = {"residual_weights": head.weights}
        meta = {"temperature": head.temperature, "head": head.to_json()}
    else:
        extra, meta = None, None
    save_prompts(
        project, learner, learner.bb, cfg, objective, data, epochs, best, decision, prior, extra=extra, meta_fields=meta
    )
    return decision


@torch.no_grad()
def decide(
    cfg: TrainConfig, learner: PromptLearner, objective: Objective, data: TrainData, last: dict[str, Any]
) -> tuple[Decision, torch.Tensor]:
    """The classifier to save (:func:`head.choose`) and the prior prototypes it blends, (K, d)."""
    bb = learner.bb
    assert cfg.prior_weight is not None  # set by config.resolve_recipe
    names, prior, kind = prior_of(learner, objective)  # (K, d), (K, d)
    has_desc = kind == "descriptions"
    is_collapsed = bool(last) and collapsed(last["loss_img"], last["acc"], learner.num_classes)
    if not cfg.guard:
        why = "residual head on the blend" if cfg.head == "residual" else "no guard"
        return Decision("trained", 1.0, cfg.prior_weight, kind, collapsed=is_collapsed, reason=why), prior
    dual = z = labels = None
    if data.val is not None:
        dual = batched_logits(objective, learner, data.val.local[:, 0], data.val.global_[:, 0])  # (V, K)
        z, labels = data.val.global_[:, 0].to(bb.device).float(), data.val_labels
    per_class = len(labels) / learner.num_classes if labels is not None else 0
    decision = choose(
        dual,
        z,
        labels,
        names,
        prior,
        has_desc,
        bb.logit_scale,
        cfg.prior_weight,
        is_collapsed,
        choose_weight=per_class >= CHOOSE_WEIGHT_MIN_VAL,
    )
    return decision, names if decision.prior == "names" else prior
