"""The registry of how a prompt file's ``method`` scores an image: one :class:`PredictMethod` per value of the
vocabulary (:data:`dualpt_cli.core.vocab.Method`), the predict side of the training registry
(:mod:`dualpt_cli.train.registry`; predict never imports train, so the two are keyed by the same vocabulary and
tests/train/test_registry.py checks that both cover it).

A method's scorer is built from the prompt file once per classifier (:class:`ScoringInputs`: the stored tensors
and metadata, the classes to score) and gives the first term of the classifier's logits,
``(B, K) = scorer.logits(z, Z)`` from global features z (B, d) and local features Z (B, N, d), before the blend
with the prior, the residual head and the temperature (:meth:`~dualpt_cli.predict.classifier.Classifier.
logits_from_features`). zero-shot and descriptions files have dual weight 0: only the prior scores them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from ..clip.backbone import Backbone
from ..core.vocab import Method
from ..data.classes import ClassEntry
from ..model.linear_probe import probe_logits
from ..model.lpclip import lpclip_logits
from ..model.matcher import Matcher
from ..model.scores import global_logits
from ..model.tip_adapter import cache_logits
from ..promptfile.meta import PromptMeta
from .conditional import ConditionalScorer
from .stored import probe_bias, probe_weights, tip_cache


@dataclass(frozen=True)
class ScoringInputs:
    """What a scorer is built from: the prompt file and the classifier's classes."""

    bb: Backbone
    tensors: dict[str, torch.Tensor]  # the prompt file's tensors
    meta: PromptMeta
    classes: list[ClassEntry]  # the classes to score (trained ones and new ones)
    path: Path  # the prompt file, for messages
    matcher: Matcher  # Eq. 8 with the file's settings
    W: torch.Tensor  # (K, M, d) the class prompt features of ``classes``, on the model's device

    @property
    def known(self) -> list[ClassEntry]:
        return self.meta.classes


class Scorer(Protocol):
    def logits(self, z: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """(B, K) scores of images with global (B, d) and local (B, N, d) features on the model's device."""
        ...


def eq8_logits(bb: Backbone, matcher: Matcher, Z: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """(B, K) DUAL-PT logits of local features Z (B, N, d) with class prompts W (K, M, d), as training computes
    them."""
    with torch.no_grad(), bb.autocast():
        return matcher.logits(Z.to(bb.device), W).float()


@dataclass(frozen=True)
class SharedPrompts:
    """dualpt, plot (and the training-free files, which never use it): Eq. 8 with the stored class prompts."""

    bb: Backbone
    matcher: Matcher
    W: torch.Tensor  # (K, M, d)

    def logits(self, z: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        return eq8_logits(self.bb, self.matcher, Z, self.W)


@dataclass(frozen=True)
class GlobalPrompt:
    """coop: one prompt, the global feature, ``logit_scale * cos(z, w_k)``."""

    w: torch.Tensor  # (K, d)
    logit_scale: float

    def logits(self, z: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        return global_logits(z, self.w, self.logit_scale)


@dataclass(frozen=True)
class Probe:
    """linear-probe: the probe's weights on the global feature (CLAP's cosine probe, or LP-CLIP's raw-feature
    logistic regression with its bias)."""

    weights: torch.Tensor  # (K, d)
    bias: torch.Tensor | None  # (K,) LP-CLIP's; None for the cosine probes
    logit_scale: float
    normalize: bool  # whether the cosine probe normalises its weights

    def logits(self, z: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            return lpclip_logits(z.float(), self.weights, self.bias.to(z.device))
        return probe_logits(z, self.weights, self.logit_scale, self.normalize)


@dataclass(frozen=True)
class TipAdapter:
    """tip-adapter(-f): the cache term; its zero-shot term is the prior at weight 1."""

    keys: torch.Tensor  # (n, d)
    values: torch.Tensor  # (n, K)
    alpha: float
    beta: float

    def logits(self, z: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        return cache_logits(F.normalize(z.float(), dim=-1), self.keys, self.values, self.alpha, self.beta)


def shared(s: ScoringInputs) -> Scorer:
    return SharedPrompts(s.bb, s.matcher, s.W)


def global_prompt(s: ScoringInputs) -> Scorer:
    return GlobalPrompt(s.W[:, 0], s.matcher.logit_scale)


def probe(s: ScoringInputs) -> Scorer:
    bias = probe_bias(s.tensors, s.known, s.classes, s.path)  # LP-CLIP: checked first (no new classes)
    weights = probe_weights(s.bb, s.tensors, s.meta, s.known, s.classes, s.path)
    return Probe(weights, bias, s.matcher.logit_scale, bool(s.meta.probe_normalize))


def conditional(s: ScoringInputs) -> Scorer:
    return ConditionalScorer(s.bb, s.tensors, s.meta, s.classes, s.matcher, global_scores=False)


def conditional_global(s: ScoringInputs) -> Scorer:
    return ConditionalScorer(s.bb, s.tensors, s.meta, s.classes, s.matcher, global_scores=True)


def tip(s: ScoringInputs) -> Scorer:
    t = tip_cache(s.bb, s.tensors, s.meta, s.known, s.classes, s.path)
    return TipAdapter(t.keys, t.values, t.alpha, t.beta)


@dataclass(frozen=True)
class PredictMethod:
    """One ``--method`` as predict sees its prompt file."""

    name: Method
    scorer: Callable[[ScoringInputs], Scorer]  # the first term of the logits
    local_matching: bool = False  # scores by a plan over the local features with shared prompts: explain shows it


PREDICT_METHODS: dict[str, PredictMethod] = {
    m.name: m
    for m in (
        PredictMethod("dualpt", shared, local_matching=True),
        PredictMethod("codualpt", conditional),
        PredictMethod("coop", global_prompt),
        PredictMethod("cocoop", conditional_global),
        PredictMethod("plot", shared, local_matching=True),
        PredictMethod("linear-probe", probe),
        PredictMethod("tip-adapter", tip),
        PredictMethod("tip-adapter-f", tip),
        PredictMethod("zero-shot", shared),
        PredictMethod("descriptions", shared),
    )
}


def predict_method(name: Method | str) -> PredictMethod:
    """How a prompt file of method ``name`` is scored (PromptMeta has checked it is one of the vocabulary)."""
    return PREDICT_METHODS[name]
