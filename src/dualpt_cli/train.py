"""DUAL-PT prompt tuning on an ImageFolder (method card: "Logits and losses", "Training schedule").

One step: class prompt features W (K, M, d) from the prompt learner; for each cached image view, the
graph-matching plan between its N local features and each class's M prompts (no gradient); logits
``exp(logit_scale) * sum_ij T_ij cos(z_i, w_kj)`` (Eq. 8); loss ``beta L_LLM + (1 - beta) L_img``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import __version__
from .backbone import Backbone
from .data import class_entries, few_shot_split, inside, looks_decodable, scan_image_folder, unmatched
from .errors import DataError, ProjectError, TrainingDiverged
from .features import EVAL_VIEW, FeatureSet, encode_views
from .fingerprint import image_fingerprint
from .head import (
    CHOOSE_WEIGHT_MIN_VAL,
    ZERO_SHOT_TEMPLATE,
    Decision,
    auto_val_shots,
    choose,
    collapsed,
    name_features,
    prior_features,
)
from .matching import Matcher, SolverSettings, sinkhorn_ot_distance
from .models import ModelSpec, load_backbone
from .options import require_finite
from .project import (
    Project,
    append_line,
    atomic_write_json,
    atomic_write_text,
    project_lock,
    read_json,
    resolve_project,
)
from .promptfile import CHECKPOINT_FORMAT, read_safetensors, save_prompt_file, write_safetensors
from .prompts import DESCRIPTION_TEMPLATE, PromptLearner, description_features

LLM_LOSSES = ("cosine", "wd", "ce")


@dataclass
class TrainConfig:
    """Everything that determines a training run; written to run_config.json."""

    images: str  # ImageFolder: one sub-folder per class
    project: str | None = None  # project folder (None: $DUALPT_PROJECT or ./dualpt-project)
    shots: int | None = 8  # images per class; None = all
    val_shots: int | None = None  # held-out images per class (best epoch, guard); None: by recipe (auto / 0)
    model: str = "RN50"  # open_clip model (see models.ModelSpec)
    pretrained: str = "openai"  # pretrained tag or weights file
    seed: int = 1  # few-shot sample, prompt init, batch order and view choice
    recipe: str = "default"  # default: the measured recipe (docs/method.md); paper: the paper's exact setup
    n_prompts: int = 4  # M
    n_ctx: int | None = None  # context vectors per prompt (None: by recipe, 4 default / 16 paper)
    ctx_init: str | None = None  # words to initialise the context from ("" = N(0, 0.02); None: by recipe)
    prompt_text: str | None = None  # what follows the context: name ("{name}.") or descriptions (one phrase
    #   per prompt, "{name}, which has {phrase}."); None: by recipe
    class_specific: bool = False  # per-class context (CoOp's CSC)
    alpha: float = 0.2  # edge (GW) weight in the graph-matching cost
    beta: float = 0.2  # weight of the LLM alignment loss (0 without descriptions)
    lam: float = 0.1  # entropic regularisation of the plan
    llm_loss: str = "cosine"  # cosine (Eq. 5), wd or ce (ablations)
    context: str = "auto"  # auto: use descriptions.json when present; llm: require it; none: ignore it
    description_template: str = DESCRIPTION_TEMPLATE
    epochs: int | None = None  # None: by shots (50 / 100 / 200), as the paper
    batch_size: int = 32
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
    outer_iters: int = 10  # graph-matching fixed-point iterations (cap)
    inner_iters: int = 100  # Sinkhorn iterations per outer iteration (cap)
    tol: float = 1e-2  # Sinkhorn stopping rule (PLOT's)
    device: str = "auto"
    precision: str = "auto"
    text_chunk: int = 0  # classes per text-encoder chunk, with activation checkpointing (0 = all)
    match_chunk: int = 0  # classes per graph-matching solve (0 = all)
    resume: bool = False
    profile: bool = False


# What ``--recipe`` sets for the options left unset (None). "paper" is the paper and method card exactly;
# "default" is the recipe measured on benchmarks/bench_learning.py (docs/method.md, "The default recipe").
RECIPES: dict[str, dict[str, Any]] = {
    "default": {"n_ctx": 4, "ctx_init": "a photo of a", "prompt_text": "descriptions", "crop_scale": 0.9,
                "prior_weight": 2.0, "guard": True},  # val_shots stays None: head.auto_val_shots
    "paper": {"n_ctx": 16, "ctx_init": "", "prompt_text": "name", "crop_scale": 0.08, "prior_weight": 0.0,
              "guard": False, "val_shots": 0},
}
PROMPT_TEXTS = ("name", "descriptions")


def resolve_recipe(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with every option left unset (None) filled in from its recipe."""
    if cfg.recipe not in RECIPES:
        raise DataError(f"--recipe must be one of {', '.join(RECIPES)}, got {cfg.recipe!r}")
    unset = {k: v for k, v in RECIPES[cfg.recipe].items() if getattr(cfg, k) is None}
    return replace(cfg, **unset)


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


# ---------------------------------------------------------------------------------------------------------
# the objective


@dataclass
class Objective:
    """The loss: Eq. 8 logits (``matcher``) and the frozen description prototypes for L_LLM."""

    matcher: Matcher
    beta: float
    llm_loss: str
    desc_mean: torch.Tensor  # (K, d) mean of normalised description features
    desc_has: torch.Tensor  # (K,) bool
    desc_sets: list[torch.Tensor]  # K x (e_k, d)

    def logits(self, Z: torch.Tensor, W: torch.Tensor, return_stats: bool = False):
        """Eq. 8: (B, K) logits from local features Z (B, N, d) and prompt features W (K, M, d)."""
        return self.matcher.logits(Z, W, return_stats=return_stats)

    def llm_loss_value(self, W: torch.Tensor, logits: torch.Tensor, z_global: torch.Tensor) -> torch.Tensor:
        """L_LLM between prompts and descriptions; 0 when no class has descriptions."""
        if self.beta == 0 or not bool(self.desc_has.any()):
            return W.new_zeros(())
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


# ---------------------------------------------------------------------------------------------------------
# the run


@dataclass
class TrainData:
    classes: list  # ClassEntry per label
    train: FeatureSet
    train_labels: torch.Tensor  # (I,)
    val: FeatureSet | None
    val_labels: torch.Tensor | None
    split: dict[str, Any]
    notes: list[str]
    descriptions: list[dict] | None  # descriptions.json entries, None without one (or with --context none)


@dataclass
class TrainResult:
    prompt_file: Path
    epochs: int
    train_acc: float
    loss: float
    seconds: float
    best_epoch: int | None
    val_acc: float | None
    skipped: list[tuple[str, str]]
    profile: dict[str, float] | None
    guard: Decision | None = None  # what the prompt file keeps, and the held-out comparison with zero-shot


class Callbacks:
    """Hooks the CLI fills in for progress and messages; the library never prints."""

    def warn(self, message: str) -> None: ...

    def info(self, message: str) -> None: ...

    def stage(self, name: str, total: int) -> Callable[[int], None]:
        return lambda n: None

    def epoch(self, epoch: int, total: int, steps: int) -> Callable[[dict[str, float]], None]:
        return lambda stats: None

    def epoch_done(self, record: dict[str, Any]) -> None: ...


def run_training(cfg: TrainConfig, cb: Callbacks | None = None) -> TrainResult:
    """Train DUAL-PT prompts on ``cfg.images`` and write the prompt file into the project."""
    cb = cb or Callbacks()
    cfg = resolve_recipe(cfg)
    _validate(cfg)
    project = resolve_project(cfg.project).ensure()
    with project_lock(project, "train"):
        return _run_training(cfg, cb, project)


def _run_training(cfg: TrainConfig, cb: Callbacks, project: Project) -> TrainResult:
    checkpoint = _read_checkpoint(project, cfg) if cfg.resume else None
    bb = load_backbone(ModelSpec(cfg.model, cfg.pretrained), device=cfg.device, precision=cfg.precision)
    data = prepare_data(cfg, project, bb, cb)
    objective = build_objective(cfg, project, bb, data, cb)
    learner = PromptLearner(bb, [c.name for c in data.classes], cfg.n_prompts, cfg.n_ctx, cfg.ctx_init,
                            cfg.class_specific, cfg.seed, class_texts=prompt_texts(cfg, data))
    learner.text_chunk = cfg.text_chunk
    total = cfg.epochs or epochs_for_shots(cfg.shots)
    resolved = {**asdict(cfg), "epochs": total, "beta": objective.beta,
                "pretrained": ModelSpec(cfg.model, cfg.pretrained).resolved()[1] or "",  # "" for local-dir
                "model_resolved": bb.spec.label, "device_resolved": str(bb.device),
                "precision_resolved": bb.precision, "dualpt_version": __version__}
    atomic_write_json(project.run_config, resolved)

    optimizer = torch.optim.SGD([learner.ctx], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cb.info(f"trainable parameters: {learner.ctx.numel():,} (CLIP frozen: "
            f"{sum(p.numel() for p in bb.model.parameters()):,})")
    start, best = 0, {"epoch": None, "acc": -1.0, "ctx": None}
    if checkpoint is not None:
        start, best = _restore(checkpoint, learner, optimizer)
        cb.info(f"resuming after epoch {start} of {total}")
        _trim_log(project.train_log, start)
    else:
        project.train_log.unlink(missing_ok=True)

    t0 = time.perf_counter()
    prof = Profiler(bb.device) if cfg.profile else None
    record: dict[str, Any] = {}
    for epoch in range(start, total):
        record = train_epoch(epoch, total, cfg, learner, optimizer, objective, data, cb, prof)
        if data.val is not None:
            record["val_acc"] = evaluate(learner, objective, data.val, data.val_labels)
            if record["val_acc"] > best["acc"]:
                best = {"epoch": epoch + 1, "acc": record["val_acc"], "ctx": learner.ctx.detach().clone()}
        if not math.isfinite(record["loss"]) or not bool(torch.isfinite(learner.ctx).all()):
            kept = f"the checkpoint of epoch {epoch} is kept" if epoch else "no epoch finished"
            raise TrainingDiverged(f"training diverged in epoch {epoch + 1} (loss {record['loss']}); lower --lr "
                                   f"(now {cfg.lr:g}); {kept} and no prompt file was written")
        append_line(project.train_log, json.dumps(record))
        _save_checkpoint(project, cfg, learner, optimizer, epoch + 1, best)
        cb.epoch_done(record)
    seconds = time.perf_counter() - t0

    if best["ctx"] is not None:
        with torch.no_grad():
            learner.ctx.copy_(best["ctx"])
    decision, prior = decide(cfg, learner, objective, data, record)
    if decision.collapsed:
        cb.warn("training collapsed: the loss is near ln K and training accuracy at chance (every class scores "
                "alike)" + ("" if cfg.guard else "; the default recipe's guard would keep zero-shot CLIP"))
    if decision.classifier != "trained":
        cb.warn(f"training did not beat {decision.classifier} on the held-out images; the prompt file keeps "
                f"{decision.classifier} ({decision.reason})")
    prompt_file = save_prompts(project, learner, bb, cfg, objective, data, total, best, decision, prior)
    return TrainResult(
        prompt_file=prompt_file, epochs=total, train_acc=float(record.get("acc", float("nan"))),
        loss=float(record.get("loss", float("nan"))), seconds=seconds, best_epoch=best["epoch"],
        val_acc=best["acc"] if best["epoch"] else None,
        skipped=[(str(p), r) for p, r in data.train.bad + (data.val.bad if data.val else [])],
        profile=prof.summary() if prof else None, guard=decision,
    )


@torch.no_grad()
def decide(cfg: TrainConfig, learner: PromptLearner, objective: Objective, data: TrainData,
           last: dict[str, Any]) -> tuple[Decision, torch.Tensor]:
    """The classifier to save (:func:`head.choose`) and the prior prototypes it blends, (K, d)."""
    bb = learner.bb
    names = name_features(bb, learner.class_names)  # (K, d)
    prior = prior_features(names, objective.desc_mean, objective.desc_has)  # (K, d)
    has_desc = bool(objective.desc_has.any())
    is_collapsed = bool(last) and collapsed(last["loss_img"], last["acc"], learner.num_classes)
    if not cfg.guard:
        kind = "descriptions" if has_desc else "names"
        return Decision("trained", 1.0, cfg.prior_weight, kind, collapsed=is_collapsed, reason="no guard"), prior
    dual = z = labels = None
    if data.val is not None:
        W = learner()  # (K, M, d)
        with bb.autocast():
            dual = objective.logits(data.val.local[:, 0].to(bb.device).float(), W).float()  # (V, K)
        z, labels = data.val.global_[:, 0].to(bb.device).float(), data.val_labels
    per_class = len(labels) / learner.num_classes if labels is not None else 0
    decision = choose(dual, z, labels, names, prior, has_desc, bb.logit_scale, cfg.prior_weight, is_collapsed,
                      choose_weight=per_class >= CHOOSE_WEIGHT_MIN_VAL)
    return decision, names if decision.prior == "names" else prior


def prompt_texts(cfg: TrainConfig, data: TrainData) -> list[list[str]] | None:
    """Per class, the M texts after the context: one description phrase per prompt (cycling through the
    class's phrases) with ``prompt_text`` descriptions, else None (every prompt ends in ``"{name}."``)."""
    if cfg.prompt_text != "descriptions":
        return None
    phrases = class_phrases(data)
    if not any(phrases):
        return None
    return [[cfg.description_template.format(name=c.name, phrase=p[j % len(p)].rstrip(".")) if p else f"{c.name}."
             for j in range(cfg.n_prompts)] for c, p in zip(data.classes, phrases)]


def class_phrases(data: TrainData) -> list[list[str]]:
    """Each class's description phrases, in class order ([] without descriptions)."""
    from .describe import phrases_by_folder

    stored = phrases_by_folder(data.descriptions)
    return [stored.get(c.folder, []) for c in data.classes]


def _validate(cfg: TrainConfig) -> None:
    require_finite({"--alpha": cfg.alpha, "--beta": cfg.beta, "--lambda": cfg.lam, "--lr": cfg.lr,
                    "--prior-weight": cfg.prior_weight, "--crop-scale": cfg.crop_scale})
    checks = [
        (cfg.text_chunk >= 0, f"--text-chunk must be >= 0 (0 = all classes at once), got {cfg.text_chunk}"),
        (cfg.shots is None or cfg.shots >= 1, f"--shots must be a positive number or 'all', got {cfg.shots}"),
        (cfg.n_prompts >= 1, f"--prompts must be >= 1, got {cfg.n_prompts}"),
        (cfg.n_ctx >= 1, f"--ctx-len must be >= 1, got {cfg.n_ctx}"),
        (0.0 <= cfg.alpha <= 1.0, f"--alpha must be in [0, 1], got {cfg.alpha}"),
        (0.0 <= cfg.beta < 1.0, f"--beta must be in [0, 1), got {cfg.beta}"),
        (cfg.lam > 0, f"--lambda must be > 0, got {cfg.lam}"),
        (cfg.epochs is None or cfg.epochs >= 1, f"--epochs must be >= 1, got {cfg.epochs}"),
        (cfg.batch_size >= 1, f"--batch-size must be >= 1, got {cfg.batch_size}"),
        (cfg.lr > 0, f"--lr must be > 0, got {cfg.lr}"),
        (cfg.aug_views >= 1, f"--aug-views must be >= 1, got {cfg.aug_views}"),
        (cfg.val_shots is None or cfg.val_shots >= 0, f"--val-shots must be >= 0, got {cfg.val_shots}"),
        (cfg.llm_loss in LLM_LOSSES, f"--llm-loss must be one of {', '.join(LLM_LOSSES)}, got {cfg.llm_loss}"),
        (cfg.context in ("auto", "llm", "none"), f"--context must be auto, llm or none, got {cfg.context}"),
        (cfg.prompt_text in PROMPT_TEXTS, f"--prompt-text must be one of {', '.join(PROMPT_TEXTS)}, "
                                          f"got {cfg.prompt_text}"),
        (0.0 < cfg.crop_scale <= 1.0, f"--crop-scale must be in (0, 1], got {cfg.crop_scale}"),
        (cfg.prior_weight >= 0, f"--prior-weight must be >= 0, got {cfg.prior_weight}"),
    ]
    for ok, message in checks:
        if not ok:
            raise DataError(message)


def prepare_data(cfg: TrainConfig, project: Project, bb: Backbone, cb: Callbacks) -> TrainData:
    """Scan, sample, record the split, and encode (or load cached) features of the chosen images."""
    from .describe import load_descriptions

    root = Path(cfg.images).expanduser().resolve()
    folders = scan_image_folder(root, exclude=project.root)
    if inside(project.root, root):
        cb.warn(f"the project folder {project.root} is inside the image folder; it is not a class")
    stored = load_descriptions(project) if cfg.context != "none" else None
    known = [_entry(c) for c in stored] if stored else None
    classes = class_entries(list(folders), known)
    missing = unmatched(list(folders), known)
    if missing:
        cb.warn(f"{len(missing)} described class(es) have no image folder in {root} and are not trained: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    rejected: dict[Path, str] = {}  # images found unusable; the sample is drawn again without them

    def usable(path: Path) -> bool:
        if path not in rejected and not looks_decodable(path):
            rejected[path] = "not a readable image"
            cb.warn(f"skipping {path}: not a readable image")
        return path not in rejected

    def gather(parts: dict[str, list[Path]], views: list[int], what: str) -> tuple[FeatureSet, torch.Tensor]:
        paths = [p for f in folders for p in parts.get(f, [])]
        label_of = {p: i for i, f in enumerate(folders) for p in parts.get(f, [])}
        fs = encode_views(bb, paths, views, project.cache_dir, aug_seed=cfg.seed, aug_scale=(cfg.crop_scale, 1.0),
                          on_progress=cb.stage(f"encoding {what} images", len(paths)))
        for path, reason in fs.bad:
            rejected[path] = reason
            cb.warn(f"skipping {path}: {reason}")
        return fs, torch.tensor([label_of[p] for p in fs.paths], dtype=torch.long)

    auto_val = cfg.val_shots is None
    val_shots = auto_val_shots(cfg.shots, min(len(files) for files in folders.values())) if auto_val \
        else cfg.val_shots
    while True:  # a file that passes the header check but fails to decode is replaced by the next one drawn
        train, val, notes = few_shot_split(folders, cfg.shots, cfg.seed, val_shots, usable)
        n_views = (cfg.epochs or epochs_for_shots(cfg.shots)) if cfg.fresh_views else cfg.aug_views
        train_fs, train_labels = gather(train, list(range(n_views)), "training")
        val_fs = val_labels = None
        if val_shots:
            val_fs, val_labels = gather(val, [EVAL_VIEW], "validation")
        if not train_fs.bad and not (val_fs is not None and val_fs.bad):
            break
    train_fs.bad = list(rejected.items())
    if auto_val and val_shots:
        short = [f for f in folders if len(train[f]) < (cfg.shots or 0) <= len(folders[f])]  # by the hold-out
        notes = [n for n in notes if not any(f"class {f!r} " in n for f in short)]  # said once, below
        cb.info(f"holding out {val_shots} image(s) per class to check the result against zero-shot CLIP"
                + (f"; {len(short)} class(es) train on fewer than {cfg.shots} (give --val-shots 0 to train on "
                   "all)" if short else ""))
    for note in notes:
        cb.warn(note)
    split = {"images": str(root), "seed": cfg.seed, "shots": cfg.shots, "val_shots": val_shots,
             "classes": [{"folder": c.folder, "name": c.name} for c in classes],
             "train": {f: [str(p.relative_to(root)) for p in train[f]] for f in folders},
             "val": {f: [str(p.relative_to(root)) for p in val.get(f, [])] for f in folders}}
    if cfg.resume and project.split.is_file() and read_json(project.split, "few-shot split") != split:
        raise ProjectError(f"--resume: the images or class list changed since the checkpoint in {project.root}; "
                           "start without --resume")
    atomic_write_json(project.split, split)
    return TrainData(classes, train_fs, train_labels, val_fs, val_labels, split, notes, stored)


def _entry(stored: dict):
    from .project import ClassEntry

    return ClassEntry(folder=stored["folder"], name=stored["name"])


def build_objective(cfg: TrainConfig, project: Project, bb: Backbone, data: TrainData, cb: Callbacks) -> Objective:
    phrases = class_phrases(data)
    mean, has, sets = description_features(bb, [c.name for c in data.classes], phrases, cfg.description_template)
    beta = cfg.beta
    if not bool(has.any()):
        if cfg.context == "llm":
            raise ProjectError(f"--context llm: no descriptions in {project.descriptions}; run dualpt describe")
        if beta:
            cb.info("no LLM descriptions for these classes: training without LLM context (beta = 0)")
        beta = 0.0
    else:
        missing = [c.folder for c, h in zip(data.classes, has.tolist()) if not h]
        if missing:
            cb.warn(f"{len(missing)} class(es) have no descriptions and get no LLM alignment: "
                    f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if cfg.llm_loss == "ce" and missing:
            raise DataError("--llm-loss ce needs descriptions for every class; run dualpt describe or use cosine")
    return Objective(matcher=matcher_for(cfg, bb), beta=beta, llm_loss=cfg.llm_loss, desc_mean=mean,
                     desc_has=has, desc_sets=sets)


def matcher_for(cfg: TrainConfig, bb: Backbone) -> Matcher:
    """Eq. 8 with this run's matching settings and the model's logit scale."""
    solver = SolverSettings(alpha=cfg.alpha, lam=cfg.lam, outer_iters=cfg.outer_iters, inner_iters=cfg.inner_iters,
                            tol=cfg.tol)
    return Matcher(logit_scale=bb.logit_scale, solver=solver, chunk=cfg.match_chunk or None)


def train_epoch(epoch: int, total: int, cfg: TrainConfig, learner: PromptLearner, optimizer, objective: Objective,
                data: TrainData, cb: Callbacks, prof: Profiler | None) -> dict[str, Any]:
    """One pass over the training images, each at a view drawn for this epoch; the last partial batch is kept."""
    lr = lr_at(epoch, cfg, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)  # order and views depend on (seed, epoch)
    n_images, n_views = data.train.global_.shape[:2]
    order = torch.randperm(n_images, generator=gen)
    views = torch.randint(n_views, (n_images,), generator=gen)
    if cfg.fresh_views:  # view e of every image in epoch e: never the same crop twice
        views = torch.full((n_images,), epoch % n_views)
    steps = math.ceil(n_images / cfg.batch_size)
    tick = cb.epoch(epoch, total, steps)
    t0 = time.perf_counter()
    sums = {"loss": 0.0, "loss_img": 0.0, "loss_llm": 0.0, "correct": 0, "seen": 0}
    outer = inner = 0
    bb = learner.bb
    for step in range(steps):
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        with _phase(prof, "data"):
            Z = data.train.local[idx, views[idx]].to(bb.device, non_blocking=True).float()  # (b, N, d)
            z = data.train.global_[idx, views[idx]].to(bb.device, non_blocking=True).float()  # (b, d)
            y = data.train_labels[idx].to(bb.device)  # (b,)
        with _phase(prof, "text"):
            W = learner()  # (K, M, d)
        with _phase(prof, "matching"), bb.autocast():
            logits, stats = objective.logits(Z, W, return_stats=True)  # (b, K)
        with _phase(prof, "loss"):
            loss_img = F.cross_entropy(logits.float(), y)
            loss_llm = objective.llm_loss_value(W, logits.float(), z)
            loss = objective.beta * loss_llm + (1.0 - objective.beta) * loss_img
        with _phase(prof, "backward"):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with _phase(prof, "optimizer"):
            optimizer.step()
        b = len(idx)
        sums["loss"] += float(loss.detach()) * b
        sums["loss_img"] += float(loss_img.detach()) * b
        sums["loss_llm"] += float(loss_llm.detach()) * b
        sums["correct"] += int((logits.argmax(-1) == y).sum())
        sums["seen"] += b
        outer, inner = max(outer, stats.outer_iters), max(inner, stats.inner_iters)
        tick({"loss": sums["loss"] / sums["seen"], "acc": sums["correct"] / sums["seen"], "lr": lr})
    n = sums["seen"]
    return {"epoch": epoch + 1, "epochs": total, "loss": sums["loss"] / n, "loss_img": sums["loss_img"] / n,
            "loss_llm": sums["loss_llm"] / n, "acc": sums["correct"] / n, "lr": lr,
            "seconds": time.perf_counter() - t0, "match_outer_iters": outer, "match_inner_iters": inner}


@torch.no_grad()
def evaluate(learner: PromptLearner, objective: Objective, fs: FeatureSet, labels: torch.Tensor,
             batch_size: int = 256) -> float:
    """Top-1 accuracy on the first view of each image (the eval view for validation sets)."""
    W = learner()
    correct = 0
    for start in range(0, len(labels), batch_size):
        Z = fs.local[start : start + batch_size, 0].to(learner.bb.device).float()
        with learner.bb.autocast():
            logits = objective.logits(Z, W)
        correct += int((logits.argmax(-1).cpu() == labels[start : start + batch_size]).sum())
    return correct / max(len(labels), 1)


# ---------------------------------------------------------------------------------------------------------
# outputs and checkpoints


def save_prompts(project: Project, learner: PromptLearner, bb: Backbone, cfg: TrainConfig, objective: Objective,
                 data: TrainData, epochs: int, best: dict[str, Any], decision: Decision | None = None,
                 prior: torch.Tensor | None = None) -> Path:
    """Write prompts.safetensors: context, final class prompt features and self-describing metadata."""
    decision = decision or Decision("trained", 1.0, 0.0, "names", reason="DUAL-PT alone")
    with torch.no_grad():
        learner.eval()
        class_features = learner().float()  # (K, M, d), normalised
    name, pretrained = bb.spec.resolved()
    meta = {
        "dualpt_version": __version__,
        "model": name,
        "pretrained": pretrained or "",
        "image_size": bb.image_size,
        "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in bb.preprocess_cfg.items()},
        "embed_dim": bb.embed_dim,
        "text_width": bb.text_width,
        "num_local": bb.num_local,
        "class_names": [c.name for c in data.classes],
        "class_folders": [c.folder for c in data.classes],
        "n_prompts": cfg.n_prompts,
        "n_ctx": cfg.n_ctx,
        "class_specific": cfg.class_specific,
        **objective.matcher.meta(),  # alpha, lambda, iteration caps, tol, logit_scale
        "beta": objective.beta,
        "shots": cfg.shots,
        "seed": cfg.seed,
        "epochs": epochs,
        "best_epoch": best["epoch"],
        "precision": bb.precision,
        "llm_context": bool(objective.desc_has.any()),
        "recipe": cfg.recipe,
        "prompt_texts": learner.class_texts if learner.per_prompt else None,  # per class and prompt, after ctx
        "dual_weight": decision.dual_weight,
        "prior_weight": decision.prior_weight,
        "prior": decision.prior,
        "zero_shot_template": ZERO_SHOT_TEMPLATE,
        "guard": decision.to_json(),
        "image_fingerprint": image_fingerprint(bb),  # checked on load: the image tower is the trained one
    }
    save_prompt_file(project.prompts, learner.ctx.detach(), class_features, meta,
                     prior if decision.prior_weight else None)
    return project.prompts


def _ckpt_identity(cfg: TrainConfig) -> dict[str, Any]:
    """The config fields that must not change across --resume."""
    keep = ("images", "shots", "val_shots", "seed", "recipe", "prompt_text", "crop_scale", "n_prompts", "n_ctx",
            "ctx_init", "class_specific", "alpha", "beta", "lam", "llm_loss", "context", "epochs", "batch_size",
            "lr", "momentum", "weight_decay", "warmup_epochs", "warmup_lr", "aug_views", "fresh_views",
            "outer_iters", "inner_iters", "tol", "description_template")
    d = asdict(cfg)
    return {"model": list(ModelSpec(cfg.model, cfg.pretrained).resolved()), **{k: d[k] for k in keep}}


def _save_checkpoint(project: Project, cfg: TrainConfig, learner: PromptLearner, optimizer, epoch: int,
                     best: dict[str, Any]) -> None:
    tensors = {"ctx": learner.ctx.detach()}
    buf = optimizer.state.get(learner.ctx, {}).get("momentum_buffer")
    if buf is not None:
        tensors["momentum"] = buf
    if best["ctx"] is not None:
        tensors["best_ctx"] = best["ctx"]
    meta = {"epoch": epoch, "config": _ckpt_identity(cfg), "best_epoch": best["epoch"], "best_acc": best["acc"]}
    write_safetensors(project.checkpoint_dir / "state.safetensors", tensors, CHECKPOINT_FORMAT, meta)


def _trim_log(path: Path, epochs_done: int) -> None:
    """Drop log lines of epochs after the checkpoint (an epoch logged, then interrupted before saving)."""
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    keep = []
    for ln in lines:
        try:
            if json.loads(ln)["epoch"] <= epochs_done:
                keep.append(ln)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut off by the interrupt
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def _read_checkpoint(project: Project, cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The checkpoint, checked to come from the same options (before any slow work starts)."""
    path = project.checkpoint_dir / "state.safetensors"
    if not path.is_file():
        raise ProjectError(f"--resume: no checkpoint in {project.checkpoint_dir}; start without --resume")
    tensors, meta = read_safetensors(path, CHECKPOINT_FORMAT, "checkpoint")
    stored, now = meta.get("config", {}), _ckpt_identity(cfg)
    changed = [k for k in now if stored.get(k) != now[k]]
    if changed:
        k = changed[0]
        raise ProjectError(f"--resume: {k} was {stored.get(k)!r} in the checkpoint, now {now[k]!r}; "
                           "use the same options or start without --resume")
    return tensors, meta


def _restore(checkpoint: tuple[dict[str, torch.Tensor], dict[str, Any]], learner: PromptLearner, optimizer):
    """Load the context, momentum and best-validation state; (epochs done, best)."""
    tensors, meta = checkpoint
    if tensors["ctx"].shape != learner.ctx.shape:
        raise ProjectError("--resume: the checkpoint's prompts do not match this run; start without --resume")
    with torch.no_grad():
        learner.ctx.copy_(tensors["ctx"].to(learner.ctx.device))
    if "momentum" in tensors:
        optimizer.state[learner.ctx]["momentum_buffer"] = tensors["momentum"].to(learner.ctx.device).clone()
    best_ctx = tensors.get("best_ctx")
    best = {"epoch": meta.get("best_epoch"), "acc": meta.get("best_acc", -1.0),
            "ctx": best_ctx.to(learner.ctx.device) if best_ctx is not None else None}
    return int(meta["epoch"]), best


# ---------------------------------------------------------------------------------------------------------
# profiling


class Profiler:
    """Wall time per phase of a step (synchronising CUDA so the times are real)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: dict[str, float] = {}

    def summary(self) -> dict[str, float]:
        return dict(self.totals)


class _phase:
    def __init__(self, prof: Profiler | None, name: str):
        self.prof, self.name = prof, name

    def __enter__(self):
        if self.prof is not None:
            if self.prof.device.type == "cuda":
                torch.cuda.synchronize(self.prof.device)
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.prof is not None:
            if self.prof.device.type == "cuda":
                torch.cuda.synchronize(self.prof.device)
            self.prof.totals[self.name] = self.prof.totals.get(self.name, 0.0) + time.perf_counter() - self.t0
        return False


