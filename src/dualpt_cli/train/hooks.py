"""What a training run reports and returns: :class:`Callbacks` (the CLI fills them in for progress and
messages; the library never prints) and :class:`TrainResult`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..model.head import Decision
from ..model.residual import ResidualHead


@dataclass
class BestEpoch:
    """The best held-out epoch so far: its number (None: none yet), its held-out accuracy and a copy of the
    trainable tensors by name (``methods.snapshot``)."""

    epoch: int | None = None
    acc: float = -1.0
    state: dict[str, torch.Tensor] | None = None


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
    plan_entropy: float | None = None  # last epoch's mean normalised plan entropy (1 = uniform: no alignment)
    method: str = "dualpt"  # TrainConfig.method
    head: ResidualHead | None = None  # the default recipe's head: residual, temperature, cross-validated accuracies


class Callbacks:
    """Hooks the CLI fills in for progress and messages; the library never prints."""

    def warn(self, message: str) -> None: ...

    def info(self, message: str) -> None: ...

    def stage(self, name: str, total: int) -> Callable[[int], None]:
        return lambda n: None

    def epoch(self, epoch: int, total: int, steps: int) -> Callable[[dict[str, float]], None]:
        return lambda stats: None

    def epoch_done(self, record: dict[str, Any]) -> None: ...
