from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.errors import DataError
from dualpt_cli.model.head import name_features
from dualpt_cli.model.linear_probe import (
    LinearProbeConfig,
    clap_multipliers,
    constraint_penalty,
    fit_linear_probe,
    probe_logits,
)

SCALE = 20.0


def _blobs(K: int = 3, d: int = 16, per_class: int = 6, seed: int = 0):
    """Separable clusters around K random directions, and text prototypes that do not match them."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(K, d, generator=gen), dim=-1)
    labels = torch.arange(K).repeat_interleave(per_class)
    z = centres[labels] + 0.05 * torch.randn(len(labels), d, generator=gen)
    text = F.normalize(torch.randn(K, d, generator=gen), dim=-1)
    return z, labels, text


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
@pytest.mark.parametrize("normalize", [True, False])
def test_fits_separable_data(optimizer, normalize):
    z, labels, text = _blobs()
    zs_acc = float((probe_logits(z, text, SCALE).argmax(-1) == labels).float().mean())
    cfg = LinearProbeConfig(optimizer=optimizer, steps=200 if optimizer == "adam" else 30, normalize_weights=normalize)
    result = fit_linear_probe(z, labels, text, SCALE, cfg)
    assert zs_acc < 1.0  # the random prototypes start wrong ...
    assert result.train_acc == 1.0  # ... and the fit separates the clusters
    assert result.losses[-1] < result.losses[0]
    assert (result.logits(z).argmax(-1) == labels).all()


@pytest.mark.parametrize("normalize", [True, False])
def test_step_zero_is_zero_shot_clip(tiny_rn, normalize):
    """The zero-shot-initialised probe before any step gives exactly CLIP's zero-shot logits."""
    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision="fp32")
    text = name_features(bb, ["red circle", "blue square", "green triangle"])  # (K, d) normalised
    images = torch.randn(4, 3, bb.image_size, bb.image_size, generator=torch.Generator().manual_seed(0))
    z, _ = bb.encode_images(images)
    expected = bb.logit_scale * F.normalize(z, dim=-1) @ text.T  # zero-shot CLIP
    result = fit_linear_probe(
        z, torch.tensor([0, 1, 2, 0]), text, bb.logit_scale, LinearProbeConfig(steps=0, normalize_weights=normalize)
    )
    assert_close(result.logits(z), expected)
    assert_close(result.weights, text)


def test_huge_multipliers_keep_the_zero_shot_weights():
    z, labels, text = _blobs()
    free = fit_linear_probe(z, labels, text, SCALE, LinearProbeConfig(steps=30))
    held = fit_linear_probe(z, labels, text, SCALE, LinearProbeConfig(steps=30), multipliers=torch.full((3,), 1e6))
    assert (free.weights - text).norm() > 0.1  # without the constraint the weights move ...
    assert_close(held.weights, text, atol=1e-4, rtol=0)  # ... with huge multipliers they stay put


def test_clap_constraint_moves_less_than_none():
    z, labels, text = _blobs(seed=3)
    free = fit_linear_probe(z, labels, text, SCALE, LinearProbeConfig(steps=30))
    clap = fit_linear_probe(z, labels, text, SCALE, LinearProbeConfig(steps=30, constraint="clap"))
    assert clap.multipliers is not None and clap.multipliers.shape == (3,)
    assert (clap.weights - text).norm() < (free.weights - text).norm()


def test_clap_multipliers_are_zero_shot_class_accuracy():
    logits = torch.log(torch.tensor([[0.8, 0.2, 0.0 + 1e-12], [0.4, 0.6, 1e-12], [0.1, 0.9, 1e-12]]))
    labels = torch.tensor([0, 0, 1])
    lam = clap_multipliers(logits, labels, 3)
    assert_close(lam, torch.tensor([0.6, 0.9, 1.0]), atol=1e-6, rtol=0)  # (0.8 + 0.4) / 2, 0.9, no images -> 1


def test_constraint_penalty_formula():
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert float(constraint_penalty(w, t, torch.tensor([2.0, 0.5]))) == pytest.approx((2 * 1 + 0.5 * 4) / 2)


def test_deterministic_and_seeded():
    z, labels, text = _blobs()
    a = fit_linear_probe(z, labels, text, SCALE, LinearProbeConfig(steps=10, constraint="clap"))
    b = fit_linear_probe(z, labels, text, SCALE, LinearProbeConfig(steps=10, constraint="clap"))
    assert torch.equal(a.weights, b.weights)
    r1 = fit_linear_probe(z, labels, text, SCALE, LinearProbeConfig(steps=0, init="random", seed=1))
    r2 = fit_linear_probe(z, labels, text, SCALE, LinearProbeConfig(steps=0, init="random", seed=2))
    r1b = fit_linear_probe(z, labels, text, SCALE, LinearProbeConfig(steps=0, init="random", seed=1))
    assert torch.equal(r1.weights, r1b.weights) and not torch.equal(r1.weights, r2.weights)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"optimizer": "sgd"}, "optimizer 'sgd' is unknown"),
        ({"constraint": "l1"}, "constraint 'l1' is unknown"),
        ({"steps": -1}, "steps must be >= 0"),
        ({"lr": 0.0}, "learning rate must be > 0"),
    ],
)
def test_bad_config_is_one_clear_error(kw, message):
    z, labels, text = _blobs()
    with pytest.raises(DataError, match=message):
        fit_linear_probe(z, labels, text, SCALE, LinearProbeConfig(**kw))


def test_shape_mismatch_is_a_clear_error():
    z, labels, text = _blobs()
    with pytest.raises(DataError, match="dimensions"):
        fit_linear_probe(z[:, :8], labels, text, SCALE)
