"""CoOp's "Linear probe CLIP" (LP-CLIP; the linear-probe baseline of CoOp's and DUAL-PT's few-shot figures).

As CoOp's ``lpclip/linear_probe.py``: multinomial logistic regression with an L2 penalty (scikit-learn's
``LogisticRegression(solver="lbfgs", penalty="l2", C=C, max_iter=1000)``) on the *raw* global image features
(``clip_model.visual(x)``, not normalised) of the un-augmented images, with a bias per class:

    min_{W, b}  sum_i CE(W x_i + b, y_i) + ||W||^2 / (2 C)          logits(x) = W x + b

C is searched on held-out images (CoOp: a few-shot sample of the validation split, min(shots, 4) per class):
first over :data:`C_GRID`, then :data:`SEARCH_STEPS` rounds of a bisection in log10(C) between 0.1 and 10
times the best grid value, each round fitting both ends and keeping the better (ties go to the left, as the
script's ``acc_left < acc_right``). The result is the classifier of the last round.

Pure functions on tensors, in float64 (the fit is convex; L-BFGS to scikit-learn's iteration cap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

C_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)  # CoOp's search_list
SEARCH_STEPS = 8  # CoOp's --num_step
MAX_ITER = 1000  # scikit-learn's max_iter in CoOp's script


@dataclass
class Logistic:
    """A fitted L2 logistic regression: logits = x W^T + b."""

    weights: torch.Tensor  # (K, d)
    bias: torch.Tensor  # (K,)
    C: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) logits of raw features ``x`` (B, d)."""
        return lpclip_logits(x, self.weights, self.bias)


@dataclass
class LPClipResult:
    """The chosen classifier and the search that chose it."""

    model: Logistic
    val_acc: float  # held-out accuracy of the chosen C
    tried: list[tuple[float, float]] = field(default_factory=list)  # (C, held-out accuracy) in search order


def lpclip_logits(x: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(B, K) = x W^T + b for raw (not normalised) features x (B, d), weights (K, d), bias (K,)."""
    return x.to(weights.dtype) @ weights.T + bias


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, C: float, max_iter: int = MAX_ITER) -> Logistic:
    """Minimise ``sum_i CE(W x_i + b, y_i) + ||W||^2 / (2 C)`` from W = 0, b = 0 (scikit-learn's start).

    Args:
        x: (N, d) raw features; y: (N,) labels in [0, K).
    The objective is divided by N for the solver (same minimiser, better-scaled tolerances), and W is solved for
    as ``min(1, sqrt(C N)) V`` so that a strong penalty does not stall L-BFGS.
    """
    x64, y = x.detach().double(), y.long().to(x.device)
    n, d = x64.shape
    scale = min(1.0, math.sqrt(C * n))  # W = scale * V: a small C's penalty stays well conditioned for L-BFGS
    V = torch.zeros(num_classes, d, dtype=torch.float64, device=x.device, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [V, b],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        W = scale * V
        loss = F.cross_entropy(x64 @ W.T + b, y, reduction="sum") / n + W.pow(2).sum() / (2.0 * C * n)
        loss.backward()
        return loss

    opt.step(closure)
    W = scale * V
    return Logistic(W.detach().float(), b.detach().float(), float(C))


def _accuracy(model: Logistic, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model.logits(x.float()).argmax(-1) == y.to(x.device)).float().mean())


def search_lpclip(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
    steps: int = SEARCH_STEPS,
    max_iter: int = MAX_ITER,
) -> LPClipResult:
    """CoOp's C search (grid, then ``steps`` bisection rounds in log10 C); the last round's classifier."""
    tried: list[tuple[float, float]] = []

    def fit(C: float) -> tuple[Logistic, float]:
        model = fit_logistic(train_x, train_y, num_classes, C, max_iter)
        acc = _accuracy(model, val_x, val_y)
        tried.append((C, acc))
        return model, acc

    accs = [fit(C)[1] for C in C_GRID]
    peak = C_GRID[max(range(len(accs)), key=lambda i: (accs[i], -i))]  # np.argmax: the first best
    left, right = 0.1 * peak, 10.0 * peak
    final, final_acc = None, 0.0
    for _ in range(steps):
        (m_left, acc_left), (m_right, acc_right) = fit(left), fit(right)
        mid = 10.0 ** (0.5 * (math.log10(left) + math.log10(right)))
        if acc_left < acc_right:
            final, final_acc, left = m_right, acc_right, mid
        else:
            final, final_acc, right = m_left, acc_left, mid
    if final is None:  # steps == 0: the best grid value
        final, final_acc = fit(peak)
    return LPClipResult(final, final_acc, tried)
