"""``--profile``: wall time per phase of a training step."""

from __future__ import annotations

import time

import torch


class Profiler:
    """Wall time per phase of a step (synchronising CUDA so the times are real)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: dict[str, float] = {}

    def summary(self) -> dict[str, float]:
        return dict(self.totals)


class phase:
    """``with phase(prof, name):`` adds the block's time to ``prof`` (nothing without a profiler)."""

    def __init__(self, prof: Profiler | None, name: str):
        self.prof, self.name = prof, name

    def __enter__(self) -> phase:
        if self.prof is not None:
            if self.prof.device.type == "cuda":
                torch.cuda.synchronize(self.prof.device)
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.prof is not None:
            if self.prof.device.type == "cuda":
                torch.cuda.synchronize(self.prof.device)
            self.prof.totals[self.name] = self.prof.totals.get(self.name, 0.0) + time.perf_counter() - self.t0
