"""The prompt-tuning methods (docs/method.md, "Methods"): dualpt, plot, coop, codualpt and cocoop. They share the
training loop (:mod:`.loop`) and differ in their learner, how the loss scores an image and the options they fix.

- dualpt: M prompts per class, Eq. 8 on the local features, L_LLM with the descriptions;
- plot: node matching only (alpha 0) and no LLM (beta 0, context none): PLOT;
- coop: one prompt of M x n_ctx context tokens (DUAL-PT's parameter count), ending in "{name}.", no LLM, scored on
  the global feature;
- codualpt, cocoop: CoCoOp's meta-net shifts the context per image (n_ctx 4 from "a photo of a", batch 1, 10
  epochs); codualpt scores by Eq. 8, cocoop (one prompt, "{name}.", no LLM) on the global feature.
"""

from __future__ import annotations

from typing import Any

from ..clip.backbone import Backbone
from ..data.coop import find_layout, parse_dataset_spec
from ..errors import DataError
from ..model.prompts import ConditionalPromptLearner, PromptLearner
from .config import TrainConfig
from .method import TrainMethod, fixed

# PLOT's published runs (CHENGY12/PLOT, plot-coop/configs/trainers/PLOT/rn50.yaml): batch 128, 32 on these
# small fine-grained datasets (recognised by --dataset coop:ROOT/NAME; an ImageFolder gets 128); ImageNet 50 epochs.
PLOT_SMALL_BATCH = ("Flowers102", "FGVCAircraft", "StanfordCars")
COCOOP_DEFAULTS = {"n_ctx": 4, "ctx_init": "a photo of a", "batch_size": 1, "epochs": 10}  # CoCoOp's recipe


def shared_learner(
    cfg: TrainConfig, bb: Backbone, names: list[str], class_texts: list[list[str]] | None
) -> PromptLearner:
    """M prompts per class with a shared (or class-specific) context."""
    assert cfg.n_ctx is not None and cfg.ctx_init is not None  # set by registry.resolve_recipe
    return PromptLearner(
        bb, names, cfg.n_prompts, cfg.n_ctx, cfg.ctx_init, cfg.class_specific, cfg.seed, class_texts=class_texts
    )


def conditional_learner(
    cfg: TrainConfig, bb: Backbone, names: list[str], class_texts: list[list[str]] | None
) -> PromptLearner:
    """The context shifted per image by CoCoOp's meta-net (:mod:`dualpt_cli.model.conditional`)."""
    assert cfg.n_ctx is not None and cfg.ctx_init is not None  # set by registry.resolve_recipe
    return ConditionalPromptLearner(
        bb,
        names,
        cfg.n_prompts,
        cfg.n_ctx,
        cfg.ctx_init,
        cfg.seed,
        class_texts=class_texts,
        class_specific=cfg.class_specific,
    )


def plot_paper_settings(cfg: TrainConfig) -> dict[str, Any]:
    """``--method plot --recipe paper``: PLOT's batch size (128; 32 on :data:`PLOT_SMALL_BATCH`) and ImageNet's 50
    epochs, for the options left unset."""
    if cfg.recipe != "paper":
        return {}
    name = ""
    if cfg.dataset:
        try:
            name = find_layout(parse_dataset_spec(cfg.dataset)).name
        except DataError:  # not a CoOp dataset: loading it says so
            pass
    out: dict[str, Any] = {}
    if cfg.batch_size is None:
        out["batch_size"] = 32 if name in PLOT_SMALL_BATCH else 128
    if cfg.epochs is None and name == "ImageNet":
        out["epochs"] = 50
    return out


def plot_settings(cfg: TrainConfig) -> dict[str, Any]:
    return fixed(cfg, alpha=0.0, beta=0.0, context="none")


def coop_settings(cfg: TrainConfig) -> dict[str, Any]:
    assert cfg.n_ctx is not None  # the recipe's, applied before the method's settings
    return {
        **fixed(cfg, beta=0.0, context="none"),
        "n_prompts": 1,
        "n_ctx": cfg.n_prompts * cfg.n_ctx,
        "prompt_text": "name",
    }


def cocoop_settings(cfg: TrainConfig) -> dict[str, Any]:
    return {**fixed(cfg, beta=0.0, context="none"), "n_prompts": 1, "prompt_text": "name"}


DUALPT = TrainMethod("dualpt", learner=shared_learner)
PLOT = TrainMethod("plot", learner=shared_learner, prepare=plot_paper_settings, settings=plot_settings)
COOP = TrainMethod("coop", learner=shared_learner, settings=coop_settings, global_scores=True)
CODUALPT = TrainMethod("codualpt", learner=conditional_learner, defaults=COCOOP_DEFAULTS)
COCOOP = TrainMethod(
    "cocoop",
    learner=conditional_learner,
    defaults=COCOOP_DEFAULTS,
    settings=cocoop_settings,
    global_scores=True,
)
