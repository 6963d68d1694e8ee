"""DUAL-PT prompt tuning on an ImageFolder (method card: "Logits and losses", "Training schedule").

One step: class prompt features W (K, M, d) from the prompt learner; for each cached image view, the
graph-matching plan between its N local features and each class's M prompts (no gradient); logits
``exp(logit_scale) * sum_ij T_ij cos(z_i, w_kj)`` (Eq. 8); loss ``beta L_LLM + (1 - beta) L_img``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F

from .. import __version__
from ..clip.crops import draw_crops, encode_crops
from ..clip.features import FeatureSet
from ..clip.load import load_backbone
from ..clip.spec import ModelSpec
from ..core.distributed import SINGLE, Dist, PeerFailed
from ..core.project import Project, append_line, atomic_write_json, resolve_project
from ..errors import TrainingDiverged
from ..model.prompts import ConditionalPromptLearner, PromptLearner, phrase_text
from ..model.residual import ResidualHead
from .checkpoint import read_checkpoint, restore_checkpoint, save_checkpoint, trim_log
from .config import TrainConfig
from .export import RunRecord
from .headfit import FixedLogits, fit_run_head
from .hooks import BestEpoch, Callbacks, TrainResult
from .keep import describe_head, finish
from .methods import batched_logits, build_learner, restore, run_fixed, snapshot, trainable
from .objective import Objective, build_objective
from .parallel import (
    epoch_max,
    local_part,
    main_holds_project,
    on_main,
    reduce_step,
    same_start,
    share_of,
)
from .profiler import Profiler, phase
from .registry import resolve_recipe, train_method
from .schedule import epochs_for_shots, lr_at, steps_per_epoch  # noqa: F401  (re-exported)
from .trainset import TrainData, class_phrases, prepare_data

# ---------------------------------------------------------------------------------------------------------
# the run


def run_training(cfg: TrainConfig, cb: Callbacks | None = None, dist: Dist = SINGLE) -> TrainResult | None:
    """Train DUAL-PT prompts on ``cfg.images`` and write the prompt file into the project.

    Under torchrun (``dist`` of several ranks) training is data-parallel (:mod:`parallel`) and only rank 0
    writes project files; every rank returns the same result, except that ``guard`` is None off rank 0 (and
    the other ranks get None for the methods fitted in closed form, which rank 0 alone fits). One process
    always gets a result.
    """
    cb = cb or Callbacks()
    cfg = resolve_recipe(cfg)
    project = resolve_project(cfg.project)
    with main_holds_project(project, "train", dist):
        return _run_training(cfg, cb, project, dist)


def _run_training(cfg: TrainConfig, cb: Callbacks, project: Project, dist: Dist) -> TrainResult | None:
    checkpoint = on_main(dist, lambda: read_checkpoint(project, cfg), "reading the checkpoint") if cfg.resume else None
    device = dist.device if dist.distributed else cfg.device
    bb = load_backbone(ModelSpec(cfg.model, cfg.pretrained), device=device, precision=cfg.precision)
    method = train_method(cfg.method)
    data = prepare_data(cfg, project, bb, cb, dist, raw_view=method.raw_view(cfg))
    objective = build_objective(cfg, project, bb, data, cb)
    closed_form = method.closed_form  # no epochs (methods.run_fixed)
    learner = None if closed_form else build_learner(cfg, bb, data, prompt_texts(cfg, data))
    total = 0 if closed_form else cfg.epochs or epochs_for_shots(cfg.shots)
    resolved = {
        **asdict(cfg),
        "epochs": total or cfg.epochs,
        "beta": objective.beta,
        "pretrained": ModelSpec(cfg.model, cfg.pretrained).resolved()[1] or "",  # "" for local-dir
        "model_resolved": bb.spec.label,
        "device_resolved": str(bb.device),
        "precision_resolved": bb.precision,
        "dualpt_version": __version__,
        **dist.meta(),
    }
    on_main(dist, lambda: atomic_write_json(project.run_config, resolved), "writing run_config.json")
    if learner is None:  # fitted in seconds: rank 0 alone fits and writes it (the other ranks get None)
        return on_main(dist, lambda: run_fixed(cfg, cb, project, bb, data, objective), "writing the prompt file")

    head: ResidualHead | None = None
    fixed: FixedLogits | None = None
    if cfg.head == "residual":
        head, fixed = fit_run_head(cfg, learner, objective, data, dist)
        cb.info(describe_head(head))
    params = trainable(learner)
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cb.info(
        f"trainable parameters: {sum(p.numel() for p in params):,} (CLIP frozen: "
        f"{sum(p.numel() for p in bb.model.parameters()):,})"
    )
    start, best = 0, BestEpoch()
    if checkpoint is not None:
        start, best = restore_checkpoint(checkpoint, learner, optimizer)
        trim_log(project.train_log, start)
    elif dist.is_main:
        project.train_log.unlink(missing_ok=True)
    if cfg.resume:
        start, best = same_start(dist, params, optimizer, start, best)  # the meta-net too (codualpt)
        cb.info(f"resuming after epoch {start} of {total}")

    t0 = time.perf_counter()
    prof = Profiler(bb.device) if cfg.profile else None
    record: dict[str, Any] = {}
    for epoch in range(start, total):
        record = train_epoch(epoch, total, cfg, learner, optimizer, objective, data, cb, prof, dist, fixed)
        if data.val is not None and data.val_labels is not None:  # (set together)
            record["val_acc"] = evaluate(learner, objective, data.val, data.val_labels, dist=dist, fixed=fixed)
            if record["val_acc"] > best.acc:
                best = BestEpoch(epoch + 1, record["val_acc"], snapshot(learner))
        if not math.isfinite(record["loss"]) or not bool(torch.isfinite(learner.ctx).all()):
            kept = f"the checkpoint of epoch {epoch} is kept" if epoch else "no epoch finished"
            error = TrainingDiverged if dist.is_main else PeerFailed  # every rank sees it; rank 0 says it
            raise error(
                f"training diverged in epoch {epoch + 1} (loss {record['loss']}); lower --lr "
                f"(now {cfg.lr:g}); {kept} and no prompt file was written"
            )
        if dist.is_main:  # the other ranks go on to the next epoch's first step, where they wait for rank 0
            append_line(project.train_log, json.dumps(record))
            save_checkpoint(project, cfg, learner, optimizer, epoch + 1, best)
        cb.epoch_done(record)
    seconds = time.perf_counter() - t0

    if best.state is not None:
        restore(learner, best.state)
    decision = on_main(
        dist,
        lambda: finish(RunRecord(cfg, objective, data, total, best), cb, project, learner, record, head),
        "writing the prompt file",
    )
    return TrainResult(
        prompt_file=project.prompts,
        epochs=total,
        train_acc=float(record.get("acc", float("nan"))),
        loss=float(record.get("loss", float("nan"))),
        seconds=seconds,
        best_epoch=best.epoch,
        val_acc=best.acc if best.epoch else None,
        skipped=[(str(p), r) for p, r in data.train.bad + (data.val.bad if data.val else [])],
        profile=prof.summary() if prof else None,
        guard=decision,
        plan_entropy=record.get("plan_entropy"),
        method=cfg.method,
        head=head,
    )


def prompt_texts(cfg: TrainConfig, data: TrainData) -> list[list[str]] | None:
    """Per class, the M texts after the context: one description phrase per prompt (cycling through the
    class's phrases) with ``prompt_text`` descriptions, else None (every prompt ends in ``"{name}."``)."""
    if cfg.prompt_text != "descriptions":
        return None
    phrases = class_phrases(data)
    if not any(phrases):
        return None
    return [
        [
            phrase_text(cfg.description_template, c.name, p[j % len(p)]) if p else f"{c.name}."
            for j in range(cfg.n_prompts)
        ]
        for c, p in zip(data.classes, phrases)
    ]


def train_epoch(
    epoch: int,
    total: int,
    cfg: TrainConfig,
    learner: PromptLearner,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    data: TrainData,
    cb: Callbacks,
    prof: Profiler | None,
    dist: Dist = SINGLE,
    fixed: FixedLogits | None = None,
) -> dict[str, Any]:
    """One pass over the training images in a random order, each at a view drawn for this epoch: a cached view,
    or with ``fresh_crops`` a new random resized crop encoded in the step (Dassl). With ``drop_last`` the last
    partial batch is dropped (:func:`steps_per_epoch`).

    With ``fixed`` (the default recipe's head) the loss is the cross-entropy of the whole classifier, the
    method's logits plus the fixed prior and residual: the prompts train inside the blend they are used in.

    Under torchrun each rank computes its share of every global batch (:mod:`parallel`)."""
    assert cfg.batch_size is not None  # set by registry.resolve_recipe
    lr = lr_at(epoch, cfg, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)  # order and views depend on (seed, epoch)
    n_images, n_views = data.train.global_.shape[:2]
    order = torch.randperm(n_images, generator=gen)
    crops = views = None
    if data.crops is not None:  # every image's crop and flip for this epoch, in image order
        assert cfg.crop_scale is not None  # set by registry.resolve_recipe
        crops = draw_crops(data.crops.sizes, (cfg.crop_scale, 1.0), gen)
    else:
        views = torch.randint(n_views, (n_images,), generator=gen)
    if cfg.fresh_views:  # view e of every image in epoch e: never the same crop twice
        views = torch.full((n_images,), epoch % n_views)
    steps = steps_per_epoch(n_images, cfg.batch_size, bool(cfg.drop_last))
    tick = cb.epoch(epoch, total, steps)
    t0 = time.perf_counter()
    sums = {"loss": 0.0, "loss_img": 0.0, "loss_llm": 0.0, "correct": 0, "seen": 0}
    outer = inner = 0
    entropy = 0.0  # sum over images of the plans' mean normalised entropy
    bb = learner.bb
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for step in range(steps):
        batch = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        idx = local_part(batch, dist)
        b = len(idx)
        optimizer.zero_grad(set_to_none=True)
        if b == 0:  # a short last batch leaves this rank nothing: it adds zero gradients (and its text share)
            if not isinstance(learner, ConditionalPromptLearner):  # the class split's backward is a collective
                (objective.prompts(learner, None, dist).sum() * 0.0).backward()
            sums_step = reduce_step(params, [0.0] * 5, dist)
            optimizer.step()
            _add(sums, sums_step)
            tick({"loss": sums["loss"] / sums["seen"], "acc": sums["correct"] / sums["seen"], "lr": lr})
            continue
        with phase(prof, "data"):
            if crops is not None and data.crops is not None:  # this step's fresh crops, encoded now
                z, Z = encode_crops(bb, data.crops, idx.tolist(), crops)  # (b, d), (b, N, d)
            else:
                assert views is not None  # drawn above when the crops are not fresh
                Z = data.train.local[idx, views[idx]].to(bb.device, non_blocking=True).float()  # (b, N, d)
                z = data.train.global_[idx, views[idx]].to(bb.device, non_blocking=True).float()  # (b, d)
            y = data.train_labels[idx].to(bb.device)  # (b,)
        with phase(prof, "text"):
            W = objective.prompts(learner, z, dist)  # (K, M, d); codualpt: each image's own, (b, K, M, d)
        with phase(prof, "matching"), bb.autocast():
            logits, stats = objective.logits_with_stats(Z, W, z)  # (b, K)
        with phase(prof, "loss"):
            loss_llm = objective.llm_loss_value(W, logits.float(), z)
            if fixed is not None:
                logits = logits.float() + fixed(z)
            loss_img = F.cross_entropy(logits.float(), y)
            loss = objective.beta * loss_llm + (1.0 - objective.beta) * loss_img
        with phase(prof, "backward"):
            share = share_of(b, len(batch), dist)
            (loss * share if share != 1.0 else loss).backward()
        step_sums = [
            float(loss.detach()) * b,
            float(loss_img.detach()) * b,
            float(loss_llm.detach()) * b,
            int((logits.argmax(-1) == y).sum()),
            b,
        ]
        with phase(prof if dist.distributed else None, "all-reduce"):
            step_sums = reduce_step(params, step_sums, dist)
        with phase(prof, "optimizer"):
            optimizer.step()
        _add(sums, step_sums)
        outer, inner = max(outer, stats.outer_iters), max(inner, stats.inner_iters)
        entropy += stats.entropy * b
        tick({"loss": sums["loss"] / sums["seen"], "acc": sums["correct"] / sums["seen"], "lr": lr})
    n = sums["seen"]
    iters = epoch_max({"outer": outer, "inner": inner}, dist)
    outer, inner = iters["outer"], iters["inner"]
    return {
        "epoch": epoch + 1,
        "epochs": total,
        "loss": sums["loss"] / n,
        "loss_img": sums["loss_img"] / n,
        "loss_llm": sums["loss_llm"] / n,
        "acc": sums["correct"] / n,
        "lr": lr,
        "seconds": time.perf_counter() - t0,
        "match_outer_iters": outer,
        "match_inner_iters": inner,
        "plan_entropy": entropy / n,
    }


def _add(sums: dict[str, float], step: list[float]) -> None:
    """Add one step's (loss, loss_img, loss_llm) sums and (correct, seen) counts to the epoch's."""
    for key, value in zip(("loss", "loss_img", "loss_llm", "correct", "seen"), step):
        sums[key] += int(value) if key in ("correct", "seen") else value


@torch.no_grad()
def evaluate(
    learner: PromptLearner,
    objective: Objective,
    fs: FeatureSet,
    labels: torch.Tensor,
    batch_size: int = 256,
    dist: Dist = SINGLE,
    fixed: FixedLogits | None = None,
) -> float:
    """Top-1 accuracy on the first view of each image (the eval view for validation sets), of the method's
    logits plus ``fixed`` (the head) when given.

    Under torchrun each rank scores a contiguous share of the images and the counts are summed."""
    lo, hi = dist.shard_bounds(len(labels))
    logits = batched_logits(objective, learner, fs.local[lo:hi, 0], fs.global_[lo:hi, 0], batch_size, dist)
    if fixed is not None:
        logits = logits + fixed(fs.global_[lo:hi, 0].to(logits.device).float())
    correct = int((logits.argmax(-1).cpu() == labels[lo:hi]).sum())
    if dist.distributed:
        correct = int(dist.sum(correct, "validation: summing the correct answers"))
    return correct / max(len(labels), 1)
