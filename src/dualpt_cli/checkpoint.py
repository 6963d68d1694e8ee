"""The checkpoint of a training run (``checkpoints/state.safetensors``) for ``--resume``: the context, SGD
momentum and best-validation state after each epoch, and the options that must not change across a resume.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .errors import ProjectError
from .models import ModelSpec
from .project import Project, atomic_write_text
from .promptfile import CHECKPOINT_FORMAT, read_safetensors, write_safetensors
from .prompts import PromptLearner
from .trainconfig import TrainConfig


def run_identity(cfg: TrainConfig) -> dict[str, Any]:
    """The config fields that must not change across --resume."""
    keep = ("images", "shots", "val_shots", "seed", "recipe", "prompt_text", "crop_scale", "n_prompts", "n_ctx",
            "ctx_init", "class_specific", "alpha", "beta", "lam", "llm_loss", "context", "epochs", "batch_size",
            "lr", "momentum", "weight_decay", "warmup_epochs", "warmup_lr", "aug_views", "fresh_views",
            "outer_iters", "inner_iters", "tol", "description_template")
    d = asdict(cfg)
    return {"model": list(ModelSpec(cfg.model, cfg.pretrained).resolved()), **{k: d[k] for k in keep}}


def save_checkpoint(project: Project, cfg: TrainConfig, learner: PromptLearner, optimizer, epoch: int,
                     best: dict[str, Any]) -> None:
    tensors = {"ctx": learner.ctx.detach()}
    buf = optimizer.state.get(learner.ctx, {}).get("momentum_buffer")
    if buf is not None:
        tensors["momentum"] = buf
    if best["ctx"] is not None:
        tensors["best_ctx"] = best["ctx"]
    meta = {"epoch": epoch, "config": run_identity(cfg), "best_epoch": best["epoch"], "best_acc": best["acc"]}
    write_safetensors(project.checkpoint_dir / "state.safetensors", tensors, CHECKPOINT_FORMAT, meta)


def trim_log(path: Path, epochs_done: int) -> None:
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


def read_checkpoint(project: Project, cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The checkpoint, checked to come from the same options (before any slow work starts)."""
    path = project.checkpoint_dir / "state.safetensors"
    if not path.is_file():
        raise ProjectError(f"--resume: no checkpoint in {project.checkpoint_dir}; start without --resume")
    tensors, meta = read_safetensors(path, CHECKPOINT_FORMAT, "checkpoint")
    stored, now = meta.get("config", {}), run_identity(cfg)
    changed = [k for k in now if stored.get(k) != now[k]]
    if changed:
        k = changed[0]
        raise ProjectError(f"--resume: {k} was {stored.get(k)!r} in the checkpoint, now {now[k]!r}; "
                           "use the same options or start without --resume")
    return tensors, meta


def restore_checkpoint(checkpoint: tuple[dict[str, torch.Tensor], dict[str, Any]], learner: PromptLearner, optimizer):
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

