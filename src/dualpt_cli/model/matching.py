"""Graph matching between local image features and prompt features (DUAL-PT, Algorithm 1).

For one (image, class) pair, the N local image features Z (nodes of the image graph) are matched to the
M prompt features W of the class (nodes of the prompt graph) by entropic fused Gromov-Wasserstein:

    T* = argmin_{T in U(p, q)}  (1 - alpha) <C_WD, T> + (alpha / 2) sum_ijkl (C_z,ik - C_w,jl)^2 T_ij T_kl
                                - lam H(T)

with C_WD = 1 - cos(Z, W) (node cost), C_z = cos(Z, Z), C_w = cos(W, W) (edge weights), p = 1/N,
q = 1/M. Algorithm 1 solves it by a fixed point: linearise the Gromov term at the current plan,
C_GWD = C_zw - 2 C_z T C_w^T, and solve the entropic OT problem with cost
C = alpha C_GWD + (1 - alpha) C_WD by Sinkhorn. This is POT's
``ot.gromov.entropic_fused_gromov_wasserstein(C_WD, C_z, C_w, p, q, 'square_loss',
epsilon=2 * lam / (2 - alpha), alpha=alpha / (2 - alpha))``: POT's gradient of the Gromov term carries a
factor 2 that Algorithm 1 does not, which the change of (epsilon, alpha) absorbs.

The plan is computed without gradient, in float32 (float64 for float64 inputs) with autocast disabled,
and with a log-domain Sinkhorn so that a small ``lam`` (0.01) stays finite. The class score (paper
Eq. 8) s = sum_ij T_ij cos(z_i, w_j) is differentiable in Z and W, with T held fixed.

All functions are batched over arbitrary leading dimensions that broadcast against each other, e.g.
Z: (B, 1, N, d) with W: (1, K, M, d) gives plans of shape (B, K, N, M) without copying Z per class.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .alignment import ALIGNS, FIXED_ALPHA, attention_plan, plan_entropy, uniform_plan
from .sinkhorn import compute_dtype, cosine, log_sinkhorn, sinkhorn_ot_distance, sinkhorn_plan

__all__ = [
    "ALIGNS",
    "MatchingStats",
    "SolverSettings",
    "alignment_plan",
    "dual_scores",
    "dual_scores_with_stats",
    "fgw_plan",
    "graph_matching_plan",
    "graph_matching_plan_with_stats",
    "plan_logits_similarity",
    "sinkhorn_ot_distance",  # re-exported from sinkhorn.py, where they live
    "sinkhorn_plan",
]


@dataclass(frozen=True)
class SolverSettings:
    """Algorithm 1's settings: the objective (alpha, lam) and when its iterations stop (see :func:`fgw_plan`)."""

    alpha: float = 0.2  # weight of the edge (Gromov) term; 0 = node matching only (PLOT), 1 = edges only
    lam: float = 0.1  # entropic regularisation (kernel exp(-C / lam)); PLOT's eps
    outer_iters: int = 10  # cap on fixed-point (outer) iterations
    inner_iters: int = 100  # cap on Sinkhorn iterations per outer iteration
    tol: float = 1e-2  # Sinkhorn stops when the mean change of the scaling vector a is below this (PLOT's rule)
    outer_tol: float = 1e-4  # outer loop stops when the plan moved less than this in L1 (<= 0: run all)
    check_every: int = 5  # Sinkhorn iterations between convergence checks (each is one host-device sync)
    align: str = "graph"  # the plan: graph (fused, alpha), node (alpha 0), edge (alpha 1), attn, uniform (alignment.py)

    def __post_init__(self) -> None:
        if self.align not in ALIGNS:
            raise ValueError(f"align must be one of {', '.join(ALIGNS)}, got {self.align!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not self.lam > 0:
            raise ValueError(f"lam must be positive, got {self.lam}")


@dataclass(frozen=True)
class MatchingStats:
    """Iteration counts of one plan computation, and the plans' mean entropy, for logging."""

    outer_iters: int  # fixed-point (outer) iterations run
    inner_iters: int  # Sinkhorn iterations run, summed over the outer iterations
    converged: bool  # the outer stopping rule was met by every instance before the cap
    entropy: float = float("nan")  # mean of alignment.plan_entropy over the plans (1 = uniform); nan: not measured
    plans: int = 0  # how many (image, class) plans the entropy averages

    @staticmethod
    def merge(stats: list[MatchingStats]) -> MatchingStats:
        """Combine the stats of independent solves (e.g. chunks of classes): worst case of each iteration count,
        the entropy averaged over all plans."""
        plans = sum(s.plans for s in stats)
        entropy = sum(s.entropy * s.plans for s in stats if s.plans) / plans if plans else float("nan")
        return MatchingStats(
            outer_iters=max(s.outer_iters for s in stats),
            inner_iters=max(s.inner_iters for s in stats),
            converged=all(s.converged for s in stats),
            entropy=entropy,
            plans=plans,
        )


@torch.no_grad()
def fgw_plan(
    C_wd: Tensor,
    C_z: Tensor,
    C_w: Tensor,
    solver: SolverSettings = SolverSettings(),
) -> tuple[Tensor, MatchingStats]:
    """Entropic fused Gromov-Wasserstein plan from cost matrices (Algorithm 1), without gradient.

    T = p q^T; repeat: C_GWD = C_zw - 2 C_z T C_w^T; C = alpha C_GWD + (1 - alpha) C_WD;
    T = Sinkhorn(p, q, exp(-C / lam)), with C_zw = (C_z^2) p 1_M^T + 1_N ((C_w^2) q)^T.

    Leading dimensions broadcast: e.g. C_wd (B, K, N, M), C_z (B, 1, N, N), C_w (1, K, M, M).

    Stopping: the outer loop stops when, for every instance, the plan moved less than ``outer_tol`` in
    L1 norm (sum_ij |T_ij - T'_ij|, T has total mass 1) over one outer iteration, or after
    ``outer_iters`` iterations (one host-device sync per outer iteration). Each Sinkhorn solve starts
    from b = 1 and stops by PLOT's rule: mean |a - a'| < ``tol`` for every instance, checked every
    ``check_every`` iterations, or after ``inner_iters``. With alpha = 0 the cost does not depend on T,
    so a single outer iteration is run (PLOT). Defaults: alpha 0.2, lam 0.1 (PLOT's eps), inner
    iterations and tol as PLOT (<= 100, 1e-2). Why 10 outer iterations: a plan step of L1 size
    outer_tol moves every score s = <T, cos> by at most outer_tol, and at the defaults the fixed point
    is reached in 3-4 iterations on synthetic CLIP-like features (cosines 0.4-0.7; scores within 1e-6
    of the fully converged ones), so 10 is a cap with headroom. More iterations are needed for alpha
    near 1 with small lam (hundreds to reach 1e-13 in float64 at alpha = 1, lam = 0.05); the returned
    ``stats.converged`` says whether the cap was hit.

    Args:
        C_wd: node cost 1 - cos(Z, W), shape (..., N, M).
        C_z: image-graph edge weights cos(Z, Z), shape (..., N, N) (symmetric).
        C_w: prompt-graph edge weights cos(W, W), shape (..., M, M) (symmetric).
        solver: alpha, lam, the iteration caps and stopping rules (:class:`SolverSettings`).

    Returns:
        T of shape (..., N, M) (broadcast leading dims), float32 (float64 if any input is float64),
        without gradient; and the iteration counts as :class:`MatchingStats`.
    """
    alpha, lam, tol, check_every = solver.alpha, solver.lam, solver.tol, solver.check_every
    with torch.autocast(device_type=C_wd.device.type, enabled=False):
        dtype = compute_dtype(C_wd, C_z, C_w)
        C_wd, C_z, C_w = (x.detach().to(dtype) for x in (C_wd, C_z, C_w))
        batch = torch.broadcast_shapes(C_wd.shape[:-2], C_z.shape[:-2], C_w.shape[:-2])
        N, M = C_wd.shape[-2:]
        C_wd = C_wd.expand(batch + (N, M))  # (..., N, M)
        if alpha == 0.0:
            T, n_inner = log_sinkhorn(-C_wd / lam, solver.inner_iters, tol, check_every)
            return T, MatchingStats(outer_iters=1, inner_iters=n_inner, converged=True)

        # square-loss constant term, p and q uniform: (C_z^2) p = row means of C_z^2
        C_zw = (C_z**2).mean(-1).unsqueeze(-1) + (C_w**2).mean(-1).unsqueeze(-2)  # (..., N, M)
        node = (1.0 - alpha) * C_wd  # (..., N, M)
        T = torch.full(batch + (N, M), 1.0 / (N * M), dtype=dtype, device=C_wd.device)  # p q^T
        n_outer, n_inner, converged = 0, 0, False
        while n_outer < solver.outer_iters:
            n_outer += 1
            CT = torch.einsum("...nk,...km->...nm", C_z, T)  # (..., N, M), C_z is not expanded per class
            C_gwd = C_zw - 2.0 * torch.einsum("...nl,...ml->...nm", CT, C_w)  # (..., N, M)
            T_prev = T
            T, n = log_sinkhorn((alpha * C_gwd + node) / -lam, solver.inner_iters, tol, check_every)
            n_inner += n
            if solver.outer_tol > 0:
                change = (T - T_prev).abs().sum((-2, -1))  # (...,)
                if bool((change < solver.outer_tol).all()):
                    converged = True
                    break
    return T, MatchingStats(outer_iters=n_outer, inner_iters=n_inner, converged=converged)


def graph_matching_plan(
    Z: Tensor,
    W: Tensor,
    solver: SolverSettings = SolverSettings(),
) -> Tensor:
    """Graph-matching plan between local image features and prompt features (Algorithm 1), or the plan of
    another ``solver.align`` (:func:`alignment_plan`).

    Args:
        Z: L2-normalised local image features, shape (..., N, d).
        W: L2-normalised prompt features of a class, shape (..., M, d); leading dims broadcast with
            Z's, e.g. Z (B, 1, N, d) and W (1, K, M, d).
        solver: alpha, lam, iteration caps and stopping rules (:class:`SolverSettings`).

    Returns:
        T of shape (..., N, M), float32 (float64 for float64 inputs), without gradient
        (:func:`graph_matching_plan_with_stats` also gives the iteration counts).
    """
    return graph_matching_plan_with_stats(Z, W, solver)[0]


def graph_matching_plan_with_stats(
    Z: Tensor, W: Tensor, solver: SolverSettings = SolverSettings()
) -> tuple[Tensor, MatchingStats]:
    """:func:`graph_matching_plan` and the solver's iteration counts."""
    with torch.no_grad(), torch.autocast(device_type=Z.device.type, enabled=False):
        dtype = compute_dtype(Z, W)
        Z, W = Z.detach().to(dtype), W.detach().to(dtype)
        T, stats = alignment_plan(cosine(Z, W), cosine(Z, Z), cosine(W, W), solver)  # (N, M), (N, N), (M, M)
    return T, stats


@torch.no_grad()
def alignment_plan(
    sim: Tensor, C_z: Tensor | None, C_w: Tensor | None, solver: SolverSettings = SolverSettings()
) -> tuple[Tensor, MatchingStats]:
    """The plan ``solver.align`` asks for (:mod:`dualpt_cli.model.alignment`), from the similarities, without gradient.

    graph runs :func:`fgw_plan` at ``solver.alpha``; node and edge run it at alpha 0 and 1 (the same code, so
    ``align="node"`` gives exactly the plan of ``align="graph", alpha=0``); attn and uniform need no edge
    weights (``C_z``, ``C_w`` may be None) and no iterations.

    Args:
        sim: cos(Z, W), shape (..., N, M) (detached here).
        C_z: cos(Z, Z), shape (..., N, N), or None for attn and uniform.
        C_w: cos(W, W), shape (..., M, M), or None for attn and uniform.
        solver: the settings, ``align`` among them.

    Returns:
        T of shape (..., N, M) (broadcast leading dims), float32 (float64 for float64 inputs), and the stats
        (``entropy`` not measured: see :func:`dual_scores`).
    """
    align = solver.align
    if align in ("attn", "uniform"):
        with torch.autocast(device_type=sim.device.type, enabled=False):
            sim = sim.detach().to(compute_dtype(sim))
            T = attention_plan(sim, solver.lam) if align == "attn" else uniform_plan(sim)
        return T, MatchingStats(outer_iters=0, inner_iters=0, converged=True)
    if align in FIXED_ALPHA:
        solver = replace(solver, alpha=FIXED_ALPHA[align])
    if C_z is None or C_w is None:
        raise ValueError(f"align={align!r} needs the edge weights C_z and C_w")
    return fgw_plan(1.0 - sim.detach(), C_z, C_w, solver)


def plan_logits_similarity(T: Tensor, Z: Tensor, W: Tensor) -> Tensor:
    """Plan-weighted similarity s = sum_ij T_ij cos(z_i, w_j) (paper Eq. 8, before exp(logit_scale)).

    Gradients flow into Z and W; T is treated as a constant (detached).

    Args:
        T: plan, shape (..., N, M).
        Z: L2-normalised local image features, shape (..., N, d).
        W: L2-normalised prompt features, shape (..., M, d); leading dims broadcast with Z's and T's.

    Returns:
        s of shape (...,).
    """
    return (T.detach() * cosine(Z, W)).sum((-2, -1))


def dual_scores(
    Z: Tensor,
    W: Tensor,
    solver: SolverSettings = SolverSettings(),
    *,
    chunk: int | None = None,
) -> Tensor:
    """Class scores s_bk = sum_ij T_ij cos(z_bi, w_kj) for every image and class (paper Eq. 8), with the plan
    of ``solver.align`` (:func:`alignment_plan`; graph matching by default).

    The similarity tensor (B, K, N, M) is computed once and serves both as the node cost
    C_WD = 1 - sim of the (gradient-free) plan and as the differentiable score. The logits are
    ``exp(logit_scale) * s``. Memory: each (B, K, N, M) float32 tensor is 4 B K N M bytes (25 MB for
    B=32, K=1000, N=49, M=4) and the solver holds a handful of them at once, plus the plan kept for
    backward; for large K (thousands of classes, or large N such as ViT patch grids) pass ``chunk``
    to solve ``chunk`` classes at a time. Chunking does not change the result beyond the per-chunk
    early stop.

    Args:
        Z: L2-normalised local image features, shape (B, N, d).
        W: L2-normalised prompt features, shape (K, M, d).
        solver: alpha, lam, iteration caps and stopping rules (:class:`SolverSettings`).
        chunk: number of classes per solve (None: all at once).

    Returns:
        s of shape (B, K), differentiable in Z and W; float32 unless inputs are float64
        (:func:`dual_scores_with_stats` also gives the solver's statistics).
    """
    return _dual_scores(Z, W, solver, chunk, with_stats=False)[0]


def dual_scores_with_stats(
    Z: Tensor, W: Tensor, solver: SolverSettings = SolverSettings(), *, chunk: int | None = None
) -> tuple[Tensor, MatchingStats]:
    """:func:`dual_scores` and the iteration counts (worst case over chunks) and the plans' mean normalised
    entropy (:func:`alignment.plan_entropy`, 1 = uniform)."""
    return _dual_scores(Z, W, solver, chunk, with_stats=True)


def _dual_scores(
    Z: Tensor, W: Tensor, solver: SolverSettings, chunk: int | None, with_stats: bool
) -> tuple[Tensor, MatchingStats]:
    """:func:`dual_scores`; the plans' entropy is measured only ``with_stats``."""
    K = W.shape[0]
    chunk = K if chunk is None else max(1, chunk)
    edges = solver.align not in ("attn", "uniform")  # the plan needs the graphs' edge weights
    dtype = compute_dtype(Z, W)
    C_z = C_w = None
    if edges:
        with torch.no_grad(), torch.autocast(device_type=Z.device.type, enabled=False):
            Zf = Z.detach().to(dtype)
            C_z = cosine(Zf, Zf).unsqueeze(1)  # (B, 1, N, N)
    scores, stats = [], []
    for start in range(0, K, chunk):
        Wc = W[start : start + chunk]  # (k, M, d)
        sim = torch.einsum("bnd,kmd->bknm", Z, Wc)  # (B, k, N, M), under the caller's autocast
        with torch.no_grad(), torch.autocast(device_type=Z.device.type, enabled=False):
            if edges:
                Wf = Wc.detach().to(dtype)
                C_w = cosine(Wf, Wf).unsqueeze(0)  # (1, k, M, M)
            T, st = alignment_plan(sim, C_z, C_w, solver)
            if with_stats:  # from the plan already there: one pass over it
                st = replace(st, entropy=float(plan_entropy(T).mean()), plans=T[..., 0, 0].numel())
        scores.append((T * sim).sum((-2, -1)))  # (B, k)
        stats.append(st)
    s = torch.cat(scores, dim=1)  # (B, K)
    return s, MatchingStats.merge(stats)
