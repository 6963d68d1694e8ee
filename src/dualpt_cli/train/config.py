"""The options of a training run: :class:`TrainConfig` and the recipes that fill in what is left unset
(:func:`.registry.resolve_recipe` applies them with the method's own defaults and settings). The resolved config is
written to ``run_config.json`` beside the run's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.checks import bounded, check_all, require_finite
from ..core.vocab import (  # noqa: F401  (re-exported)
    ALIGNS,
    CONSTRAINTS,
    CONTEXTS,
    HEADS,
    LLM_LOSSES,
    METHODS,
    PROMPT_TEXTS,
)
from ..model.defaults import DESCRIPTION_TEMPLATE

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
        "fresh_crops": False,
        "drop_last": False,
        "probe_constraint": "clap",
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
        "fresh_crops": True,
        "drop_last": True,
        "probe_constraint": "none",
    },
}
BASE_TO_NEW_EPOCHS = 10  # the paper's schedule for base-to-new training (--base-classes), unless --epochs


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
    probe_constraint: str | None = None  # linear-probe: clap (jusiro/CLAP), balanced (its ablation) or none
    #   (CoOp's LP-CLIP: logistic regression, C searched on held-out images); None: by recipe (clap / paper none)
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
    description_template: str = DESCRIPTION_TEMPLATE  # a phrase's text: {name}, {phrase}; or "menon-vondrick"
    #   (Menon & Vondrick's "which is / which / which has" rules, model/prompts.phrase_text)
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
    fresh_crops: bool | None = None  # a fresh random crop of every image in every epoch, encoded in the step
    #   (Dassl; clip/crops.py) instead of cached views; None: by recipe (paper: fresh, default: cached)
    drop_last: bool | None = None  # drop the last partial batch of an epoch (Dassl, when there are at least
    #   batch_size images); None: by recipe (paper: drop, default: keep)
    crop_scale: float | None = None  # smallest crop area of the random resized crop (None: by recipe)
    prior_weight: float | None = None  # weight of the zero-shot prior in the final logits (None: by recipe)
    guard: bool | None = None  # choose the blend on held-out images, keep zero-shot if it is better (by recipe)
    head: str | None = None  # residual: a zero-shot-anchored probe on the blend, calibrated (model/residual.py);
    #   none: the blend alone; None: by recipe
    head_lambda: float | None = None  # the residual's penalty on sum_k ||r_k||^2; None: cross-validated
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
                    self.probe_constraint is None or self.probe_constraint in CONSTRAINTS,
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
                (
                    not (self.fresh_views and self.fresh_crops),
                    "--fresh-views encodes cached views, one per epoch, and --fresh-crops crops anew in each step; "
                    "give one of them",
                ),
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
                (
                    self.head_lambda is None or self.head_lambda > 0,
                    f"--head-lambda must be > 0, got {self.head_lambda}",
                ),
                (
                    not (self.guard and self.head == "residual"),
                    "--guard chooses on held-out images and the residual head by cross-validation over the shots; "
                    "use --guard with --head none",
                ),
            ]
        )
        bounded({"--seed": self.seed, "--text-chunk": self.text_chunk, "--val-shots": self.val_shots}, low=0)
        bounded({"--shots": self.shots, "--prompts": self.n_prompts})  # --ctx-len: against the model's 77 tokens
        bounded({"--aug-views": self.aug_views, "--epochs": self.epochs, "--batch-size": self.batch_size})
