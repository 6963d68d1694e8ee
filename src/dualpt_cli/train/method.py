"""What a ``--method`` is to training: one :class:`TrainMethod` object, registered in :mod:`.registry`.

A method declares the options it sets when they are left unset (``defaults``, before the recipe),
what it adjusts before that (``prepare``), the options it fixes (``settings``) and either

- ``learner``: the prompt learner the training loop (:mod:`.loop`) trains, with ``global_scores`` saying how the
  loss scores an image (Eq. 8 on the local features, or ``logit_scale * cos`` of the global feature), or
- ``fit``: a fit on the cached features that runs no epochs of the loop (:func:`.methods.run_fixed`), returning
  the classifier and what the method stores in the prompt file (:class:`Fitted`).

How predict scores the prompt file such a method writes is the predict side's registry
(:mod:`dualpt_cli.predict.scorers`), keyed by the same vocabulary (:data:`dualpt_cli.core.vocab.Method`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..clip.backbone import Backbone
from ..core.project import Project
from ..core.vocab import Method
from ..errors import DataError
from ..model.head import Decision
from ..model.prompts import PromptLearner
from .config import TrainConfig
from .hooks import Callbacks
from .trainset import TrainData


@dataclass(frozen=True)
class FitInputs:
    """What a method fitted on the cached features gets (:func:`.methods.run_fixed` gathers it)."""

    cfg: TrainConfig  # the resolved options
    cb: Callbacks  # for its messages
    project: Project
    bb: Backbone
    data: TrainData  # the training set: cached views, labels, held-out images, classes
    z: torch.Tensor  # (images x views, d) every cached global view of the training images
    labels: torch.Tensor  # (images x views,) their classes
    text: torch.Tensor  # (K, d) "a photo of a {name}." features: zero-shot CLIP's classifier
    desc_mean: torch.Tensor  # (K, d) mean of each class's normalised description features
    desc_has: torch.Tensor  # (K,) bool: whether the class has descriptions

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.data.classes]


@dataclass(frozen=True)
class Fitted:
    """A fitted classifier and what the method stores in its prompt file besides the context."""

    decision: Decision  # the blend the prompt file keeps (dual and prior weights) and why
    logits: torch.Tensor  # (images x views, K) on the training views: the training loss and accuracy
    prior: torch.Tensor | None = None  # (K, d) the prior prototypes blended in, if any
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # the method's own tensors in the file
    meta: dict[str, Any] = field(default_factory=dict)  # and its metadata fields (PromptMeta)
    epochs: int = 0  # epochs of a fit that runs some (Tip-Adapter-F's keys)


Learner = Callable[[TrainConfig, Backbone, list[str], list[list[str]] | None], PromptLearner]
Fit = Callable[[FitInputs], Fitted]
Options = Callable[[TrainConfig], dict[str, Any]]


def no_options(cfg: TrainConfig) -> dict[str, Any]:
    return {}


def never(cfg: TrainConfig) -> bool:
    return False


@dataclass(frozen=True)
class TrainMethod:
    """One ``--method`` as training sees it. Exactly one of ``learner`` and ``fit`` is given."""

    name: Method
    learner: Learner | None = None  # prompt tuning: the learner of class names (and prompt texts) the loop trains
    fit: Fit | None = None  # no epochs of the loop: fitted (or just built) on the cached features
    defaults: Mapping[str, Any] = field(default_factory=dict)  # options it sets when unset, before the recipe
    prepare: Options = no_options  # options it derives from the unresolved config, before ``defaults``
    settings: Options = no_options  # options it fixes after the recipe (a DataError where one conflicts)
    global_scores: bool = False  # the loss scores the global feature, logit_scale * cos(z, w_k), not Eq. 8
    raw_view: Callable[[TrainConfig], bool] = never  # fits the un-augmented view of each image, not augmented ones

    def __post_init__(self) -> None:
        if (self.learner is None) == (self.fit is None):
            raise ValueError(f"method {self.name}: give a learner or a fit, not {'both' if self.fit else 'neither'}")

    @property
    def closed_form(self) -> bool:
        """Whether the method runs no epochs of the prompt-tuning loop."""
        return self.fit is not None


def fixed(cfg: TrainConfig, **values: Any) -> dict[str, Any]:
    """``values``, the options ``cfg.method`` fixes: a DataError where the user set one to something else."""
    defaults = TrainConfig.__dataclass_fields__
    for key, value in values.items():
        given = getattr(cfg, key)
        if given not in (value, defaults[key].default):
            flag = "--" + {"lam": "lambda", "n_prompts": "prompts"}.get(key, key).replace("_", "-")
            m = cfg.method
            raise DataError(f"--method {m} uses {flag} {value}, not {given}; drop {flag} or use --method dualpt")
    return values


def no_resume(cfg: TrainConfig, what: str = "trains no epochs") -> None:
    """A DataError for ``--resume`` with a method fitted on the cached features: there is nothing to resume."""
    if cfg.resume:
        raise DataError(f"--method {cfg.method} {what}, so there is nothing to resume; drop --resume")


def closed_form_settings(cfg: TrainConfig, **views: Any) -> dict[str, Any]:
    """What a method fitted on the cached features fixes: no held-out images, guard, prior or head (nothing is
    chosen on them) and cached views (``views``: how many; one per image for the training accuracy)."""
    return {"guard": False, "val_shots": 0, "prior_weight": 0.0, "head": "none", "fresh_crops": False, **views}
