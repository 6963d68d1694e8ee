"""Tip-Adapter and Tip-Adapter-F (Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for Few-shot
Classification", ECCV 2022; gaopengcuhk/Tip-Adapter): a cache model of the shots beside zero-shot CLIP.

- Cache: keys ``F_train`` (n, d), the L2-normalised mean of each shot's global features over its augmented views
  (the repository's ``build_cache_model`` averages ``augment_epoch`` = 10 passes of RandomResizedCrop(0.5, 1) +
  flip, then normalises); values ``L_train`` (n, K), the shots' one-hot labels.
- Logits of an image with normalised global feature f (Eq. 6 of the paper)::

      logits = logit_scale * f W_c^T + alpha * exp(-beta (1 - f F_train^T)) L_train

  with W_c the zero-shot classifier (K, d).
- alpha and beta: the repository's ``search_hp`` grid, beta_i = 0.1 + i (7 - 0.1) / 200 (i < 200) and
  alpha_j = 0.1 + j (3 - 0.1) / 20 (j < 20) (``search_scale [7, 3]``, ``search_step [200, 20]``, the ImageNet and
  OxfordPets configs), the first best accuracy kept. The repository searches on the dataset's validation split;
  without one, :func:`search` scores every shot against the cache without its own key (leave-one-out).
- Tip-Adapter-F (:func:`fine_tune`): the keys become the weight of a Linear layer trained with AdamW (lr 0.001,
  eps 1e-4), a cosine schedule over every step, batch 256, 20 epochs, at alpha 1.17 and beta 1 (the configs'
  ``init_alpha``, ``init_beta``); then the grid is searched again with the fine-tuned keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .scores import global_logits

SEARCH_SCALE = (7.0, 3.0)  # largest (beta, alpha) of the grid (configs/imagenet.yaml)
SEARCH_STEP = (200, 20)  # values of (beta, alpha) in the grid
INIT_BETA, INIT_ALPHA = 1.0, 1.17  # what -F trains at (configs/imagenet.yaml, oxford_pets.yaml)
FINE_TUNE_EPOCHS = 20  # train_epoch
FINE_TUNE_LR = 0.001
FINE_TUNE_BATCH = 256
ADAMW_EPS = 1e-4


@dataclass
class TipCache:
    """A fitted cache model: keys (n, d), values (n, K) one-hot, and the searched alpha and beta."""

    keys: torch.Tensor  # (n, d); normalised before fine-tuning, as trained after it
    values: torch.Tensor  # (n, K) float one-hot labels
    alpha: float
    beta: float
    search_acc: float  # leave-one-out accuracy of the shots at (alpha, beta)


def cache_keys(views: torch.Tensor) -> torch.Tensor:
    """(n, d) keys from the raw global features of the shots' views (n, V, d): mean over views, then normalised."""
    return F.normalize(views.float().mean(dim=1), dim=-1)


def cache_logits(f: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """(B, K) ``alpha * exp(-beta (1 - f keys^T)) values`` for normalised image features f (B, d), keys (n, d)
    and values (n, K); gradients flow into ``keys`` (Tip-Adapter-F)."""
    affinity = f.float() @ keys.float().T  # (B, n)
    return alpha * torch.exp(-beta * (1.0 - affinity)) @ values.float()


def tip_logits(z: torch.Tensor, tip: TipCache, zero_shot_weights: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """(B, K) Tip-Adapter logits of global features z (B, d) of any norm: zero-shot CLIP plus the cache."""
    f = F.normalize(z.float(), dim=-1)
    return global_logits(f, zero_shot_weights, logit_scale) + cache_logits(f, tip.keys, tip.values, tip.alpha, tip.beta)


def search_grid() -> tuple[list[float], list[float]]:
    """(betas, alphas) of the repository's ``search_hp``: 200 betas in [0.1, 7), 20 alphas in [0.1, 3)."""
    (b_top, a_top), (b_n, a_n) = SEARCH_SCALE, SEARCH_STEP
    return [i * (b_top - 0.1) / b_n + 0.1 for i in range(b_n)], [j * (a_top - 0.1) / a_n + 0.1 for j in range(a_n)]


@torch.no_grad()
def search(
    keys: torch.Tensor, values: torch.Tensor, queries: torch.Tensor, zero_shot: torch.Tensor
) -> tuple[float, float, float]:
    """(alpha, beta, accuracy): the grid point with the best leave-one-out accuracy of the shots.

    Args:
        keys: (n, d) cache keys (fine-tuned ones for -F); values: (n, K) one-hot labels of the n shots.
        queries: (n, d) normalised features of the same n shots (query i leaves key i out of the cache).
        zero_shot: (n, K) zero-shot logits of the queries.
    Loops over beta, then alpha, keeping the first best (``>``), as ``search_hp``. Memory: the (n, n) affinity
    and one (n, K) cache at a time.
    """
    betas, alphas = search_grid()
    labels = values.argmax(dim=-1)  # (n,)
    own = torch.eye(len(keys), dtype=torch.bool, device=keys.device)  # (n, n): query i's own key
    affinity = (queries.float() @ keys.float().T).masked_fill(own, float("nan"))  # (n, n)
    best = (-1.0, alphas[0], betas[0])
    for beta in betas:
        cache = torch.exp(-beta * (1.0 - affinity)).nan_to_num(0.0) @ values.float()  # (n, K)
        for alpha in alphas:
            acc = float((zero_shot.float() + alpha * cache).argmax(dim=-1).eq(labels).float().mean())
            if acc > best[0]:
                best = (acc, alpha, beta)
    return best[1], best[2], best[0]


def fine_tune(
    keys: torch.Tensor,
    values: torch.Tensor,
    views: torch.Tensor,
    zero_shot_weights: torch.Tensor,
    logit_scale: float,
    seed: int,
    epochs: int = FINE_TUNE_EPOCHS,
) -> torch.Tensor:
    """Tip-Adapter-F's training of the keys: (n, d) fine-tuned keys.

    Args:
        keys: (n, d) initial keys; values: (n, K) one-hot labels; views: (n, V, d) raw global features of the
        shots' augmented views (each epoch draws one view per shot, as the repository's loader draws a fresh
        crop); zero_shot_weights: (K, d) normalised zero-shot classifier.
    Every step: cross-entropy of the Tip-Adapter logits at (INIT_ALPHA, INIT_BETA) on a shuffled batch of 256,
    AdamW (lr 0.001, eps 1e-4, torch's default weight decay 0.01), CosineAnnealingLR over every step. The order
    and views of epoch e come from a generator seeded with (seed, e). The last epoch's keys are kept (the
    repository keeps the epoch with the best test accuracy, which a user does not have).
    """
    n, V = views.shape[:2]
    weight = torch.nn.Parameter(keys.detach().clone().float())  # the adapter's Linear weight
    optimizer = torch.optim.AdamW([weight], lr=FINE_TUNE_LR, eps=ADAMW_EPS)
    steps = math.ceil(n / FINE_TUNE_BATCH)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps)
    labels = values.argmax(dim=-1)
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=gen)
        drawn = torch.randint(V, (n,), generator=gen)
        for step in range(steps):
            idx = order[step * FINE_TUNE_BATCH : (step + 1) * FINE_TUNE_BATCH]
            f = F.normalize(views[idx, drawn[idx]].to(weight.device).float(), dim=-1)  # (b, d)
            logits = logit_scale * f @ zero_shot_weights.float().T + cache_logits(
                f, weight, values, INIT_ALPHA, INIT_BETA
            )
            loss = F.cross_entropy(logits, labels[idx].to(weight.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return weight.detach()


def fit_tip_adapter(
    views: torch.Tensor,
    labels: torch.Tensor,
    zero_shot_weights: torch.Tensor,
    logit_scale: float,
    num_classes: int,
    fine_tune_epochs: int = 0,
    seed: int = 1,
) -> TipCache:
    """The cache of the shots (views (n, V, d) raw global features, labels (n,)), fine-tuned for
    ``fine_tune_epochs`` epochs (0: Tip-Adapter, training-free), and its searched alpha and beta."""
    keys = cache_keys(views)  # (n, d)
    values = F.one_hot(labels.long(), num_classes).float().to(keys.device)  # (n, K)
    zero_shot = logit_scale * keys @ zero_shot_weights.float().T  # (n, K): the queries are the mean views
    queries = keys
    if fine_tune_epochs:
        keys = fine_tune(keys, values, views, zero_shot_weights, logit_scale, seed, fine_tune_epochs)
    alpha, beta, acc = search(keys, values, queries, zero_shot)
    return TipCache(keys, values, alpha, beta, acc)
