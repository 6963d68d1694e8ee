"""CoDUAL-PT's conditional prompts (CoCoOp's meta-net) in prompts.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.errors import DataError
from dualpt_cli.model.prompts import ConditionalPromptLearner, MetaNet

NAMES = ["red circle", "golden retriever", "x"]
TEXTS = [
    ["red circle, which has a round shape.", "red circle."],
    ["golden retriever, which has long golden fur.", "golden retriever."],
    ["x, which has y and more words.", "x."],
]


def _learner(spec, **kw):
    bb = load_backbone(ModelSpec(spec), device="cpu", precision="fp32")
    learner = ConditionalPromptLearner(bb, NAMES, n_prompts=2, seed=0, **kw)
    with torch.no_grad():
        learner.ctx.add_(0.3 * torch.randn(learner.ctx.shape, generator=torch.Generator().manual_seed(5)))
        for p in learner.meta_net.parameters():  # big enough that the image token matters
            p.mul_(20.0)
    return learner


def _z(learner, B=3, seed=1):
    return torch.randn(B, learner.bb.embed_dim, generator=torch.Generator().manual_seed(seed))


def test_meta_net_shapes_and_seed():
    net = MetaNet(512, 512, seed=3)
    assert (net.linear1.in_features, net.linear1.out_features, net.linear2.out_features) == (512, 32, 512)
    assert torch.equal(net.linear1.weight, MetaNet(512, 512, seed=3).linear1.weight)
    assert not torch.equal(net.linear1.weight, MetaNet(512, 512, seed=4).linear1.weight)
    assert net(torch.randn(5, 512)).shape == (5, 512)


def test_defaults_are_cocoops(tiny_rn):
    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision="fp32")
    learner = ConditionalPromptLearner(bb, NAMES)
    assert (learner.n_prompts, learner.n_ctx) == (4, 4)
    words = bb.token_embeds(bb.tokenize(["a photo of a"]))[0, 1:5]
    assert_close(learner.ctx[0], words)  # prompt 0 is exactly "a photo of a"


@pytest.mark.parametrize("prefix", [True, False])
def test_zero_meta_net_equals_the_plain_learner(tiny_model, prefix):
    learner = _learner(tiny_model)
    learner.use_prefix_cache = prefix
    with torch.no_grad():
        learner.meta_net.linear2.weight.zero_()
        learner.meta_net.linear2.bias.zero_()
    W = learner()  # (K, M, d), no image
    Wc = learner.forward_conditional(_z(learner))  # (B, K, M, d)
    assert Wc.shape == (3, 3, 2, learner.bb.embed_dim)
    for b in range(3):
        assert_close(Wc[b], W, rtol=1e-5, atol=1e-6)


def test_prompts_change_with_the_image(tiny_rn):
    learner = _learner(tiny_rn)
    z = _z(learner, B=2)
    Wc = learner.forward_conditional(z)
    assert (Wc[0] - Wc[1]).abs().max() > 1e-3
    assert_close(learner.forward_conditional(z[1:])[0], Wc[1], rtol=1e-5, atol=1e-6)  # per image, not per batch
    Wc.sum().backward()
    assert learner.ctx.grad.abs().sum() > 0 and learner.meta_net.linear1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("texts", "chunk"), [(None, 0), (TEXTS, 0), (None, 2), (TEXTS, 2)])
def test_prefix_cache_equals_plain_path(tiny_model, texts, chunk):
    """The shared-prefix path over (B*M) prefixes equals the plain 77-token path, values and gradients."""
    learner = _learner(tiny_model, class_texts=texts)
    z = _z(learner)
    out = {}
    for prefix, truncate in ((False, False), (True, True)):
        learner.use_prefix_cache, learner.truncate, learner.text_chunk = prefix, truncate, chunk
        learner.zero_grad()
        W = learner.forward_conditional(z)
        (W * torch.linspace(-1, 1, W.numel()).reshape(W.shape)).sum().backward()
        out[prefix] = (W.detach(), learner.ctx.grad.clone(), learner.meta_net.linear1.weight.grad.clone())
    for a, b in zip(out[True], out[False]):
        assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_new_classes_after_training(tiny_rn):
    learner = _learner(tiny_rn)
    learner.set_classes(["blue square", "cat", "dog", "bird"])
    W = learner.forward_conditional(_z(learner, B=2))
    assert W.shape == (2, 4, 2, learner.bb.embed_dim)
    assert_close(W.norm(dim=-1), torch.ones(2, 4, 2))


def test_class_specific_is_refused(tiny_rn):
    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision="fp32")
    with pytest.raises(DataError, match="shares its context"):
        ConditionalPromptLearner(bb, NAMES, class_specific=True)


def test_scores_per_image(tiny_rn):
    """Batch-1 training (CoCoOp's recipe) scores an image against its own prompts with the plain matcher."""
    from dualpt_cli.model.matching import dual_scores

    learner = _learner(tiny_rn)
    z = _z(learner, B=2)
    Z = F.normalize(torch.randn(2, learner.bb.num_local, learner.bb.embed_dim), dim=-1)
    W = learner.forward_conditional(z)  # (B, K, M, d)
    s = torch.cat([dual_scores(Z[b : b + 1], W[b]) for b in range(2)])  # (B, K)
    assert s.shape == (2, 3) and torch.isfinite(s).all()


def test_bench_codualpt_runs_on_the_tiny_model(tiny_rn, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_codualpt.py"
    spec = importlib.util.spec_from_file_location("bench_codualpt", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(
        ["--model", tiny_rn, "--classes", "3", "--batches", "2", "--repeats", "1", "--precision", "fp32"]
    )
    assert [r["path"] for r in result["rows"]] == [
        "shared (DUAL-PT)",
        "conditional, prefix cache",
        "conditional, plain",
    ]
    assert all(r["seconds"] > 0 for r in result["rows"]) and "x shared" in capsys.readouterr().out
