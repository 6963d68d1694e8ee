"""Entropic optimal transport with uniform marginals, by a log-domain Sinkhorn (no gradient through the plan).

The inner solver of graph matching (:func:`dualpt_cli.model.matching.fgw_plan` calls :func:`log_sinkhorn` once per
outer iteration), the plain OT plan, and the entropic OT distance of the "wd" ablation of the LLM loss.
Shapes broadcast over leading dimensions, as in :mod:`dualpt_cli.model.matching`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (bf16/fp16 inputs are cast up)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def cosine(X: Tensor, Y: Tensor) -> Tensor:
    """Cosine similarity of L2-normalised rows: (..., n, d), (..., m, d) -> (..., n, m), broadcasting."""
    # einsum folds a size-1 leading dim of one operand into the matrix dims instead of expanding it
    return torch.einsum("...nd,...md->...nm", X, Y)


def log_sinkhorn(log_K: Tensor, max_iters: int, tol: float, check_every: int) -> tuple[Tensor, int]:
    """Sinkhorn-Knopp in the log domain, uniform marginals, started from b = 1.

    Iterates a = p / (K b), b = q / (K^T a) on log a, log b (logsumexp), and returns
    T = diag(a) K diag(b). Stopping rule (PLOT's): the mean absolute change of the scaling vector a over
    one iteration is below ``tol`` for every instance of the batch. It is checked only every
    ``check_every`` iterations (each check is one host-device sync); ``tol <= 0`` runs ``max_iters``.
    At small ``lam`` the scaling vector is large (a ~ exp(C / lam)), so the absolute rule may not be
    met and all ``max_iters`` run; the result stays finite either way.

    Args:
        log_K: -C / lam, shape (..., N, M).
        max_iters: cap on Sinkhorn iterations.
        tol: threshold on the mean absolute change of a.
        check_every: iterations between convergence checks.

    Returns:
        T of shape (..., N, M) (columns sum to 1/M exactly, rows to 1/N up to the tolerance), and the
        number of iterations run.
    """
    if max_iters < 1:
        raise ValueError(f"Sinkhorn needs at least one iteration, got {max_iters}")
    N, M = log_K.shape[-2:]
    log_p, log_q = -math.log(N), -math.log(M)
    log_b = torch.zeros(log_K.shape[:-2] + (M,), dtype=log_K.dtype, device=log_K.device)  # (..., M)
    log_a = None
    n_iters = 0
    for it in range(1, max_iters + 1):
        log_a_prev = log_a
        log_a = log_p - torch.logsumexp(log_K + log_b.unsqueeze(-2), dim=-1)  # (..., N)
        log_b = log_q - torch.logsumexp(log_K + log_a.unsqueeze(-1), dim=-2)  # (..., M)
        n_iters = it
        if tol > 0 and log_a_prev is not None and it % check_every == 0:
            err = (log_a.exp() - log_a_prev.exp()).abs().mean(-1)  # (...,); inf/nan never pass
            if bool((err < tol).all()):
                break
    assert log_a is not None  # max_iters >= 1 iterations ran
    T = torch.exp(log_a.unsqueeze(-1) + log_K + log_b.unsqueeze(-2))  # (..., N, M)
    return T, n_iters


@torch.no_grad()
def sinkhorn_plan(C: Tensor, lam: float = 0.1, *, iters: int = 100, tol: float = 1e-2, check_every: int = 5) -> Tensor:
    """Entropic OT plan with uniform marginals p = 1/N, q = 1/M (no gradient).

    Args:
        C: cost, shape (..., N, M).
        lam: entropic regularisation (the kernel is exp(-C / lam)).
        iters, tol, check_every: Sinkhorn cap and stopping rule, as in :func:`log_sinkhorn`.

    Returns:
        T of shape (..., N, M), float32 (float64 for float64 input), without gradient.
    """
    with torch.autocast(device_type=C.device.type, enabled=False):
        C = C.detach().to(compute_dtype(C))
        T, _ = log_sinkhorn(-C / lam, iters, tol, check_every)
    return T


def sinkhorn_ot_distance(
    X: Tensor, Y: Tensor, lam: float = 0.1, *, iters: int = 100, tol: float = 1e-2, check_every: int = 5
) -> Tensor:
    """Entropic OT distance sum_ij T_ij (1 - cos(x_i, y_j)) between two point sets, uniform weights.

    The plan T is computed without gradient (log-domain Sinkhorn, see :func:`sinkhorn_plan`); the
    distance is differentiable in X and Y through the cost. Used by the "wd" ablation of the LLM loss.

    Args:
        X: L2-normalised features, shape (..., n, d).
        Y: L2-normalised features, shape (..., m, d); leading dims broadcast with X's.
        lam: entropic regularisation.
        iters, tol, check_every: Sinkhorn cap and stopping rule.

    Returns:
        Distance of shape (...,), float32 unless inputs are float64.
    """
    C = 1.0 - cosine(X, Y)  # (..., n, m)
    T = sinkhorn_plan(C, lam, iters=iters, tol=tol, check_every=check_every)
    return (T * C).sum((-2, -1))
