"""The registry of training methods: every ``--method`` of the vocabulary (:data:`dualpt_cli.core.vocab.Method`) is
one :class:`~.method.TrainMethod` object from its own module, listed here once; and :func:`resolve_recipe`, which
fills a run's options from its method and recipe.

Adding a method: a value of the ``Method`` literal, a module with its ``TrainMethod`` (learner or fit, defaults,
settings), its line below, and its scorer in :mod:`dualpt_cli.predict.scorers` (a prompt file's methods share
the scorers there; tests/train/test_registry.py checks both registries cover the vocabulary).
"""

from __future__ import annotations

from dataclasses import replace

from ..core.vocab import Method
from .config import BASE_TO_NEW_EPOCHS, RECIPES, TrainConfig
from .method import TrainMethod
from .probe import LINEAR_PROBE
from .prompt_methods import COCOOP, CODUALPT, COOP, DUALPT, PLOT
from .tip import TIP_ADAPTER, TIP_ADAPTER_F
from .zeroshot import DESCRIPTIONS, ZERO_SHOT

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
