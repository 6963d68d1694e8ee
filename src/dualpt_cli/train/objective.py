"""The loss of DUAL-PT (method card: "Logits and losses"): Eq. 8 logits from graph matching and the LLM
alignment term L_LLM, mixed as ``beta L_LLM + (1 - beta) L_img``.

The prompt-tuning methods differ only in where the prompts come from and how they score an image
(:meth:`Objective.prompts`; :meth:`Objective.logits`, by the registered method's ``global_scores``): dualpt and
plot match the local features with the shared prompts (Eq. 8); codualpt does so with each image's own prompts
(:mod:`conditional`); coop scores the global feature against its single prompt, ``logit_scale * cos(z, w_k)``,
and cocoop against image b's own single prompt, ``logit_scale * cos(z_b, w_bk)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..clip.backbone import Backbone
from ..core.distributed import SINGLE, Dist
from ..core.project import Project
from ..errors import DataError, ProjectError, first_names
from ..model.conditional import per_image_global_logits, per_image_logits, per_image_logits_with_stats
from ..model.matcher import Matcher
from ..model.matching import MatchingStats, SolverSettings, sinkhorn_ot_distance
from ..model.prompts import ConditionalPromptLearner, PromptLearner, description_features
from ..model.scores import global_logits
from .config import TrainConfig
from .hooks import Callbacks
from .parallel import prompt_features
from .registry import train_method
from .trainset import TrainData, class_phrases


@dataclass
class Objective:
    """The loss: Eq. 8 logits (``matcher``) and the frozen description prototypes for L_LLM."""

    matcher: Matcher
    beta: float
    llm_loss: str
    desc_mean: torch.Tensor  # (K, d) mean of normalised description features
    desc_has: torch.Tensor  # (K,) bool
    desc_sets: list[torch.Tensor]  # K x (e_k, d)
    global_scores: bool = False  # coop, cocoop: logit_scale * cos of the global feature (TrainMethod.global_scores)

    def prompts(self, learner: PromptLearner, z: torch.Tensor | None = None, dist: Dist = SINGLE) -> torch.Tensor:
        """Class prompt features: (K, M, d), or for codualpt each image's own, (B, K, M, d) from global
        features ``z`` (B, d). Under torchrun the shared prompts' classes are split over the ranks
        (:func:`parallel.prompt_features`; a collective: every rank calls it); codualpt's per-image prompts
        are already split with the images."""
        if isinstance(learner, ConditionalPromptLearner):
            assert z is not None, "conditional prompts need the images' global features"
            return learner.forward_conditional(z)
        return prompt_features(learner, dist)

    def logits(self, Z: torch.Tensor, W: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) logits of images with local features Z (B, N, d) and global features z (B, d).

        W is :meth:`prompts`' output: Eq. 8 with the shared prompts (K, M, d) or per-image ones (B, K, M, d);
        coop (M = 1) scores the global feature, ``logit_scale * cos(z, w_k)``; cocoop with per-image W (B, K, 1, d).
        """
        if self.global_scores:
            return self._coop_logits(W, z)
        if W.dim() == 4:
            return per_image_logits(self.matcher, Z, W)
        return self.matcher.logits(Z, W)

    def logits_with_stats(
        self, Z: torch.Tensor, W: torch.Tensor, z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, MatchingStats]:
        """:meth:`logits` and the solver's statistics (coop and cocoop solve nothing)."""
        if self.global_scores:
            return self._coop_logits(W, z), MatchingStats(0, 0, True)
        if W.dim() == 4:
            return per_image_logits_with_stats(self.matcher, Z, W)
        return self.matcher.logits_with_stats(Z, W)

    def _coop_logits(self, W: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        assert z is not None, "coop and cocoop score the global feature"
        if W.dim() == 4:  # cocoop: each image's own prompts
            return per_image_global_logits(z, W, self.matcher.logit_scale)  # (B, K)
        return global_logits(z, W[:, 0], self.matcher.logit_scale)  # (B, K)

    def llm_loss_value(self, W: torch.Tensor, logits: torch.Tensor, z_global: torch.Tensor) -> torch.Tensor:
        """L_LLM between prompts and descriptions; 0 when no class has descriptions.

        With per-image prompts W (B, K, M, d) (codualpt), the mean over the images of each image's L_LLM.
        """
        if self.beta == 0 or not bool(self.desc_has.any()):
            return W.new_zeros(())
        if W.dim() == 4:
            return torch.stack(
                [self.llm_loss_value(w, logits[b : b + 1], z_global[b : b + 1]) for b, w in enumerate(W)]
            ).mean()
        has = self.desc_has
        if self.llm_loss == "cosine":  # Eq. 5: 1 - cos(mean_j w_kj, mean_e h_ke), averaged over classes
            return (1.0 - F.cosine_similarity(W[has].mean(dim=1), self.desc_mean[has], dim=-1)).mean()
        if self.llm_loss == "wd":  # entropic OT between {w_kj} and {h_ke}, cost 1 - cos
            ks = has.nonzero().flatten().tolist()
            lam = self.matcher.solver.lam
            return torch.stack([sinkhorn_ot_distance(W[k], self.desc_sets[k], lam) for k in ks]).mean()
        # "ce": match the zero-shot prediction made from the description prototypes
        target = self.matcher.logit_scale * F.normalize(z_global, dim=-1) @ F.normalize(self.desc_mean, dim=-1).T
        return -(target.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()


def warn_unusable_descriptions(project: Project, entries: list[dict] | None, cb: Callbacks) -> None:
    """A warning when the project's descriptions.json holds no classes or classes whose describe failed: they
    train without LLM context, which the user did not ask for (``--provider none`` entries are on purpose)."""
    if entries is None:
        return
    path = project.descriptions
    if not entries:
        cb.warn(
            f"{path} describes no class (a describe run that failed before any answer?); training without LLM "
            "context: run dualpt describe again, or delete the file to train on the class names"
        )
        return
    failed = [e["folder"] for e in entries if e["status"] == "failed"]
    if failed:
        cb.warn(
            f"{len(failed)} of {len(entries)} class(es) in {path} failed in dualpt describe and have no phrases "
            f"({first_names(failed)}); run dualpt describe again to retry them"
        )


def build_objective(cfg: TrainConfig, project: Project, bb: Backbone, data: TrainData, cb: Callbacks) -> Objective:
    phrases = class_phrases(data)
    mean, has, sets = description_features(bb, [c.name for c in data.classes], phrases, cfg.description_template)
    beta = cfg.beta
    warn_unusable_descriptions(project, data.descriptions, cb)
    if not bool(has.any()):
        if cfg.context == "llm":
            raise ProjectError(f"--context llm: no descriptions in {project.descriptions}; run dualpt describe")
        if beta:
            cb.info("no LLM descriptions for these classes: training without LLM context (beta = 0)")
        beta = 0.0
    else:
        missing = [c.folder for c, h in zip(data.classes, has.tolist()) if not h]
        if missing:
            cb.warn(f"{len(missing)} class(es) have no descriptions and get no LLM alignment: {first_names(missing)}")
        if cfg.llm_loss == "ce" and missing:
            raise DataError("--llm-loss ce needs descriptions for every class; run dualpt describe or use cosine")
    return Objective(
        matcher=matcher_for(cfg, bb),
        beta=beta,
        llm_loss=cfg.llm_loss,
        desc_mean=mean,
        desc_has=has,
        desc_sets=sets,
        global_scores=train_method(cfg.method).global_scores,
    )


def matcher_for(cfg: TrainConfig, bb: Backbone) -> Matcher:
    """Eq. 8 with this run's matching settings and the model's logit scale."""
    solver = SolverSettings(
        alpha=cfg.alpha,
        lam=cfg.lam,
        outer_iters=cfg.outer_iters,
        inner_iters=cfg.inner_iters,
        tol=cfg.tol,
        align=cfg.align,
    )
    return Matcher(logit_scale=bb.logit_scale, solver=solver, chunk=cfg.match_chunk or None)
