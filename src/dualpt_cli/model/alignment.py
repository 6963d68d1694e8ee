"""How local image features are aligned with a class's prompts: the plan variants of the paper's ablations
(Table 2 "Align", Fig. 6d) beside graph matching, and the plan's entropy.

Every variant gives a plan T (..., N, M) with total mass 1, held constant in the backward pass, and the
class score is the same ``s = sum_ij T_ij cos(z_i, w_j)`` (Eq. 8), so the variants differ only in T:

- ``graph`` (default): entropic fused Gromov-Wasserstein with ``alpha`` (Algorithm 1, :func:`matching.fgw_plan`);
- ``node``: the same solver at alpha = 0, the Wasserstein (node) plan alone (PLOT);
- ``edge``: the same solver at alpha = 1, the Gromov-Wasserstein (edge) plan alone;
- ``attn``: cross-attention from each local feature to the prompts, :func:`attention_plan`;
- ``uniform``: T = p q^T, every pair weighted 1 / (N M), so s is the mean cosine (:func:`uniform_plan`).

:func:`matching.alignment_plan` picks the variant from :class:`matching.SolverSettings` ``align``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.vocab import ALIGNS  # noqa: E402,F401

FIXED_ALPHA = {"node": 0.0, "edge": 1.0}  # the alpha of the graph-matching solver these variants run at


@torch.no_grad()
def attention_plan(sim: Tensor, lam: float) -> Tensor:
    """Cross-attention plan: ``T_ij = (1/N) softmax_j(cos(z_i, w_j) / lam)``.

    Each local feature z_i attends over the M prompts with temperature ``lam`` (the entropic regulariser of
    the OT plans, so the two are equally sharp); the 1/N makes each row sum to p_i = 1/N and the plan sum to
    1 like a transport plan. Only the row marginal holds: a prompt may receive any share of the mass. It is
    entropic OT with the column constraint dropped, i.e. the first half-step of Sinkhorn.

    Args:
        sim: cos(Z, W), shape (..., N, M).
        lam: temperature.

    Returns:
        T of shape (..., N, M), in sim's dtype (float32 or float64 from the callers), without gradient.
    """
    N = sim.shape[-2]
    return torch.softmax(sim.detach() / lam, dim=-1) / N


def uniform_plan(sim: Tensor) -> Tensor:
    """The independent coupling ``T = p q^T = 1 / (N M)`` in the shape and dtype of ``sim`` (..., N, M)."""
    N, M = sim.shape[-2:]
    return torch.full_like(sim, 1.0 / (N * M), requires_grad=False)


@torch.no_grad()
def plan_entropy(T: Tensor) -> Tensor:
    """Entropy of each plan, normalised: ``-sum_ij T_ij log T_ij / log(N M)``, shape (...,).

    1 for the uniform plan p q^T (the largest entropy of a mass-1 plan), 0 for a plan on one pair; a
    plan that places each local feature on one prompt has log(N) / log(N M). Zero entries count as 0.
    A 1 x 1 plan is uniform and gives 1.
    """
    N, M = T.shape[-2:]
    if N * M == 1:
        return torch.ones(T.shape[:-2], dtype=T.dtype, device=T.device)
    return -torch.xlogy(T, T).sum((-2, -1)) / math.log(N * M)
