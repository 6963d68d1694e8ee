"""The plan variants of --align (paper Table 2 / Fig. 6d) and the plan entropy logged in training."""

import math

import pytest
import torch
from torch.testing import assert_close

from dualpt_cli.model.alignment import ALIGNS, attention_plan, plan_entropy, uniform_plan
from dualpt_cli.model.matcher import Matcher
from dualpt_cli.model.matching import (
    SolverSettings,
    alignment_plan,
    dual_scores,
    dual_scores_with_stats,
    graph_matching_plan,
)


def unit(*shape: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    """Unit vectors around a shared direction (cosines spread like CLIP's), float64."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(d, generator=g, dtype=torch.float64)
    x = base + 1.5 * torch.randn(*shape, d, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=-1)


Z, W = unit(3, 9, seed=1), unit(5, 4, seed=2)  # 3 images, N = 9; 5 classes, M = 4


def scores(align: str, alpha: float = 0.2, **kw) -> torch.Tensor:
    return dual_scores(Z, W, SolverSettings(alpha=alpha, align=align, **kw))


def test_node_is_exactly_alpha_0_and_edge_exactly_alpha_1():
    node, edge, graph = scores("node"), scores("edge"), scores("graph")
    assert torch.equal(node, scores("graph", alpha=0.0))
    assert torch.equal(edge, scores("graph", alpha=1.0))
    assert torch.equal(node, scores("node", alpha=0.7))  # node and edge ignore --alpha
    assert (node - graph).abs().max() > 1e-6 and (edge - graph).abs().max() > 1e-6
    assert (node - edge).abs().max() > 1e-6
    matcher = Matcher(10.0, SolverSettings(align="edge"))  # the same through the Matcher predict uses
    assert_close(matcher.logits(Z, W), 10.0 * edge, rtol=1e-12, atol=0)  # Matcher re-normalises Z


def test_uniform_is_the_mean_cosine():
    sim = torch.einsum("bnd,kmd->bknm", Z, W)  # (B, K, N, M)
    assert_close(scores("uniform"), sim.mean((-2, -1)), rtol=0, atol=1e-14)
    T = uniform_plan(sim)
    assert T.shape == sim.shape and not T.requires_grad and float(T[0, 0].sum()) == pytest.approx(1.0)


def test_attention_plan_definition_and_properties():
    lam = 0.1
    sim = torch.einsum("bnd,kmd->bknm", Z, W)
    T = attention_plan(sim, lam)
    N, M = sim.shape[-2:]
    want = torch.exp(sim / lam) / torch.exp(sim / lam).sum(-1, keepdim=True) / N  # written out
    assert_close(T, want, rtol=1e-12, atol=0)
    assert_close(T.sum(-1), torch.full(T.shape[:-1], 1 / N, dtype=T.dtype))  # rows: p = 1/N
    assert_close(T.sum((-2, -1)), torch.ones(T.shape[:-2], dtype=T.dtype))  # mass 1, like a plan
    assert (T.sum(-2) - 1 / M).abs().max() > 1e-3  # columns are free: not an OT plan
    assert torch.equal(T.argmax(-1), sim.argmax(-1))  # each local feature attends most to its nearest prompt
    assert_close(scores("attn", lam=lam), (T * sim).sum((-2, -1)))
    sharper = attention_plan(sim, 0.01)
    assert float(plan_entropy(sharper).mean()) < float(plan_entropy(T).mean())


def test_plan_keeps_no_gradient_for_every_align():
    Zg, Wg = Z.clone().requires_grad_(), W.clone().requires_grad_()
    for align in ALIGNS:
        s = dual_scores(Zg, Wg, SolverSettings(align=align))
        (gz, gw) = torch.autograd.grad(s.sum(), (Zg, Wg))
        T = graph_matching_plan(Z[:, None], W[None], SolverSettings(align=align))  # (B, K, N, M)
        assert_close(gz, torch.einsum("bknm,kmd->bnd", T, W))  # d s / d Z with T held fixed
        assert T.grad_fn is None


def test_plan_entropy_normalisation():
    sim = torch.zeros(2, 7, 4, dtype=torch.float64)
    assert_close(plan_entropy(uniform_plan(sim)), torch.ones(2, dtype=torch.float64))
    one_pair = torch.zeros(7, 4, dtype=torch.float64)
    one_pair[3, 1] = 1.0
    assert float(plan_entropy(one_pair)) == 0.0
    hard = torch.zeros(7, 4, dtype=torch.float64)  # each local feature on one prompt
    hard[torch.arange(7), torch.arange(7) % 4] = 1 / 7
    assert float(plan_entropy(hard)) == pytest.approx(math.log(7) / math.log(28))
    assert float(plan_entropy(torch.ones(1, 1))) == 1.0


@pytest.mark.parametrize("chunk", [None, 2])
def test_stats_carry_the_mean_entropy(chunk):
    s, stats = dual_scores_with_stats(Z, W, SolverSettings(align="uniform"), chunk=chunk)
    assert stats.entropy == pytest.approx(1.0, abs=1e-12) and stats.plans == 15
    _, graph = dual_scores_with_stats(Z, W, SolverSettings(), chunk=chunk)
    T = graph_matching_plan(Z[:, None], W[None], SolverSettings())  # (3, 5, 9, 4)
    assert graph.entropy == pytest.approx(float(plan_entropy(T).mean()), abs=1e-5)  # up to the batched early stop
    assert graph.entropy < 0.97  # the plan concentrates where the features say so
    _, sharp = dual_scores_with_stats(Z, W, SolverSettings(lam=0.02), chunk=chunk)
    assert sharp.entropy < graph.entropy


def test_alignment_plan_needs_no_edges_for_attn_and_uniform():
    sim = torch.einsum("bnd,kmd->bknm", Z, W)
    for align in ("attn", "uniform"):
        T, stats = alignment_plan(sim, None, None, SolverSettings(align=align))
        assert T.shape == sim.shape and stats.outer_iters == 0 and stats.converged


def test_rejects_unknown_align():
    with pytest.raises(ValueError, match="align must be one of graph, node, edge, attn, uniform"):
        SolverSettings(align="cross")


def test_bench_alignment_runs(capsys):
    """benchmarks/bench_alignment.py (the entropy-cost measurement) runs end to end on tiny sizes."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_alignment.py"
    spec = importlib.util.spec_from_file_location("bench_alignment", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--batch", "2", "--classes", "3", "--local", "5", "--dim", "8", "--repeats", "1"])
    assert set(results["seconds"]) == {*ALIGNS, "entropy"} and results["entropy_over_graph"] > 0
    assert "x graph" in capsys.readouterr().out


@pytest.mark.parametrize("align", ALIGNS)
def test_every_align_is_finite_under_bf16_autocast(align):
    Zf, Wf = Z.float(), W.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s, stats = dual_scores_with_stats(Zf, Wf, SolverSettings(align=align, lam=0.01))
    assert bool(torch.isfinite(s).all()) and 0.0 < stats.entropy <= 1.0 + 1e-6
    assert_close(s.float(), dual_scores(Zf, Wf, SolverSettings(align=align, lam=0.01)), atol=0.05, rtol=0)


def test_merge_averages_entropy_over_plans():
    from dualpt_cli.model.matching import MatchingStats

    a = MatchingStats(1, 5, True, entropy=0.5, plans=3)
    b = MatchingStats(2, 4, False, entropy=1.0, plans=1)
    merged = MatchingStats.merge([a, b])
    assert (merged.outer_iters, merged.inner_iters, merged.converged, merged.plans) == (2, 5, False, 4)
    assert merged.entropy == pytest.approx(0.625)
    assert math.isnan(MatchingStats.merge([MatchingStats(1, 1, True)]).entropy)
