"""The default recipe's head: a zero-shot-anchored linear probe fitted on top of the blend, and its temperature.

logits(x) = [base(x) + logit_scale * <normalize(z(x)), r_k>] / T

- base(x) is the blend of :mod:`dualpt_cli.model.head` (the prompts' logits plus the prior's);
- r (K, d) is the *residual*: fitted from r = 0, full batch, on every cached view of the support images, by
  minimising mean cross-entropy + ``lam * sum_k ||r_k||^2``. The problem is convex; L-BFGS solves it in
  seconds. With few shots or uninformative images the penalty keeps r near 0, so the head falls back on the
  blend (zero-shot CLIP or the description ensemble); with informative shots r moves the class boundaries
  as a linear probe would (CLAP, Silva-Rodriguez et al., CVPR 2024; LP++, Huang et al., CVPR 2024);
- T is one temperature, fitted on *out-of-fold* logits so that the top-label confidence matches correctness:
  the shots are split into F = min(k, 4) folds by their index within the class (every fold has every
  class), r is refitted without each fold and scores it. The same folds give the cross-validated accuracies
  train reports. At one shot there is nothing to hold out: T is fitted on the head's own logits of the
  support images' views;
- the penalty lam is chosen by the same folds among :data:`LAMBDA_GRID` unless the user fixes it: a value
  other than :data:`DEFAULT_LAMBDA` must beat it by :data:`LAMBDA_MARGIN` out-of-fold accuracy (a few
  held-out images decide, so the default wins near-ties). One shot keeps the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .defaults import RESIDUAL_LAMBDA as DEFAULT_LAMBDA  # penalty on sum_k ||r_k||^2
from .scores import global_logits

LAMBDA_GRID = (3.0, 10.0, 30.0)  # the penalties cross-validation chooses from when --head-lambda is not given
LAMBDA_MARGIN = 0.02  # out-of-fold accuracy another penalty must gain over DEFAULT_LAMBDA to be chosen
MAX_FOLDS = 4
TEMPERATURE_RANGE = (0.05, 20.0)


@dataclass
class ResidualHead:
    """The fitted head: residual weights (K, d), temperature, penalty, folds and cross-validated accuracies."""

    weights: torch.Tensor  # (K, d)
    temperature: float
    lam: float
    folds: int  # 0: one shot, nothing held out
    cv_acc: dict[str, float | None] = field(default_factory=dict)  # classifier -> out-of-fold accuracy
    lambda_cv: dict[str, float] = field(default_factory=dict)  # penalty searched -> the head's out-of-fold accuracy

    def to_json(self) -> dict:
        return {
            "lambda": self.lam,
            "temperature": self.temperature,
            "folds": self.folds,
            "cv_acc": self.cv_acc,
            "lambda_cv": self.lambda_cv,
        }


def residual_logits(z: torch.Tensor, weights: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """(B, K) ``logit_scale * <normalize(z), r_k>`` for global features ``z`` (B, d) and ``weights`` (K, d)."""
    return global_logits(z, weights, logit_scale)


def head_logits(
    base: torch.Tensor, z: torch.Tensor, weights: torch.Tensor | None, logit_scale: float, temperature: float = 1.0
) -> torch.Tensor:
    """(B, K) the head's logits: ``(base + residual) / T`` (``weights`` None: no residual)."""
    out = base.float()
    if weights is not None:
        out = out + residual_logits(z.to(out.device), weights.to(out.device), logit_scale)
    return out / temperature if temperature != 1.0 else out


def fit_residual(
    z: torch.Tensor, labels: torch.Tensor, base: torch.Tensor, logit_scale: float, lam: float, max_iter: int = 100
) -> torch.Tensor:
    """(K, d) residual weights for views ``z`` (n, d) with ``labels`` (n,) and fixed ``base`` logits (n, K)."""
    zn = F.normalize(z.detach().float(), dim=-1)
    base = base.detach().float()
    weights = torch.zeros(base.shape[1], zn.shape[1], device=zn.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weights],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = base + logit_scale * zn @ weights.T
        loss = F.cross_entropy(logits, labels) + lam * (weights * weights).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return weights.detach()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 241) -> float:
    """The temperature T in :data:`TEMPERATURE_RANGE` whose top-label confidences best match correctness.

    The confidence of an image is its largest probability in ``softmax(logits / T)``; T minimises the binary
    cross-entropy between the confidences and whether the most probable class is the true one (the argmax does
    not depend on T). This is the quantity the expected calibration error measures; the class-wise NLL was
    measured too and picked temperatures that left the default head under-confident (docs/method.md).
    A log-spaced grid of ``steps`` values is searched: one dimension, deterministic, no step size to tune.
    """
    logits = logits.detach().float()
    if not len(logits):
        return 1.0
    correct = (logits.argmax(-1) == labels).float()
    grid = torch.logspace(math.log10(TEMPERATURE_RANGE[0]), math.log10(TEMPERATURE_RANGE[1]), steps)
    losses = torch.stack(
        [F.binary_cross_entropy((logits / t).softmax(-1).max(-1).values.clamp(1e-6, 1 - 1e-6), correct) for t in grid]
    )
    return min(max(float(grid[int(losses.argmin())]), TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1])  # float32 ends


def shot_index(labels: torch.Tensor) -> torch.Tensor:
    """(n,) each image's index within its class, in order of appearance."""
    index = torch.zeros_like(labels)
    for k in labels.unique():
        where = labels == k
        index[where] = torch.arange(int(where.sum()), device=labels.device)
    return index


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())


def out_of_fold(
    z: torch.Tensor, labels: torch.Tensor, base: torch.Tensor, logit_scale: float, lam: float, fold: torch.Tensor
) -> torch.Tensor:
    """(n, K) the residual's logits of every view, each fitted without the view's fold (``fold`` (n,) ids)."""
    out = torch.zeros_like(base)
    for f in fold.unique().tolist():
        held = fold == f
        w = fit_residual(z[~held], labels[~held], base[~held], logit_scale, lam)
        out[held] = residual_logits(z[held], w, logit_scale)
    return out


def choose_lambda(accuracy: dict[float, float]) -> float:
    """The penalty to keep from out-of-fold accuracies: the best, unless it gains less than
    :data:`LAMBDA_MARGIN` over :data:`DEFAULT_LAMBDA` (ties between others: the larger, closer to the prior)."""
    best = max(accuracy, key=lambda lam: (round(accuracy[lam], 9), lam))
    if DEFAULT_LAMBDA in accuracy and accuracy[best] < accuracy[DEFAULT_LAMBDA] + LAMBDA_MARGIN:
        return DEFAULT_LAMBDA
    return best


def fit_head(
    z: torch.Tensor,
    labels: torch.Tensor,
    base: torch.Tensor,
    logit_scale: float,
    lam: float | None = None,
    references: dict[str, torch.Tensor] | None = None,
) -> ResidualHead:
    """Fit the residual and its temperature on the support set.

    Args:
        z: (n, V, d) global features of n images, V cached views each.
        labels: (n,) class indices.
        base: (n, V, K) the blend's logits of every view (fixed during the fit).
        lam: the penalty; None: chosen among :data:`LAMBDA_GRID` by cross-validation (:func:`choose_lambda`).
        references: training-free logits (n, V, K) by name (e.g. "zero-shot"), whose accuracy on the support
            views is reported beside the cross-validated ones (they fit nothing, so every view is out of fold).
    """
    n, V, _ = z.shape
    flat_z, flat_base = z.flatten(0, 1), base.flatten(0, 1)
    flat_y = labels.repeat_interleave(V)
    cv: dict[str, float | None] = {name: _acc(r.flatten(0, 1), flat_y) for name, r in (references or {}).items()}
    cv["blend"] = _acc(flat_base, flat_y)
    shots = int(torch.bincount(labels).min()) if n else 0
    folds = min(shots, MAX_FOLDS) if shots >= 2 else 0
    if folds == 0:  # one shot: nothing to hold out; the support's own views
        lam = DEFAULT_LAMBDA if lam is None else lam
        weights = fit_residual(flat_z, flat_y, flat_base, logit_scale, lam)
        temperature = fit_temperature(flat_base + residual_logits(flat_z, weights, logit_scale), flat_y)
        cv.update(residual=None, head=None)
        return ResidualHead(weights, temperature, lam, 0, cv)
    fold = (shot_index(labels) % folds).repeat_interleave(V)
    grid = LAMBDA_GRID if lam is None else (lam,)
    oof_residual = {g: out_of_fold(flat_z, flat_y, flat_base, logit_scale, g, fold) for g in grid}
    searched = {g: _acc(flat_base + r, flat_y) for g, r in oof_residual.items()}
    lam = choose_lambda(searched)
    weights = fit_residual(flat_z, flat_y, flat_base, logit_scale, lam)
    oof = flat_base + oof_residual[lam]
    cv.update(residual=_acc(oof_residual[lam], flat_y), head=_acc(oof, flat_y))
    lambda_cv = {f"{g:g}": a for g, a in searched.items()} if len(grid) > 1 else {}
    return ResidualHead(weights, fit_temperature(oof, flat_y), lam, folds, cv, lambda_cv)
