"""The checkpoint of a training run (``checkpoints/state.safetensors``) for ``--resume``: the trainable
tensors (the context; codualpt's meta-net too), their SGD momentum and the best-validation state after each
epoch, and the options that must not change across a resume.

Tensor names: each parameter under its name (``ctx``, ``meta_net.linear1.weight`` ...), its momentum under
``momentum.NAME`` and its best-epoch copy under ``best.NAME``, except the context's, ``momentum`` and ``best_ctx``
(their names before codualpt).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..clip.spec import ModelSpec
from ..core.project import Project, atomic_write_text
from ..errors import ProjectError
from ..model.prompts import PromptLearner
from ..promptfile.io import CHECKPOINT_FORMAT, read_safetensors, write_safetensors
from .config import TrainConfig
from .hooks import BestEpoch


def run_identity(cfg: TrainConfig) -> dict[str, Any]:
    """The config fields that must not change across --resume."""
    keep = (
        "method",
        "images",
        "shots",
        "val_shots",
        "seed",
        "recipe",
        "prompt_text",
        "crop_scale",
        "n_prompts",
        "n_ctx",
        "ctx_init",
        "class_specific",
        "alpha",
        "beta",
        "lam",
        "llm_loss",
        "context",
        "epochs",
        "batch_size",
        "lr",
        "momentum",
        "weight_decay",
        "warmup_epochs",
        "warmup_lr",
        "aug_views",
        "fresh_views",
        "fresh_crops",
        "drop_last",
        "outer_iters",
        "inner_iters",
        "tol",
        "description_template",
        "head",
        "head_lambda",
    )
    d = asdict(cfg)
    return {"model": list(ModelSpec(cfg.model, cfg.pretrained).resolved()), **{k: d[k] for k in keep}}


def save_checkpoint(
    project: Project,
    cfg: TrainConfig,
    learner: PromptLearner,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    best: BestEpoch,
) -> None:
    tensors = {}
    for name, p in learner.named_parameters():
        tensors[name] = p.detach()
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            tensors[_key("momentum", name)] = buf
        if best.state is not None:  # methods.snapshot: {name: tensor}
            tensors[_key("best", name)] = best.state[name]
    meta = {"epoch": epoch, "config": run_identity(cfg), "best_epoch": best.epoch, "best_acc": best.acc}
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
    stored.setdefault("method", "dualpt")  # checkpoints from before --method
    changed = [k for k in now if stored.get(k) != now[k]]
    if changed:
        k = changed[0]
        raise ProjectError(
            f"--resume: {k} was {stored.get(k)!r} in the checkpoint, now {now[k]!r}; "
            "use the same options or start without --resume"
        )
    return tensors, meta


def restore_checkpoint(
    checkpoint: tuple[dict[str, torch.Tensor], dict[str, Any]], learner: PromptLearner, optimizer: torch.optim.Optimizer
) -> tuple[int, BestEpoch]:
    """Load the context, momentum and best-validation state; (epochs done, best)."""
    tensors, meta = checkpoint
    params = dict(learner.named_parameters())
    if any(name not in tensors or tensors[name].shape != p.shape for name, p in params.items()):
        raise ProjectError("--resume: the checkpoint's prompts do not match this run; start without --resume")
    best_state = {}
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name].to(p.device))
            if _key("momentum", name) in tensors:
                optimizer.state[p]["momentum_buffer"] = tensors[_key("momentum", name)].to(p.device).clone()
            if _key("best", name) in tensors:
                best_state[name] = tensors[_key("best", name)].to(p.device)
    best = BestEpoch(
        meta.get("best_epoch"), meta.get("best_acc", -1.0), best_state if len(best_state) == len(params) else None
    )
    return int(meta["epoch"]), best


def _key(kind: str, name: str) -> str:
    """The checkpoint tensor of parameter ``name``'s momentum or best copy (the context's kept its old names)."""
    if name == "ctx":
        return "momentum" if kind == "momentum" else "best_ctx"
    return f"{kind}.{name}"
