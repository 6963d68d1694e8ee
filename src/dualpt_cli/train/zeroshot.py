"""``--method zero-shot`` and ``descriptions``: training-free prompt files. zero-shot CLIP scores by "a photo of a
{name}." (its one prompt is the file's context, :func:`.methods.fixed_learner`); descriptions averages that prompt
with the class's description phrases (Menon & Vondrick). Both keep the prior alone, at weight 1."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DataError, ProjectError
from ..model.head import Decision, blend_logits, prior_features
from .config import TrainConfig
from .method import FitInputs, Fitted, TrainMethod, closed_form_settings, no_resume


def prior_alone(inputs: FitInputs, prior: torch.Tensor, kind: str) -> Fitted:
    """A training-free prompt file: the prior prototypes (K, d) alone, at weight 1."""
    decision = Decision(inputs.cfg.method, 0.0, 1.0, kind, reason="training-free method")
    return Fitted(decision, blend_logits(None, inputs.z, prior, inputs.bb.logit_scale, 0.0, 1.0), prior=prior)


def zero_shot(inputs: FitInputs) -> Fitted:
    """Zero-shot CLIP: "a photo of a {name}." for every class."""
    return prior_alone(inputs, inputs.text, "names")


def descriptions(inputs: FitInputs) -> Fitted:
    """The class name's prompt averaged with the class's description phrases."""
    if not bool(inputs.desc_has.any()):
        raise ProjectError(
            f"--method descriptions: no descriptions in {inputs.project.descriptions}; run dualpt describe first"
        )
    return prior_alone(inputs, prior_features(inputs.text, inputs.desc_mean, inputs.desc_has), "descriptions")


def training_free(cfg: TrainConfig) -> dict[str, Any]:
    """Nothing to resume or choose; one view per image, for the training accuracy."""
    no_resume(cfg)
    return closed_form_settings(cfg, aug_views=1)


def descriptions_settings(cfg: TrainConfig) -> dict[str, Any]:
    if cfg.context == "none":
        raise DataError("--method descriptions needs the project's descriptions; drop --context none")
    return training_free(cfg)


ZERO_SHOT = TrainMethod("zero-shot", fit=zero_shot, settings=training_free)
DESCRIPTIONS = TrainMethod("descriptions", fit=descriptions, settings=descriptions_settings)
