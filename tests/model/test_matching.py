"""Tests for dualpt_cli.model.matching: POT agreement, Algorithm 1 as written, invariants, precision, gradients."""

import numpy as np
import ot
import pytest
import torch
from torch.testing import assert_close

from dualpt_cli.model.matcher import Matcher
from dualpt_cli.model.matching import (
    MatchingStats,
    SolverSettings,
    dual_scores,
    dual_scores_with_stats,
    fgw_plan,
    graph_matching_plan,
    graph_matching_plan_with_stats,
    plan_logits_similarity,
    sinkhorn_ot_distance,
    sinkhorn_plan,
)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """The tensors here are tiny: one intra-op thread avoids thread-pool overhead on busy machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# enough iterations and tight tolerances to reach the fixed point in float64
TIGHT = dict(outer_iters=300, inner_iters=500, tol=1e-12, outer_tol=1e-13, check_every=10)


def features(*shape: int, d: int = 16, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Unit vectors around a shared direction, so cosines spread over about [-0.5, 1] like CLIP's."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(d, generator=g, dtype=torch.float64)
    x = base + 1.5 * torch.randn(*shape, d, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=-1).to(dtype)


def costs(Z: torch.Tensor, W: torch.Tensor):
    """(C_WD, C_z, C_w) for one instance: (N, M), (N, N), (M, M)."""
    return 1 - Z @ W.T, Z @ Z.T, W @ W.T


def algorithm1_reference(Z, W, alpha, lam, outer_iters, inner_iters):
    """Algorithm 1 written plainly for one instance, in the scaling (non-log) domain, fixed iterations."""
    C_wd, C_z, C_w = costs(Z, W)
    N, M = C_wd.shape
    p = torch.full((N, 1), 1 / N, dtype=Z.dtype)
    q = torch.full((M, 1), 1 / M, dtype=Z.dtype)
    C_zw = (C_z**2) @ p @ torch.ones(1, M, dtype=Z.dtype) + torch.ones(N, 1, dtype=Z.dtype) @ ((C_w**2) @ q).T
    T = p @ q.T
    for _ in range(outer_iters):
        C_gwd = C_zw - 2 * C_z @ T @ C_w.T
        C = alpha * C_gwd + (1 - alpha) * C_wd
        K = torch.exp(-C / lam)
        b = torch.ones(M, 1, dtype=Z.dtype)
        for _ in range(inner_iters):
            a = p / (K @ b)
            b = q / (K.T @ a)
        T = torch.diag(a[:, 0]) @ K @ torch.diag(b[:, 0])
    return T


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("N,M", [(5, 1), (5, 4), (49, 1), (49, 4)])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pot_entropic_fgw(seed, N, M, alpha):
    lam = 0.1
    Z, W = features(N, seed=seed), features(M, seed=seed + 100)
    T, stats = graph_matching_plan_with_stats(Z, W, SolverSettings(alpha, lam, **TIGHT))
    assert stats.converged
    C_wd, C_z, C_w = (x.numpy() for x in costs(Z, W))
    T_pot = ot.gromov.entropic_fused_gromov_wasserstein(
        C_wd, C_z, C_w, ot.unif(N), ot.unif(M), "square_loss",
        epsilon=2 * lam / (2 - alpha), alpha=alpha / (2 - alpha),
        max_iter=1000, tol=1e-14, numItermax=10000, stopThr=1e-15,
    )  # fmt: skip
    assert_close(T, torch.from_numpy(T_pot), rtol=0, atol=1e-10)


@pytest.mark.parametrize("alpha", [0.0, 0.2, 1.0])
def test_equals_algorithm1_as_written(alpha):
    Z, W = features(7, seed=3), features(4, seed=4)
    T = graph_matching_plan(Z, W, SolverSettings(alpha, 0.1, outer_iters=4, inner_iters=30, tol=0, outer_tol=0))
    T_ref = algorithm1_reference(Z, W, alpha, 0.1, outer_iters=1 if alpha == 0 else 4, inner_iters=30)
    assert_close(T, T_ref, rtol=1e-12, atol=1e-15)


def test_alpha0_is_plain_sinkhorn():
    Z, W = features(49, seed=5), features(4, seed=6)
    T = graph_matching_plan(Z, W, SolverSettings(0.0, 0.1, **TIGHT))
    C_wd = (1 - Z @ W.T).numpy()
    T_ref = ot.sinkhorn(ot.unif(49), ot.unif(4), C_wd, 0.1, numItermax=10000, stopThr=1e-15)
    assert_close(T, torch.from_numpy(T_ref), rtol=0, atol=1e-12)
    assert_close(sinkhorn_plan(torch.from_numpy(C_wd), 0.1, iters=500, tol=1e-12), T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_marginals(dtype):
    Z, W = features(3, 1, 49, seed=7, dtype=dtype), features(1, 5, 4, seed=8, dtype=dtype)
    tol, eps = (1e-6, 1e-5) if dtype == torch.float32 else (1e-12, 1e-9)
    T = graph_matching_plan(Z, W, SolverSettings(0.2, 0.1, tol=tol, inner_iters=500))
    assert T.shape == (3, 5, 49, 4) and T.dtype == dtype
    assert_close(T.sum(-1), torch.full((3, 5, 49), 1 / 49, dtype=dtype), rtol=eps, atol=0)
    assert_close(T.sum(-2), torch.full((3, 5, 4), 1 / 4, dtype=dtype), rtol=eps, atol=0)


def test_batched_equals_per_instance():
    B, K, N, M = 3, 4, 6, 3
    Z, W = features(B, N, seed=9), features(K, M, seed=10)
    fixed = dict(outer_iters=8, inner_iters=40, tol=0, outer_tol=0)  # same iterations for every call
    T = graph_matching_plan(Z[:, None], W[None], SolverSettings(0.5, 0.1, **fixed))  # (B, K, N, M) by broadcasting
    assert T.shape == (B, K, N, M)
    for b in range(B):
        for k in range(K):
            single = graph_matching_plan(Z[b], W[k], SolverSettings(0.5, 0.1, **fixed))
            assert_close(T[b, k], single, rtol=1e-12, atol=1e-15)


def test_dual_scores_match_plan_and_chunking():
    Z, W = features(3, 10, seed=11), features(5, 4, seed=12)
    s, stats = dual_scores_with_stats(Z, W, SolverSettings(**TIGHT))
    assert s.shape == (3, 5) and isinstance(stats, MatchingStats) and stats.converged
    T = graph_matching_plan(Z[:, None], W[None], SolverSettings(**TIGHT))
    assert_close(s, plan_logits_similarity(T, Z[:, None], W[None]))
    assert_close(dual_scores(Z, W, SolverSettings(**TIGHT), chunk=2), s, rtol=0, atol=1e-12)


def test_fgw_plan_broadcasts_costs():
    Z, W = features(2, 1, 5, seed=13), features(1, 3, 2, seed=14)
    C_wd = 1 - Z @ W.transpose(-1, -2)  # (2, 3, 5, 2)
    T, stats = fgw_plan(C_wd, Z @ Z.transpose(-1, -2), W @ W.transpose(-1, -2))
    assert T.shape == (2, 3, 5, 2) and stats.outer_iters >= 1 and stats.inner_iters >= stats.outer_iters


@pytest.mark.parametrize("lam", [0.01, 0.05])
def test_finite_under_bf16_autocast(lam):
    Z = features(4, 49, d=64, seed=15, dtype=torch.bfloat16)
    W = features(6, 4, d=64, seed=16, dtype=torch.bfloat16).requires_grad_()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        T = graph_matching_plan(Z[:, None], W[None], SolverSettings(0.2, lam))
        s = dual_scores(Z, W, SolverSettings(0.2, lam))
    assert T.dtype == torch.float32 and torch.isfinite(T).all()
    assert_close(T.sum(-2), torch.full((4, 6, 4), 0.25), rtol=1e-5, atol=0)
    assert s.dtype == torch.float32 and torch.isfinite(s).all()
    s.sum().backward()
    assert torch.isfinite(W.grad).all()


def test_small_lambda_finite_float32():
    Z, W = features(2, 49, seed=17, dtype=torch.float32), features(3, 4, seed=18, dtype=torch.float32)
    T = graph_matching_plan(Z[:, None], W[None], SolverSettings(0.5, 0.01))
    assert torch.isfinite(T).all()
    assert_close(T.sum((-2, -1)), torch.ones(2, 3), rtol=1e-3, atol=0)


def test_gradient_flows_to_features_not_plan():
    Z = features(2, 6, seed=19, dtype=torch.float32).requires_grad_()
    W = features(3, 4, seed=20, dtype=torch.float32).requires_grad_()
    T = graph_matching_plan(Z[:, None], W[None])
    assert not T.requires_grad
    dual_scores(Z, W).sum().backward()
    assert torch.isfinite(W.grad).all() and torch.isfinite(Z.grad).all()
    # with T held fixed, d(sum s)/dW_kj = sum_b sum_i T_bkij z_bi
    assert_close(W.grad, torch.einsum("bkij,bid->kjd", T, Z.detach()))


def test_degenerate_sizes():
    Z, W = features(6, seed=21), features(1, seed=22)
    assert_close(graph_matching_plan(Z, W), torch.full((6, 1), 1 / 6, dtype=torch.float64))  # M = 1
    Z, W = features(1, seed=23), features(4, seed=24)
    assert_close(graph_matching_plan(Z, W), torch.full((1, 4), 1 / 4, dtype=torch.float64))  # N = 1


def test_sinkhorn_ot_distance():
    X = features(5, seed=25).requires_grad_()
    Y = features(3, seed=26)
    dist = sinkhorn_ot_distance(X, Y, 0.1, iters=500, tol=1e-12)
    C = (1 - X @ Y.T).detach().numpy()
    assert_close(dist, torch.tensor(ot.sinkhorn2(ot.unif(5), ot.unif(3), C, 0.1, stopThr=1e-15)), atol=1e-12, rtol=0)
    dist.backward()
    assert torch.isfinite(X.grad).all()


@pytest.mark.parametrize("kwargs", [dict(alpha=-0.1), dict(alpha=1.5), dict(lam=0.0)])
def test_rejects_bad_hyperparameters(kwargs):  # when the settings are made, before any solve
    with pytest.raises(ValueError):
        SolverSettings(**kwargs)


def test_pot_mapping_needs_the_factor_two():
    """The naive mapping (epsilon=lam, alpha=alpha) gives a different plan: the factor 2 matters."""
    Z, W = features(8, seed=27), features(4, seed=28)
    T = graph_matching_plan(Z, W, SolverSettings(0.5, 0.1, **TIGHT)).numpy()
    C_wd, C_z, C_w = (x.numpy() for x in costs(Z, W))
    T_naive = ot.gromov.entropic_fused_gromov_wasserstein(
        C_wd, C_z, C_w, ot.unif(8), ot.unif(4), "square_loss", epsilon=0.1, alpha=0.5, max_iter=1000, tol=1e-14
    )
    assert np.abs(T - T_naive).max() > 1e-6


def test_matcher_settings_round_trip_through_meta():
    """A prompt file's metadata gives back the same matcher; chunk is a memory setting, not stored."""
    matcher = Matcher(3.5, SolverSettings(alpha=0.3, lam=0.05, outer_iters=7, inner_iters=50, tol=1e-3), chunk=4)
    meta = matcher.meta()
    assert meta == {
        "logit_scale": 3.5,
        "alpha": 0.3,
        "lambda": 0.05,
        "outer_iters": 7,
        "inner_iters": 50,
        "tol": 1e-3,
        "align": "graph",
    }
    assert Matcher.from_meta(meta, chunk=4) == matcher
    old = {k: v for k, v in meta.items() if k != "align"}  # files from before --align: graph matching
    assert Matcher.from_meta(old, chunk=4) == matcher
    attn = Matcher(3.5, SolverSettings(align="attn"))
    assert Matcher.from_meta(attn.meta()) == attn
    Z, W = torch.randn(2, 6, 8, dtype=torch.float64), torch.nn.functional.normalize(torch.randn(3, 4, 8), dim=-1)
    assert_close(
        matcher.logits(Z, W.double()),
        3.5 * dual_scores(torch.nn.functional.normalize(Z, dim=-1), W.double(), matcher.solver),
    )
