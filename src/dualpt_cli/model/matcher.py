"""The paper's Eq. 8 logits with fixed settings (:class:`Matcher`): the logit scale, the solver's settings and the class
chunk, round-tripped through the prompt file's metadata; the maths is :mod:`matching`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .matching import MatchingStats, SolverSettings, dual_scores, dual_scores_with_stats, graph_matching_plan


@dataclass(frozen=True)
class Matcher:
    """The paper's Eq. 8 logits with fixed settings: ``logit_scale * sum_ij T_ij cos(z_i, w_kj)``.

    Training and prediction both score through this one object, so their logits are the same computation.
    """

    logit_scale: float  # exp(CLIP's logit scale)
    solver: SolverSettings = SolverSettings()  # alpha, lam, iteration caps
    chunk: int | None = None  # classes per solve (None: all at once)

    @classmethod
    def from_meta(cls, meta: dict, chunk: int | None = None) -> Matcher:
        """The settings stored in a prompt file's metadata."""
        solver = SolverSettings(
            alpha=float(meta["alpha"]),
            lam=float(meta["lambda"]),
            outer_iters=int(meta["outer_iters"]),
            inner_iters=int(meta["inner_iters"]),
            tol=float(meta["tol"]),
            align=str(meta.get("align", "graph")),
        )
        return cls(logit_scale=float(meta["logit_scale"]), solver=solver, chunk=chunk)

    def meta(self) -> dict:
        """The inverse of :meth:`from_meta` (``chunk`` is a memory setting, not part of the model; ``outer_tol``
        and ``check_every`` are not stored: prompt files are read with their defaults)."""
        s = self.solver
        return {
            "logit_scale": self.logit_scale,
            "alpha": s.alpha,
            "lambda": s.lam,
            "outer_iters": s.outer_iters,
            "inner_iters": s.inner_iters,
            "tol": s.tol,
            "align": s.align,
        }

    def logits(self, Z: Tensor, W: Tensor) -> Tensor:
        """(B, K) logits from local image features Z (B, N, d) (any norm) and normalised prompts W (K, M, d)."""
        return self.logit_scale * dual_scores(
            torch.nn.functional.normalize(Z, dim=-1), W, self.solver, chunk=self.chunk
        )

    def logits_with_stats(self, Z: Tensor, W: Tensor) -> tuple[Tensor, MatchingStats]:
        """:meth:`logits` and the solver's statistics."""
        s, stats = dual_scores_with_stats(torch.nn.functional.normalize(Z, dim=-1), W, self.solver, chunk=self.chunk)
        return self.logit_scale * s, stats

    def plan(self, Z: Tensor, W: Tensor) -> Tensor:
        """(B, K, N, M) plans behind :meth:`logits`, for looking at them (no gradient, float32).

        Z: (B, N, d) local image features (any norm); W: (K, M, d) normalised prompts.
        """
        Z = torch.nn.functional.normalize(Z.float(), dim=-1).unsqueeze(1)  # (B, 1, N, d)
        return graph_matching_plan(Z, W.float().unsqueeze(0), self.solver)  # (B, K, N, M)
