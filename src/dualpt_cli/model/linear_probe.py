"""The linear-probe baseline: logistic regression on frozen global image features, started at zero-shot CLIP.

Two cheap baselines users should see beside prompt tuning (Silva-Rodriguez et al., "A Closer Look at the
Few-Shot Adaptation of Large Vision-Language Models", CVPR 2024):

- **ZS-LP**: class weights w_k start at the zero-shot text prototypes t_k ("a photo of a {name}."), so step 0
  *is* zero-shot CLIP; logits = s * <normalize(z), normalize(w_k)> with CLIP's logit scale s fixed
  (``normalize_weights=True``, the paper's choice; the temperature keeps the logits bounded, which is what
  stops a few-shot fit from running away). ``normalize_weights=False`` is plain multinomial logistic
  regression, logits = s * <normalize(z), w_k>, i.e. weights s * t_k at the start.
- **CLAP** (``constraint="clap"``): the loss adds a class-wise penalty keeping each w_k near t_k,

      L(W) = CE(logits(W), y) + (1/K) sum_k lambda_k ||w_k - t_k||^2,

  with one multiplier per class set from the zero-shot predictions on the support set: lambda_k is the mean
  zero-shot softmax probability of class k over the support images of class k (classes CLIP already gets
  right stay near their prototype; classes it gets wrong may move). CLAP's augmented-Lagrangian view treats
  the multipliers as dual variables; its published runs keep them at these initial values, and so do we.
  ``constraint="balanced"`` sets every lambda_k = 1 (CLAP's ablation).

Everything is full-batch (L-BFGS by default, or Adam), so a fit is deterministic: the same features give the
same weights; ``seed`` only matters for ``init="random"``. Pure functions on tensors; the caller encodes the
features (the training feature cache serves them) and stores the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import DataError
from .defaults import CLAP_REPS  # noqa: F401  (re-exported)
from .scores import global_logits

OPTIMIZERS = ("lbfgs", "adam")
from ..core.vocab import CONSTRAINTS  # noqa: E402,F401

INITS = ("zero-shot", "random")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.01}


@dataclass
class LinearProbeConfig:
    """How the probe is fitted."""

    optimizer: str = "lbfgs"  # "lbfgs" (full batch, strong-Wolfe line search) or "adam" (full batch)
    steps: int = 100  # L-BFGS iterations or Adam steps
    lr: float | None = None  # None: 1.0 for L-BFGS, 0.01 for Adam
    normalize_weights: bool = True  # cosine classifier at CLIP's temperature (ZS-LP); False: plain logistic regression
    constraint: str = "none"  # "none", "clap" (multipliers from zero-shot accuracy per class) or "balanced" (all 1)
    init: str = "zero-shot"  # "zero-shot" (the text prototypes) or "random" (Kaiming normal, seeded)
    seed: int = 1  # only used by init="random"

    def check(self) -> None:
        for value, allowed, what in (
            (self.optimizer, OPTIMIZERS, "optimizer"),
            (self.constraint, CONSTRAINTS, "constraint"),
            (self.init, INITS, "init"),
        ):
            if value not in allowed:
                raise DataError(f"linear probe {what} {value!r} is unknown; use one of {', '.join(allowed)}")
        if self.steps < 0:
            raise DataError(f"linear probe steps must be >= 0, got {self.steps}")
        if self.lr is not None and not self.lr > 0:
            raise DataError(f"linear probe learning rate must be > 0, got {self.lr}")


@dataclass
class LinearProbeResult:
    """A fitted probe: the weights predict needs, and what the fit did."""

    weights: torch.Tensor  # (K, d) class weights w_k
    logit_scale: float  # s, CLIP's, fixed
    normalize_weights: bool
    multipliers: torch.Tensor | None  # (K,) lambda_k of the constraint, None without one
    losses: list[float] = field(default_factory=list)  # at each evaluation (L-BFGS may do several per step), then final
    train_acc: float = float("nan")  # accuracy on the support set after the fit

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """(B, K) logits of global image features ``z`` (B, d)."""
        return probe_logits(z, self.weights, self.logit_scale, self.normalize_weights)


def probe_logits(
    z: torch.Tensor, weights: torch.Tensor, logit_scale: float, normalize_weights: bool = True
) -> torch.Tensor:
    """s * <normalize(z), w_k> (w_k normalised too when ``normalize_weights``).

    Args:
        z: (B, d) global image features (any norm; normalised here).
        weights: (K, d) class weights; gradients flow into them.
    Returns:
        (B, K) logits.
    """
    w = F.normalize(weights, dim=-1) if normalize_weights else weights
    return global_logits(z, w, logit_scale)


def clap_multipliers(zs_logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """CLAP's class-wise multipliers: lambda_k = mean zero-shot probability of class k on its support images.

    Args:
        zs_logits: (N, K) zero-shot logits of the support images.
        labels: (N,) their classes.
    Returns:
        (K,) multipliers in [0, 1]; a class without support images gets 1 (nothing to learn from, so it stays
        at zero-shot).
    """
    prob = zs_logits.float().softmax(dim=-1)  # (N, K)
    onehot = F.one_hot(labels.long(), num_classes).float()  # (N, K)
    count = onehot.sum(0)  # (K,)
    own = (prob * onehot).sum(0)  # (K,) sum of p(y=k|x) over images of class k
    return torch.where(count > 0, own / count.clamp(min=1), torch.ones_like(own))


def constraint_penalty(weights: torch.Tensor, anchors: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """(1/K) sum_k lambda_k ||w_k - t_k||^2 for weights (K, d), anchors (K, d), multipliers (K,); a scalar."""
    return (multipliers * (weights - anchors).pow(2).sum(-1)).mean()


def fit_linear_probe(
    z: torch.Tensor,
    labels: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float,
    config: LinearProbeConfig | None = None,
    multipliers: torch.Tensor | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> LinearProbeResult:
    """Fit the probe on the support set.

    Args:
        z: (N, d) frozen global image features of the support images (several augmented views per image may
            simply be more rows).
        labels: (N,) class indices in [0, K).
        text_features: (K, d) normalised zero-shot text prototypes t_k.
        logit_scale: CLIP's s (``Backbone.logit_scale``).
        multipliers: (K,) lambda_k to use instead of the ones ``config.constraint`` computes.
        on_step: called with (evaluation number, loss) at each loss evaluation.
    Returns:
        The fitted :class:`LinearProbeResult`; ``config.steps == 0`` returns the initial weights.
    """
    cfg = config or LinearProbeConfig()
    cfg.check()
    if z.dim() != 2 or labels.shape != (z.shape[0],) or text_features.dim() != 2:
        raise DataError(
            f"linear probe needs features (N, d) and labels (N,), got {tuple(z.shape)} and {tuple(labels.shape)}"
        )
    K, d = text_features.shape
    if z.shape[1] != d:
        raise DataError(f"image features have {z.shape[1]} dimensions, text prototypes {d}")
    if len(labels) == 0:
        raise DataError("the linear probe needs at least one support image")
    z = z.detach().float()
    labels = labels.long().to(z.device)
    anchors = text_features.detach().float().to(z.device)  # (K, d) t_k
    if cfg.init == "zero-shot":
        start = anchors.clone()
    else:
        gen = torch.Generator().manual_seed(cfg.seed)
        start = (torch.randn(K, d, generator=gen) * (2.0 / d) ** 0.5).to(z.device)  # Kaiming normal
    weights = start.requires_grad_(True)

    if multipliers is None and cfg.constraint == "clap":
        multipliers = clap_multipliers(probe_logits(z, anchors, logit_scale, cfg.normalize_weights), labels, K)
    elif multipliers is None and cfg.constraint == "balanced":
        multipliers = torch.ones(K)
    if multipliers is not None:
        multipliers = multipliers.detach().float().to(z.device)

    def loss_fn() -> torch.Tensor:
        loss = F.cross_entropy(probe_logits(z, weights, logit_scale, cfg.normalize_weights), labels)
        if multipliers is not None:
            loss = loss + constraint_penalty(weights, anchors, multipliers)
        return loss

    lr = cfg.lr or DEFAULT_LR[cfg.optimizer]
    losses: list[float] = []
    if cfg.optimizer == "lbfgs":  # one call runs all iterations: L-BFGS keeps its curvature pairs between them
        opt: torch.optim.Optimizer = torch.optim.LBFGS(
            [weights],
            lr=lr,
            max_iter=max(cfg.steps, 1),
            history_size=20,
            tolerance_grad=1e-10,
            tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )
    else:
        opt = torch.optim.Adam([weights], lr=lr)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(len(losses), losses[-1])
        return loss

    # (torch's stubs type the closure as returning a float; the optimizers take the loss tensor, as documented)
    if cfg.steps and cfg.optimizer == "lbfgs":
        opt.step(closure)  # type: ignore[arg-type]
    for _ in range(cfg.steps if cfg.optimizer == "adam" else 0):
        opt.step(closure)  # type: ignore[arg-type]
    if not torch.isfinite(weights).all():
        raise DataError("the linear probe diverged (weights became NaN or infinite); lower its learning rate")
    with torch.no_grad():
        final = loss_fn()
        losses.append(float(final))
        acc = float((probe_logits(z, weights, logit_scale, cfg.normalize_weights).argmax(-1) == labels).float().mean())
    return LinearProbeResult(
        weights=weights.detach(),
        logit_scale=float(logit_scale),
        normalize_weights=cfg.normalize_weights,
        multipliers=multipliers,
        losses=losses,
        train_acc=acc,
    )


# jusiro/CLAP as published (configs/trainers/SGD_lr1e-1_B256_ep300.yaml, trainers/adapters.py)
CLAP_EPOCHS, CLAP_BATCH, CLAP_LR = 300, 256, 0.1  # CLAP_REPS (model/defaults.py): augmented views per image


def fit_clap(
    z: torch.Tensor,
    labels: torch.Tensor,
    anchors: torch.Tensor,
    logit_scale: float,
    multipliers: torch.Tensor,
    n_images: int,
    seed: int = 1,
    epochs: int = CLAP_EPOCHS,
    batch_size: int = CLAP_BATCH,
    lr: float = CLAP_LR,
    warmup_lr: float = 1e-5,
) -> LinearProbeResult:
    """CLAP's training of the constrained probe, as its ``ADAPTER`` trainer runs it.

    The weights start at the anchors t_k (the *un-normalised* mean text feature of the dataset's templates);
    logits ``s cos(z, w_k)``; loss ``CE + (1/K) sum_k lambda_k ||w_k - t_k||^2``. SGD (Dassl's: momentum 0.9,
    here no weight decay). Each epoch shuffles every feature row (``CLAP_REPS`` augmented views of each image)
    and takes as many consecutive batches of ``batch_size`` rows as Dassl's loader has batches over the
    ``n_images`` images (floor, or 1 below one batch); the learning rate follows Dassl's constant warm-up
    (1 epoch at ``warmup_lr``) and ``CosineAnnealingLR(T_max=epochs)``, stepped after each epoch.

    Args:
        z: (R, d) global features of the augmented views; labels: (R,); anchors: (K, d); multipliers: (K,).
        seed: the shuffles' generator (CLAP uses numpy's global one).
    """
    z, labels = z.detach().float(), labels.long().to(z.device)
    anchors = anchors.detach().float().to(z.device)
    multipliers = multipliers.detach().float().to(z.device)
    weights = anchors.clone().requires_grad_(True)
    opt = torch.optim.SGD([weights], lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    batches = n_images // batch_size if n_images >= batch_size else 1
    losses: list[float] = []
    for epoch in range(epochs):
        for group in opt.param_groups:  # Dassl's ConstantWarmupScheduler(CosineAnnealingLR), as train/config.lr_at
            group["lr"] = warmup_lr if epoch < 1 else 0.5 * lr * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))
        order = torch.randperm(len(z), generator=gen).to(z.device)
        for step in range(batches):
            idx = order[step * batch_size : (step + 1) * batch_size]
            loss = F.cross_entropy(probe_logits(z[idx], weights, logit_scale), labels[idx])
            loss = loss + constraint_penalty(weights, anchors, multipliers)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    if not torch.isfinite(weights).all():
        raise DataError("the CLAP probe diverged (weights became NaN or infinite)")
    with torch.no_grad():
        acc = float((probe_logits(z, weights, logit_scale).argmax(-1) == labels).float().mean())
    return LinearProbeResult(weights.detach(), float(logit_scale), True, multipliers, losses, acc)
