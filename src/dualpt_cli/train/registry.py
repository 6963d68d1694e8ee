"""The registry of training methods: every ``--method`` of the vocabulary (:data:`dualpt_cli.core.vocab.Method`) is
one :class:`~.method.TrainMethod` object from its own module, listed here once; and :func:`resolve_recipe`, which
fills a run's options from its method and recipe.

Adding a method: a value of the ``Method`` literal, a module with its ``TrainMethod`` (learner or fit, defaults,
settings), its line below, and its scorer in :mod:`dualpt_cli.predict.scorers` (a prompt file's methods share
the scorers there; tests/train/test_registry.py checks both registries cover the vocabulary).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..core.vocab import Method
from ..errors import DataError, ProjectError
from ..model.head import Decision, blend_logits, prior_features
from .config import BASE_TO_NEW_EPOCHS, RECIPES, TrainConfig
from .method import FitInputs, Fitted, TrainMethod, closed_form_settings, no_resume
from .probe import LINEAR_PROBE
from .prompt_methods import COCOOP, CODUALPT, COOP, DUALPT, PLOT
from .tip import TIP_ADAPTER, TIP_ADAPTER_F


def _prior_alone(inputs: FitInputs, prior: torch.Tensor, kind: str) -> Fitted:
    """A training-free prompt file: the prior prototypes alone, at weight 1."""
    cfg = inputs.cfg
    decision = Decision(cfg.method, 0.0, 1.0, kind, reason="training-free method")
    return Fitted(decision, blend_logits(None, inputs.z, prior, inputs.bb.logit_scale, 0.0, 1.0), prior=prior)


def _zero_shot(inputs: FitInputs) -> Fitted:
    """Zero-shot CLIP: "a photo of a {name}." for every class."""
    return _prior_alone(inputs, inputs.text, "names")


def _descriptions(inputs: FitInputs) -> Fitted:
    """The class names' prompt averaged with the class's description phrases (Menon & Vondrick)."""
    if not bool(inputs.desc_has.any()):
        raise ProjectError(
            f"--method descriptions: no descriptions in {inputs.project.descriptions}; run dualpt describe first"
        )
    return _prior_alone(inputs, prior_features(inputs.text, inputs.desc_mean, inputs.desc_has), "descriptions")


def _training_free(cfg: TrainConfig) -> dict[str, object]:
    no_resume(cfg)
    return closed_form_settings(cfg, aug_views=1)  # one view per image, for the training accuracy


def _descriptions_settings(cfg: TrainConfig) -> dict[str, object]:
    if cfg.context == "none":
        raise DataError("--method descriptions needs the project's descriptions; drop --context none")
    return _training_free(cfg)


ZERO_SHOT = TrainMethod("zero-shot", fit=_zero_shot, settings=_training_free)
DESCRIPTIONS = TrainMethod("descriptions", fit=_descriptions, settings=_descriptions_settings)

TRAIN_METHODS: dict[str, TrainMethod] = {
    m.name: m
    for m in (
        DUALPT,
        CODUALPT,
        COOP,
        COCOOP,
        PLOT,
        LINEAR_PROBE,
        TIP_ADAPTER,
        TIP_ADAPTER_F,
        ZERO_SHOT,
        DESCRIPTIONS,
    )
}


def train_method(name: Method | str) -> TrainMethod:
    """The registered method ``name`` (TrainConfig has checked it is one of the vocabulary)."""
    return TRAIN_METHODS[name]


def resolve_recipe(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with every option left unset (None) filled in from its method, then its recipe (and checked
    again); a base-to-new run (``base_classes``) without ``epochs`` gets the paper's :data:`BASE_TO_NEW_EPOCHS`
    unless its method has its own; then the settings that define the method (``TrainMethod.settings``; applying
    them twice changes nothing, so a saved run_config.json reruns as it ran)."""
    method = train_method(cfg.method)
    if cfg.base_classes is not None and cfg.epochs is None and "epochs" not in method.defaults:
        cfg = replace(cfg, epochs=BASE_TO_NEW_EPOCHS)
    if cfg.fresh_views and cfg.fresh_crops is None:  # --fresh-views asks for cached views, one per epoch
        cfg = replace(cfg, fresh_crops=False)
    cfg = replace(cfg, **method.prepare(cfg))
    for preset in (method.defaults, RECIPES[cfg.recipe]):
        cfg = replace(cfg, **{k: v for k, v in preset.items() if getattr(cfg, k) is None})
    return replace(cfg, **method.settings(cfg))
