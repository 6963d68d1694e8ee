"""The training schedule: epochs by shots, the learning rate of each epoch, optimiser steps per epoch (Dassl's)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig


def epochs_for_shots(shots: int | None) -> int:
    """The paper's schedule: 50 epochs for 1 shot, 100 for 2 and 4, 200 for 8 and more."""
    if shots is not None and shots <= 1:
        return 50
    if shots is not None and shots <= 4:
        return 100
    return 200


def lr_at(epoch: int, cfg: TrainConfig, total: int) -> float:
    """The learning rate of epoch ``epoch`` (from 0) of ``total``: Dassl's ``ConstantWarmupScheduler`` around
    ``CosineAnnealingLR(T_max=total)`` (CoOp's configs).

    The first ``warmup_epochs`` run at ``warmup_lr``; then the cosine scheduler starts from its own step 0, so
    epoch e >= w runs at ``0.5 lr (1 + cos(pi (e - w) / E))``: the full rate right after the warm-up, and the
    last epoch still above 0. A run no longer than the warm-up skips it (``--epochs 1`` trains at ``lr``; Dassl
    would train it at ``warmup_lr``; no paper setting is that short).
    """
    warmup = cfg.warmup_epochs if total > cfg.warmup_epochs else 0
    if epoch < warmup:
        return cfg.warmup_lr
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * (epoch - warmup) / total))


def steps_per_epoch(n_images: int, batch_size: int, drop_last: bool) -> int:
    """Optimiser steps in an epoch: Dassl's loader drops the last partial batch (``drop_last``) only when there
    are at least ``batch_size`` images, so a set smaller than one batch still trains one step."""
    if drop_last and n_images >= batch_size:
        return n_images // batch_size
    return math.ceil(n_images / batch_size)
