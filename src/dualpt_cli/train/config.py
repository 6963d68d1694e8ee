"""The options of a training run: :class:`TrainConfig`, the recipes that fill in what is left unset, and the
learning-rate schedule. The resolved config is written to ``run_config.json`` beside the run's outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from ..core.checks import check_all, require_finite
from ..core.vocab import CONTEXTS, HEADS, LLM_LOSSES, METHODS, PROMPT_TEXTS  # noqa: F401  (re-exported)
from ..errors import DataError
from ..model.alignment import ALIGNS
from ..model.linear_probe import CONSTRAINTS
from ..model.prompts import DESCRIPTION_TEMPLATE
from ..model.residual import DEFAULT_LAMBDA

# What ``--recipe`` sets for the options left unset (None). "paper" is the paper and method card exactly;
# "default" is the recipe measured on benchmarks/bench_learning.py (docs/method.md, "The default recipe").
RECIPES: dict[str, dict[str, Any]] = {
    "default": {
        "n_ctx": 4,
        "ctx_init": "a photo of a",
        "prompt_text": "descriptions",
        "crop_scale": 0.9,
        "prior_weight": 1.0,
        "guard": False,
        "val_shots": 0,
        "head": "residual",
        "batch_size": 32,
    },
    "paper": {
        "n_ctx": 16,
        "ctx_init": "",
        "prompt_text": "name",
        "crop_scale": 0.08,
        "prior_weight": 0.0,
        "guard": False,
        "val_shots": 0,
        "head": "none",
        "batch_size": 32,
    },
}
BASE_TO_NEW_EPOCHS = 10  # the paper's schedule for base-to-new training (--base-classes), unless --epochs
# What ``--method`` trains (docs/method.md, "Methods"). The prompt-tuning methods share the loop of train.py;
# the others fit nothing by gradient descent (methods.py) and still write a prompt file.
METHOD_TITLES = {
    "dualpt": "DUAL-PT",
    "codualpt": "CoDUAL-PT",
    "coop": "CoOp",
    "cocoop": "CoCoOp",
    "plot": "PLOT",
    "linear-probe": "linear probe",
    "tip-adapter": "Tip-Adapter",
    "tip-adapter-f": "Tip-Adapter-F",
    "zero-shot": "zero-shot CLIP",
    "descriptions": "descriptions",
}
# no epochs of the prompt loop: fitted on the cached features in seconds (closed form, or Tip-Adapter-F's 20 short
# epochs over the cache keys) or training-free
FIXED_METHODS = ("linear-probe", "tip-adapter", "tip-adapter-f", "zero-shot", "descriptions")
CONDITIONAL_METHODS = ("codualpt", "cocoop")  # per-image prompts from CoCoOp's meta-net (model/conditional.py)
TIP_METHODS = ("tip-adapter", "tip-adapter-f")  # the cache model of Zhang et al. (model/tip_adapter.py)
TIP_AUG_VIEWS = 10  # Tip-Adapter's augment_epoch: the cache keys average 10 augmented views per shot
# Per method, what it sets for options left unset, before the recipe (CoCoOp's recipe for both conditional methods;
# Tip-Adapter's RandomResizedCrop(scale=(0.5, 1)) for its cache views).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "codualpt": {"n_ctx": 4, "ctx_init": "a photo of a", "batch_size": 1, "epochs": 10},
    "cocoop": {"n_ctx": 4, "ctx_init": "a photo of a", "batch_size": 1, "epochs": 10},
    "tip-adapter": {"crop_scale": 0.5},
    "tip-adapter-f": {"crop_scale": 0.5, "epochs": 20},  # train_epoch 20 of the keys, also base-to-new
}


@dataclass
class TrainConfig:
    """Everything that determines a training run; written to run_config.json."""

    images: str  # ImageFolder: one sub-folder per class ("" with dataset)
    project: str | None = None  # project folder (None: $DUALPT_PROJECT or ./dualpt-project)
    dataset: str | None = None  # coop:ROOT/NAME: a CoOp dataset's train split and few-shot sampling, not images
    shots: int | None = 8  # images per class; None = all
    val_shots: int | None = None  # held-out images per class (best epoch, guard); None: by recipe (auto / 0)
    model: str = "RN50"  # open_clip model (see backbone.ModelSpec)
    pretrained: str = "openai"  # pretrained tag or weights file
    seed: int = 1  # few-shot sample, prompt init, batch order and view choice
    method: str = "dualpt"  # what to train (METHODS); stored in the prompt file, so predict needs no flag
    probe_constraint: str = "clap"  # linear-probe: CLAP's class-wise pull towards zero-shot, or none / balanced
    recipe: str = "default"  # default: the measured recipe (docs/method.md); paper: the paper's exact setup
    n_prompts: int = 4  # M
    n_ctx: int | None = None  # context vectors per prompt (None: by recipe, 4 default / 16 paper)
    ctx_init: str | None = None  # words to initialise the context from ("" = N(0, 0.02); None: by recipe)
    prompt_text: str | None = None  # what follows the context: name ("{name}.") or descriptions (one phrase
    #   per prompt, "{name}, which has {phrase}."); None: by recipe
    class_specific: bool = False  # per-class context (CoOp's CSC)
    alpha: float = 0.2  # edge (GW) weight in the graph-matching cost
    beta: float = 0.2  # weight of the LLM alignment loss (0 without descriptions)
    lam: float = 0.1  # entropic regularisation of the plan (and the temperature of align "attn")
    align: str = "graph"  # the plan (ablations, alignment.py): graph, node (alpha 0), edge (alpha 1), attn, uniform
    llm_loss: str = "cosine"  # cosine (Eq. 5), wd or ce (ablations)
    context: str = "auto"  # auto: use descriptions.json when present; llm: require it; none: ignore it
    description_template: str = DESCRIPTION_TEMPLATE
    base_classes: str | None = None  # base-to-new: train on "half" (first ceil(K/2) folders) or a class-list file
    epochs: int | None = None  # None: by shots (50 / 100 / 200), as the paper
    batch_size: int | None = None  # images per step (None: 32; codualpt and cocoop 1, as CoCoOp)
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1  # constant warm-up lr before the cosine schedule
    warmup_lr: float = 1e-5
    aug_views: int = 8  # augmented views per image encoded once and cached
    fresh_views: bool = False  # a new view of every image in every epoch (encodes one view per epoch)
    crop_scale: float | None = None  # smallest crop area of the random resized crop (None: by recipe)
    prior_weight: float | None = None  # weight of the zero-shot prior in the final logits (None: by recipe)
    guard: bool | None = None  # choose the blend on held-out images, keep zero-shot if it is better (by recipe)
    head: str | None = None  # residual: a zero-shot-anchored probe on the blend, calibrated (model/residual.py);
    #   none: the blend alone; None: by recipe
    head_lambda: float = DEFAULT_LAMBDA  # the residual's penalty on sum_k ||r_k||^2
    outer_iters: int = 10  # graph-matching fixed-point iterations (cap)
    inner_iters: int = 100  # Sinkhorn iterations per outer iteration (cap)
    tol: float = 1e-2  # Sinkhorn stopping rule (PLOT's)
    device: str = "auto"
    precision: str = "auto"
    text_chunk: int = 0  # classes per text-encoder chunk, with activation checkpointing (0 = all)
    match_chunk: int = 0  # classes per graph-matching solve (0 = all)
    resume: bool = False
    profile: bool = False

    def __post_init__(self) -> None:
        """The one check of the options: a DataError naming the first one out of range.

        Options a recipe fills in may still be None (unset); :func:`resolve_recipe` fills them and checks again.
        """
        require_finite(
            {
                "--alpha": self.alpha,
                "--beta": self.beta,
                "--lambda": self.lam,
                "--lr": self.lr,
                "--prior-weight": self.prior_weight,
                "--head-lambda": self.head_lambda,
                "--crop-scale": self.crop_scale,
                "tol": self.tol,
            }
        )
        check_all(
            [
                (self.recipe in RECIPES, f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}"),
                (self.method in METHODS, f"--method must be one of {', '.join(METHODS)}, got {self.method!r}"),
                (
                    self.probe_constraint in CONSTRAINTS,
                    f"--probe-constraint must be one of {', '.join(CONSTRAINTS)}, got {self.probe_constraint!r}",
                ),
                (self.text_chunk >= 0, f"--text-chunk must be >= 0 (0 = all classes at once), got {self.text_chunk}"),
                (
                    self.shots is None or self.shots >= 1,
                    f"--shots must be a positive number or 'all', got {self.shots}",
                ),
                (self.n_prompts >= 1, f"--prompts must be >= 1, got {self.n_prompts}"),
                (self.n_ctx is None or self.n_ctx >= 1, f"--ctx-len must be >= 1, got {self.n_ctx}"),
                (0.0 <= self.alpha <= 1.0, f"--alpha must be in [0, 1], got {self.alpha}"),
                (0.0 <= self.beta < 1.0, f"--beta must be in [0, 1), got {self.beta}"),
                (self.lam > 0, f"--lambda must be > 0, got {self.lam}"),
                (self.epochs is None or self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
                (self.batch_size is None or self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
                (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
                (self.tol > 0, f"tol (the Sinkhorn stopping rule) must be > 0, got {self.tol}"),
                (
                    self.outer_iters >= 1 and self.inner_iters >= 1,
                    f"outer_iters and inner_iters must be >= 1, got {self.outer_iters} and {self.inner_iters}",
                ),
                (self.aug_views >= 1, f"--aug-views must be >= 1, got {self.aug_views}"),
                (self.val_shots is None or self.val_shots >= 0, f"--val-shots must be >= 0, got {self.val_shots}"),
                (
                    self.llm_loss in LLM_LOSSES,
                    f"--llm-loss must be one of {', '.join(LLM_LOSSES)}, got {self.llm_loss}",
                ),
                (self.context in CONTEXTS, f"--context must be auto, llm or none, got {self.context}"),
                (self.align in ALIGNS, f"--align must be one of {', '.join(ALIGNS)}, got {self.align}"),
                (
                    self.base_classes is None or bool(self.base_classes.strip()),
                    "--base-classes must be 'half' or a class-list file, got ''",
                ),
                (
                    self.prompt_text is None or self.prompt_text in PROMPT_TEXTS,
                    f"--prompt-text must be one of {', '.join(PROMPT_TEXTS)}, got {self.prompt_text}",
                ),
                (
                    self.crop_scale is None or 0.0 < self.crop_scale <= 1.0,
                    f"--crop-scale must be in (0, 1], got {self.crop_scale}",
                ),
                (
                    self.prior_weight is None or self.prior_weight >= 0,
                    f"--prior-weight must be >= 0, got {self.prior_weight}",
                ),
                (self.head is None or self.head in HEADS, f"--head must be one of {', '.join(HEADS)}, got {self.head}"),
                (self.head_lambda > 0, f"--head-lambda must be > 0, got {self.head_lambda}"),
                (
                    not (self.guard and self.head == "residual"),
                    "--guard chooses on held-out images and the residual head by cross-validation over the shots; "
                    "use --guard with --head none",
                ),
            ]
        )


def resolve_recipe(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with every option left unset (None) filled in from its method, then its recipe (and checked
    again); a base-to-new run (``base_classes``) without ``epochs`` gets the paper's :data:`BASE_TO_NEW_EPOCHS`
    unless its method has its own; then the settings that define the method (:func:`method_settings`)."""
    if cfg.base_classes is not None and cfg.epochs is None and "epochs" not in METHOD_DEFAULTS.get(cfg.method, {}):
        cfg = replace(cfg, epochs=BASE_TO_NEW_EPOCHS)
    for preset in (METHOD_DEFAULTS.get(cfg.method, {}), RECIPES[cfg.recipe]):
        cfg = replace(cfg, **{k: v for k, v in preset.items() if getattr(cfg, k) is None})
    return replace(cfg, **method_settings(cfg))


def method_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The options a method fixes (a DataError where one was set to something else).

    - plot: node matching only (alpha 0) and no LLM (beta 0, context none): PLOT;
    - coop: one prompt of M x n_ctx context tokens (DUAL-PT's parameter count), ending in "{name}.", no LLM;
    - cocoop: one prompt (CoCoOp's n_ctx 4 from METHOD_DEFAULTS) shifted by the meta-net, "{name}.", no LLM;
    - tip-adapter(-f): its 10 augmented views per shot for the cache keys (unless --aug-views is given);
    - linear-probe, zero-shot, descriptions: no held-out images or guard (nothing is chosen on them); the
      training-free two encode one view per image.
    Applying it twice changes nothing (a saved run_config.json reruns as it ran).
    """
    defaults = TrainConfig.__dataclass_fields__
    m = cfg.method

    def fixed(**values: Any) -> dict[str, Any]:
        for key, value in values.items():
            given = getattr(cfg, key)
            if given not in (value, defaults[key].default):
                flag = "--" + {"lam": "lambda", "n_prompts": "prompts"}.get(key, key).replace("_", "-")
                raise DataError(f"--method {m} uses {flag} {value}, not {given}; drop {flag} or use --method dualpt")
        return values

    if m == "plot":
        return fixed(alpha=0.0, beta=0.0, context="none")
    if m == "coop":
        return {
            **fixed(beta=0.0, context="none"),
            "n_prompts": 1,
            "n_ctx": cfg.n_prompts * cfg.n_ctx,
            "prompt_text": "name",
        }
    if m == "cocoop":
        return {**fixed(beta=0.0, context="none"), "n_prompts": 1, "prompt_text": "name"}
    if m == "descriptions" and cfg.context == "none":
        raise DataError("--method descriptions needs the project's descriptions; drop --context none")
    if m in FIXED_METHODS and cfg.resume:
        what = "fits in seconds on the cached features" if m in TIP_METHODS else "trains no epochs"
        raise DataError(f"--method {m} {what}, so there is nothing to resume; drop --resume")
    if m in FIXED_METHODS:  # training-free ones encode one view per image, for the training accuracy
        views = {"aug_views": 1}
        if m == "linear-probe" or m in TIP_METHODS and cfg.aug_views != defaults["aug_views"].default:
            views = {}
        elif m in TIP_METHODS:
            views = {"aug_views": TIP_AUG_VIEWS}
        return {"guard": False, "val_shots": 0, "prior_weight": 0.0, "head": "none", **views}
    return {}


def epochs_for_shots(shots: int | None) -> int:
    """The paper's schedule: 50 epochs for 1 shot, 100 for 2 and 4, 200 for 8 and more."""
    if shots is not None and shots <= 1:
        return 50
    if shots is not None and shots <= 4:
        return 100
    return 200


def lr_at(epoch: int, cfg: TrainConfig, total: int) -> float:
    """Constant warm-up for ``warmup_epochs``, then cosine decay over the remaining epochs (CoOp/Dassl).

    After the warm-up, epoch e runs at ``0.5 lr (1 + cos(pi (e - w) / (E - w)))``: the full rate right after
    the warm-up. A run no longer than the warm-up skips it (``--epochs 1`` trains at ``lr``).
    """
    warmup = cfg.warmup_epochs if total > cfg.warmup_epochs else 0
    if epoch < warmup:
        return cfg.warmup_lr
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * (epoch - warmup) / (total - warmup)))
