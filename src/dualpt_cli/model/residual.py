"""The default recipe's head: a zero-shot-anchored linear probe fitted on top of the blend, and its calibration.

logits(x) = [base(x) + logit_scale * <normalize(z(x)), r_k>] / T,  probabilities (1 - eps) softmax(logits) + eps / K

- base(x) is the blend of :mod:`dualpt_cli.model.head` (the prompts' logits plus the prior's);
- r (K, d) is the *residual*: fitted from r = 0, full batch, on every cached view of the support images, by
  minimising mean cross-entropy + ``lam * sum_k ||r_k||^2``. The problem is convex; L-BFGS solves it in
  seconds. With few shots or uninformative images the penalty keeps r near 0, so the head falls back on the
  blend (zero-shot CLIP or the description ensemble); with informative shots r moves the class boundaries
  as a linear probe would (CLAP, Silva-Rodriguez et al., CVPR 2024; LP++, Huang et al., CVPR 2024);
- T is one temperature and eps a weight of the uniform distribution, fitted together on *out-of-fold* logits
  so that the top-label confidence matches correctness; the probabilities are
  ``(1 - eps) softmax(logits / T) + eps / K``, which keep every image's order of the classes (top-1 included).
  eps caps the confidence where the most confident predictions are often wrong (a class that absorbs the
  images of others); it is 0 where a temperature alone fits best. The shots are split into F = min(k, 4)
  folds by their index within the class (every fold has every class), r is refitted without each fold and
  scores it. The same folds give the cross-validated accuracies train reports. At one shot there is nothing
  to hold out: T and eps are fitted on the head's own logits of the support images' views;
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
MAX_MIX = 0.9  # the largest weight eps of the uniform distribution in the probabilities


@dataclass
class ResidualHead:
    """The fitted head: residual weights (K, d), temperature, penalty, folds, cross-validated accuracies and the
    weight of the uniform distribution in the probabilities."""

    weights: torch.Tensor  # (K, d)
    temperature: float
    lam: float
    folds: int  # 0: one shot, nothing held out
    cv_acc: dict[str, float | None] = field(default_factory=dict)  # classifier -> out-of-fold accuracy
    lambda_cv: dict[str, float] = field(default_factory=dict)  # penalty searched -> the head's out-of-fold accuracy
    mix: float = 0.0  # eps: probabilities (1 - eps) softmax(logits / T) + eps / K

    def to_json(self) -> dict:
        return {
            "lambda": self.lam,
            "temperature": self.temperature,
            "mix": self.mix,
            "folds": self.folds,
            "cv_acc": self.cv_acc,
            "lambda_cv": self.lambda_cv,
        }


def residual_logits(z: torch.Tensor, weights: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """(B, K) ``logit_scale * <normalize(z), r_k>`` for global features ``z`` (B, d) and ``weights`` (K, d)."""
    return global_logits(z, weights, logit_scale)


def head_logits(
    base: torch.Tensor,
    z: torch.Tensor,
    weights: torch.Tensor | None,
    logit_scale: float,
    temperature: float = 1.0,
    mix: float = 0.0,
) -> torch.Tensor:
    """(B, K) the head's logits: ``(base + residual) / T`` (``weights`` None: no residual); with ``mix`` eps > 0,
    the log of ``(1 - eps) softmax((base + residual) / T) + eps / K``, so that their softmax is that mixture
    (every image's order of the classes is unchanged)."""
    out = base.float()
    if weights is not None:
        out = out + residual_logits(z.to(out.device), weights.to(out.device), logit_scale)
    out = out / temperature if temperature != 1.0 else out
    return mix_uniform(out, mix) if mix else out


def mix_uniform(logits: torch.Tensor, mix: float) -> torch.Tensor:
    """(B, K) ``log((1 - mix) softmax(logits) + mix / K)``, computed in log space (no underflow)."""
    log_p = logits.float().log_softmax(-1) + math.log1p(-mix)
    return torch.logaddexp(log_p, torch.full_like(log_p, math.log(mix / logits.shape[-1])))


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


def fit_calibration(
    logits: torch.Tensor, labels: torch.Tensor, steps: int = 241, max_mix: float = MAX_MIX
) -> tuple[float, float]:
    """(T, eps): the temperature in :data:`TEMPERATURE_RANGE` and the weight of the uniform distribution in
    [0, ``max_mix``] whose top-label confidences best match correctness (``max_mix`` 0: a temperature alone).

    The confidence of an image is its largest probability in ``(1 - eps) softmax(logits / T) + eps / K``; (T,
    eps) minimise the binary cross-entropy between the confidences and whether the most probable class is the
    true one (the argmax depends on neither). This is the quantity the expected calibration error measures; the
    class-wise NLL was measured too and picked temperatures that left the default head under-confident
    (docs/method.md). T is searched on a log-spaced grid of ``steps`` values (one dimension, deterministic, no
    step size to tune); for each T the loss is convex in eps (the confidence is affine in it), so its best eps
    is 0 where the loss rises from there, else the root of the derivative, found by bisection.
    """
    logits = logits.detach().float()
    if not len(logits):
        return 1.0, 0.0
    correct = (logits.argmax(-1) == labels).float()
    grid = torch.logspace(math.log10(TEMPERATURE_RANGE[0]), math.log10(TEMPERATURE_RANGE[1]), steps)
    best = (math.inf, 1.0, 0.0)
    for t in grid.tolist():
        top = (logits / t).softmax(-1).max(-1).values
        mix = _best_mix(top, correct, 1.0 / logits.shape[-1], max_mix)
        loss = F.binary_cross_entropy(((1 - mix) * top + mix / logits.shape[-1]).clamp(1e-6, 1 - 1e-6), correct)
        if float(loss) < best[0]:
            best = (float(loss), t, mix)
    temperature = min(max(best[1], TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1])  # float32 ends
    return temperature, best[2]


def _best_mix(top: torch.Tensor, correct: torch.Tensor, uniform: float, max_mix: float, iters: int = 30) -> float:
    """The eps in [0, ``max_mix``] minimising the binary cross-entropy of ``top + eps (uniform - top)``."""
    step = uniform - top  # d confidence / d eps (<= 0)

    def slope(eps: float) -> float:  # d loss / d eps, increasing in eps
        conf = (top + eps * step).clamp(1e-6, 1 - 1e-6)
        return float((step * ((1 - correct) / (1 - conf) - correct / conf)).mean())

    if max_mix <= 0 or slope(0.0) >= 0:
        return 0.0
    if slope(max_mix) <= 0:
        return max_mix
    lo, hi = 0.0, max_mix
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


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
    """Fit the residual, its temperature and the weight of the uniform distribution on the support set.

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
        temperature, mix = fit_calibration(flat_base + residual_logits(flat_z, weights, logit_scale), flat_y)
        cv.update(residual=None, head=None)
        return ResidualHead(weights, temperature, lam, 0, cv, mix=mix)
    fold = (shot_index(labels) % folds).repeat_interleave(V)
    grid = LAMBDA_GRID if lam is None else (lam,)
    oof_residual = {g: out_of_fold(flat_z, flat_y, flat_base, logit_scale, g, fold) for g in grid}
    searched = {g: _acc(flat_base + r, flat_y) for g, r in oof_residual.items()}
    lam = choose_lambda(searched)
    weights = fit_residual(flat_z, flat_y, flat_base, logit_scale, lam)
    oof = flat_base + oof_residual[lam]
    cv.update(residual=_acc(oof_residual[lam], flat_y), head=_acc(oof, flat_y))
    lambda_cv = {f"{g:g}": a for g, a in searched.items()} if len(grid) > 1 else {}
    temperature, mix = fit_calibration(oof, flat_y)
    return ResidualHead(weights, temperature, lam, folds, cv, lambda_cv, mix)
