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


# ---------------------------------------------------------------------------------------------------------
# CoOp's LP-CLIP and jusiro/CLAP as published, against computations written out here


def _sklearn_objective(x, y, K, C):
    """scikit-learn's multinomial L2 logistic regression objective and gradient, in numpy (the reference)."""
    import numpy as np

    n, d = x.shape
    onehot = np.eye(K)[y]

    def f(theta):
        W, b = theta[: K * d].reshape(K, d), theta[K * d :]
        logits = x @ W.T + b
        logits = logits - logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        loss = -np.sum(onehot * np.log(p)) + 0.5 * np.sum(W * W) / C
        g = p - onehot  # (n, K)
        return loss, np.concatenate([(g.T @ x + W / C).ravel(), g.sum(0)])

    return f


def _reference_fit(x, y, K, C):
    import numpy as np
    from scipy.optimize import minimize

    x64 = x.double().numpy()
    res = minimize(_sklearn_objective(x64, y.numpy(), K, C), np.zeros(K * x.shape[1] + K), jac=True,
                   method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-15})  # fmt: skip
    d = x.shape[1]
    return torch.from_numpy(res.x[: K * d].reshape(K, d)).float(), torch.from_numpy(res.x[K * d :]).float()


@pytest.mark.parametrize("C", [0.1, 1.0, 10.0])
def test_lpclip_fit_is_l2_logistic_regression_with_bias(C):
    from dualpt_cli.model.lpclip import fit_logistic

    z, labels, _ = _blobs(K=3, d=8, per_class=5, seed=3)
    z = 3.0 * z + 0.5  # raw features: not unit norm, not centred
    W, b = _reference_fit(z, labels, 3, C)
    fitted = fit_logistic(z, labels, 3, C)
    assert_close(fitted.weights, W, rtol=1e-3, atol=1e-3)
    assert_close(fitted.bias, b, rtol=1e-3, atol=1e-3)
    assert_close(fitted.logits(z), z @ W.T + b, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_lpclip_searches_c_as_coops_script():
    """CoOp's lpclip search written out: the grid, then 8 rounds keeping the better end of [left, right]."""
    import math

    from dualpt_cli.model.lpclip import C_GRID, search_lpclip

    gen = torch.Generator().manual_seed(0)
    z, labels, _ = _blobs(K=3, d=3, per_class=10, seed=1)
    z = z + 0.6 * torch.randn(z.shape, generator=gen)  # overlapping classes in 3-d: C matters, finite optimum
    val_z, val_y = z[1::2], labels[1::2]
    train_z, train_y = z[::2], labels[::2]

    def acc(C):
        W, b = _reference_fit(train_z, train_y, 3, C)
        return float(((val_z @ W.T + b).argmax(-1) == val_y).float().mean())

    accs = [acc(C) for C in C_GRID]
    peak = C_GRID[accs.index(max(accs))]
    left, right, want = 0.1 * peak, 10 * peak, []
    for _ in range(8):
        a_left, a_right = acc(left), acc(right)
        want += [left, right]
        mid = 10 ** (0.5 * (math.log10(left) + math.log10(right)))
        chosen = right if a_left < a_right else left
        left, right = (mid, right) if a_left < a_right else (left, mid)
    result = search_lpclip(train_z, train_y, val_z, val_y, 3)
    assert [c for c, _ in result.tried] == pytest.approx([*C_GRID, *want], rel=1e-9)
    assert result.model.C == pytest.approx(chosen, rel=1e-9)


def test_clap_training_equals_the_published_loop():
    """jusiro/CLAP's trainer written out: start at the anchors, per epoch a shuffle of every view and
    Dassl's number of batches, CE + mean_k lambda_k ||w_k - t_k||^2, SGD momentum 0.9, Dassl's schedule."""
    from dualpt_cli.model.linear_probe import fit_clap

    z, labels, text = _blobs(K=3, d=8, per_class=10, seed=2)
    anchors = 4.0 * text  # un-normalised, as CLAP's text features
    lam = torch.tensor([0.2, 0.5, 0.9])
    n_images, batch, epochs, lr = 12, 5, 6, 0.1  # 30 rows = views of 12 images: 2 batches of 5 per epoch
    w = anchors.clone().requires_grad_(True)
    opt = torch.optim.SGD([w], lr=lr, momentum=0.9)
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(probe, T_max=epochs)
    gen = torch.Generator().manual_seed(7)
    for epoch in range(epochs):
        opt.param_groups[0]["lr"] = 1e-5 if epoch == 0 else cosine.get_last_lr()[0]
        if epoch > 0:
            probe.step()
            cosine.step()
        order = torch.randperm(len(z), generator=gen)
        for step in range(n_images // batch):
            idx = order[step * batch : (step + 1) * batch]
            logits = SCALE * F.normalize(z[idx], dim=-1) @ F.normalize(w, dim=-1).T
            loss = F.cross_entropy(logits, labels[idx]) + (lam * (w - anchors).pow(2).sum(-1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    got = fit_clap(z, labels, anchors, SCALE, lam, n_images, seed=7, epochs=epochs, batch_size=batch, lr=lr)
    assert_close(got.weights, w.detach(), rtol=1e-5, atol=1e-6)
    assert (got.weights - anchors).abs().max() > 1e-3  # it moved
    one = fit_clap(z, labels, anchors, SCALE, lam, 3, seed=7, epochs=1, batch_size=batch, lr=lr)
    assert len(one.losses) == 1  # fewer images than a batch: one batch per epoch
