"""The default recipe's head in a training run (:mod:`dualpt_cli.model.residual`): fitted before the first
epoch on the blend at the initial prompts, then held fixed while the prompts train inside it.

Order of a run with ``--head residual``:

1. the blend's logits of every cached view at the initial prompts: ``DUAL-PT(x) + prior_weight * s cos(z, p_k)``;
2. the residual r and the temperature T fitted on them, with cross-validation over the shots;
3. the prompts train on the cross-entropy of the whole classifier, ``DUAL-PT(x) + fixed(x)`` with
   ``fixed(x) = prior_weight * s cos(z, p_k) + s <normalize(z), r_k>`` (no gradient into r): they learn what
   the head leaves unexplained, and at epoch 0 the classifier is the cross-validated head exactly.

The head is a deterministic function of the initial prompts and the cached features, so ``--resume`` and every
torchrun rank fit the same one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.distributed import SINGLE, Dist
from ..model.head import blend_logits, name_features, prior_features
from ..model.prompts import PromptLearner
from ..model.residual import ResidualHead, fit_head, residual_logits
from .config import TrainConfig
from .methods import batched_logits
from .objective import Objective
from .trainset import TrainData


@dataclass
class FixedLogits:
    """The part of the final logits that does not depend on the prompts: the prior and the residual."""

    prior: torch.Tensor  # (K, d)
    prior_weight: float
    logit_scale: float
    residual: torch.Tensor | None = None  # (K, d)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """(B, K) for global features ``z`` (B, d)."""
        out = blend_logits(None, z, self.prior.to(z.device), self.logit_scale, 0.0, self.prior_weight)
        if self.residual is not None:
            out = out + residual_logits(z, self.residual.to(z.device), self.logit_scale)
        return out


def prior_of(learner: PromptLearner, objective: Objective) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(names (K, d), prior (K, d), kind): the zero-shot name prompts, the prior prototypes and where they came
    from ("descriptions" where any class has them, else "names")."""
    names = name_features(learner.bb, learner.class_names)
    prior = prior_features(names, objective.desc_mean, objective.desc_has)
    kind = "descriptions" if bool(objective.desc_has.any()) else "names"
    return names, prior, kind


@torch.no_grad()
def fit_run_head(
    cfg: TrainConfig, learner: PromptLearner, objective: Objective, data: TrainData, dist: Dist = SINGLE
) -> tuple[ResidualHead, FixedLogits]:
    """Fit the head on every cached training view at the learner's current (initial) prompts."""
    bb = learner.bb
    assert cfg.prior_weight is not None  # set by registry.resolve_recipe
    names, prior, kind = prior_of(learner, objective)
    n, V, d = data.train.global_.shape
    z = data.train.global_.to(bb.device).float()  # (n, V, d)
    local = data.train.local.flatten(0, 1)  # (n V, N, d)
    dual = batched_logits(objective, learner, local, z.flatten(0, 1), dist=dist)  # (n V, K)
    prior_part = FixedLogits(prior, cfg.prior_weight, bb.logit_scale)(z.flatten(0, 1))
    base = (dual + prior_part).view(n, V, -1)
    references = {"zero-shot": FixedLogits(names, 1.0, bb.logit_scale)(z.flatten(0, 1)).view(n, V, -1)}
    if kind == "descriptions":
        references["descriptions"] = FixedLogits(prior, 1.0, bb.logit_scale)(z.flatten(0, 1)).view(n, V, -1)
    labels = data.train_labels.to(bb.device)
    head = fit_head(z, labels, base, bb.logit_scale, cfg.head_lambda, references)
    return head, FixedLogits(prior, cfg.prior_weight, bb.logit_scale, head.weights)
