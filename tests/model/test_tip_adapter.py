"""Tip-Adapter and Tip-Adapter-F (model/tip_adapter.py): the prompt file a run writes equals the paper's cache
model computed here from the same views (keys, grid search, fine-tuning written out as the repository does),
predict reads it without a flag, new classes score by zero-shot CLIP alone."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.clip.features import encode_views
from dualpt_cli.data.classes import ClassEntry
from dualpt_cli.model.head import name_features
from dualpt_cli.model.tip_adapter import fit_tip_adapter, search_grid
from dualpt_cli.predict.classifier import Classifier
from dualpt_cli.promptfile.io import load_prompt_file
from dualpt_cli.train.loop import TrainConfig, run_training
from dualpt_cli.train.registry import resolve_recipe
from imagegen import make_image_folder

runner = CliRunner()
CLASSES = ["red", "green", "blue"]


@pytest.fixture
def images(tmp_path):
    return make_image_folder(tmp_path / "images", classes=CLASSES, per_class=3)


def _train(images, model, project, method, **kw):
    cfg = TrainConfig(
        images=str(images),
        project=str(project),
        shots=2,
        model=model,
        pretrained="",
        precision="fp32",
        device="cpu",
        method=method,
        **kw,
    )
    return run_training(cfg)


def _shots(clf, images, project, views):
    """(class names in training order, labels, raw global features (n, V, d)) of the run's shots, encoded again."""
    split = json.loads((project / "split.json").read_text())
    order = [c.folder for c in clf.meta.classes]
    paths = [images / p for c in order for p in split["train"][c]]
    labels = torch.tensor([k for k, c in enumerate(order) for _ in split["train"][c]])
    fs = encode_views(clf.bb, paths, list(range(views)), None, aug_seed=1, aug_scale=(0.5, 1.0))
    return [c.name for c in clf.meta.classes], labels, fs.global_.float()


def _reference_search(keys, values, queries, zero_shot):
    """The repository's search_hp, with each shot scored against the cache without its own key."""
    betas = [i * (7 - 0.1) / 200 + 0.1 for i in range(200)]
    alphas = [i * (3 - 0.1) / 20 + 0.1 for i in range(20)]
    labels = values.argmax(-1)
    others = 1.0 - torch.eye(len(keys))  # (n, n): 0 where a query meets its own key
    best_acc, best_beta, best_alpha = 0.0, 0.0, 0.0
    for beta in betas:
        cache = (((-1) * (beta - beta * queries @ keys.T)).exp() * others) @ values  # (n, K)
        for alpha in alphas:
            acc = float(((zero_shot + cache * alpha).argmax(-1) == labels).float().mean())
            if acc > best_acc:
                best_acc, best_beta, best_alpha = acc, beta, alpha
    return best_alpha, best_beta


def test_search_grid_is_the_repositorys():
    betas, alphas = search_grid()
    assert len(betas) == 200 and len(alphas) == 20
    assert betas[0] == pytest.approx(0.1) and betas[-1] == pytest.approx(0.1 + 199 * 6.9 / 200)
    assert alphas[1] == pytest.approx(0.1 + 2.9 / 20)


def test_method_defaults():
    """10 augmented views per shot at crop scale 0.5 (the repository's cache), a given --aug-views kept."""
    tip = resolve_recipe(TrainConfig(images="x", method="tip-adapter"))
    assert (tip.aug_views, tip.crop_scale, tip.head, tip.val_shots) == (10, 0.5, "none", 0)
    assert resolve_recipe(tip) == tip
    assert resolve_recipe(TrainConfig(images="x", method="tip-adapter-f", aug_views=3)).aug_views == 3
    for base in (None, "half"):  # the repository's 20 epochs of -F, also in a base-to-new run
        assert resolve_recipe(TrainConfig(images="x", method="tip-adapter-f", base_classes=base)).epochs == 20


def _reference_fine_tune(keys, values, views, zs, logit_scale, epochs, seed=1):
    """run_tip_adapter_F's loop: the keys as a Linear layer's weight, AdamW (lr 0.001, eps 1e-4), CosineAnnealingLR
    over every step, batch 256, alpha 1.17 and beta 1; epoch e draws one view per shot from (seed, e)."""
    labels = values.argmax(-1)
    adapter = torch.nn.Linear(keys.shape[1], keys.shape[0], bias=False)
    adapter.weight = torch.nn.Parameter(keys.clone())
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=0.001, eps=1e-4)
    steps = math.ceil(len(keys) / 256)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps)
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(keys), generator=gen)
        drawn = torch.randint(views.shape[1], (len(keys),), generator=gen)
        for step in range(steps):
            idx = order[step * 256 : (step + 1) * 256]
            f = F.normalize(views[idx, drawn[idx]], dim=-1)
            cache = ((-1) * (1.0 - 1.0 * adapter(f))).exp() @ values
            loss = F.cross_entropy(logit_scale * f @ zs.T + cache * 1.17, labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return adapter.weight.detach()


def test_cache_search_and_fine_tuning_on_spread_features():
    """On features of many directions and norms (the tiny CLIP maps every image to nearly one): keys are the
    normalised mean of the raw views, the search leaves each shot's own key out, -F is the repository's loop."""
    gen = torch.Generator().manual_seed(0)
    n, V, d, K = 12, 4, 16, 3
    labels = torch.arange(n) % K
    centres = torch.randn(K, d, generator=gen)
    views = (centres[labels][:, None] + 0.8 * torch.randn(n, V, d, generator=gen)) * torch.rand(n, V, 1, generator=gen)
    views = views * (1 + 9 * torch.rand(n, V, 1, generator=gen))  # norms from 0 to 10
    zs = F.normalize(centres + 1.5 * torch.randn(K, d, generator=gen), dim=-1)
    scale = 20.0
    keys = F.normalize(views.mean(dim=1), dim=-1)
    values = F.one_hot(labels, K).float()
    tip = fit_tip_adapter(views, labels, zs, scale, K)
    assert_close(tip.keys, keys)
    assert (tip.alpha, tip.beta) == pytest.approx(_reference_search(keys, values, keys, scale * keys @ zs.T))
    tuned = fit_tip_adapter(views, labels, zs, scale, K, fine_tune_epochs=4, seed=3)
    reference = _reference_fine_tune(keys, values, views, zs, scale, 4, seed=3)
    assert (reference - keys).abs().max() > 1e-4
    assert_close(tuned.keys, reference, rtol=1e-5, atol=1e-6)
    assert (tuned.alpha, tuned.beta) == pytest.approx(_reference_search(reference, values, keys, scale * keys @ zs.T))


def test_tip_adapter_file_is_the_papers_cache_model(images, tiny_rn, tmp_path):
    """Keys = normalised mean of the shots' 10 views, values one-hot, alpha/beta from the grid (leave-one-out),
    logits = zero-shot + alpha exp(-beta (1 - cos)) values; a new class scores by zero-shot CLIP alone."""
    result = _train(images, tiny_rn, tmp_path / "p", "tip-adapter")
    assert result.epochs == 0
    path = tmp_path / "p" / "prompts.safetensors"
    tensors, meta = load_prompt_file(path)
    classes = [ClassEntry(c, c) for c in [*meta["class_names"], "purple"]]  # the training order, then a new class
    clf = Classifier.from_prompt_file(path, device="cpu", precision="fp32", classes=classes)
    names, labels, views = _shots(clf, images, tmp_path / "p", 10)

    keys = F.normalize(views.mean(dim=1), dim=-1)  # build_cache_model: mean over augment epochs, then normalise
    values = F.one_hot(labels, 3).float()
    zs = name_features(clf.bb, names)  # (K, d)
    assert_close(tensors["tip_keys"], keys, rtol=1e-5, atol=1e-6)
    assert torch.equal(tensors["tip_values"], values)
    alpha, beta = _reference_search(keys, values, keys, clf.bb.logit_scale * keys @ zs.T)
    assert (meta["tip_alpha"], meta["tip_beta"]) == pytest.approx((alpha, beta))

    z = torch.randn(5, clf.bb.embed_dim, generator=torch.Generator().manual_seed(0))
    f = F.normalize(z, dim=-1)
    expected = clf.bb.logit_scale * f @ zs.T + alpha * ((-1) * (beta - beta * f @ keys.T)).exp() @ values
    logits = clf.logits_from_features(z, torch.zeros(5, clf.bb.num_local, clf.bb.embed_dim))
    assert_close(logits[:, :3], expected, rtol=1e-4, atol=1e-4)
    purple = clf.bb.logit_scale * f @ name_features(clf.bb, ["purple"]).T  # no shot of it in the cache
    assert_close(logits[:, 3:], purple, rtol=1e-4, atol=1e-4)


def test_tip_adapter_f_fine_tunes_the_keys_as_the_repository(images, tiny_rn, tmp_path):
    """Tip-Adapter-F written out: the keys as a Linear layer's weight, AdamW (lr 0.001, eps 1e-4), cosine over every
    step, batch 256, alpha 1.17 / beta 1; each epoch one view per shot drawn from (seed, epoch)."""
    _train(images, tiny_rn, tmp_path / "p", "tip-adapter-f", epochs=3)
    path = tmp_path / "p" / "prompts.safetensors"
    tensors, meta = load_prompt_file(path)
    assert meta["epochs"] == 3
    clf = Classifier.from_prompt_file(path, device="cpu", precision="fp32")
    names, labels, views = _shots(clf, images, tmp_path / "p", 10)
    keys = F.normalize(views.mean(dim=1), dim=-1)
    values = F.one_hot(labels, 3).float()
    zs = name_features(clf.bb, names)

    tuned = _reference_fine_tune(keys, values, views, zs, clf.bb.logit_scale, 3)
    assert (tuned - keys).abs().max() > 1e-5  # the keys moved
    assert_close(tensors["tip_keys"], tuned, rtol=1e-5, atol=1e-6)
    alpha, beta = _reference_search(tuned, values, keys, clf.bb.logit_scale * keys @ zs.T)
    assert (meta["tip_alpha"], meta["tip_beta"]) == pytest.approx((alpha, beta))


def test_tip_adapter_f_resume_is_refused_in_one_line(images, tiny_rn):
    result = runner.invoke(
        app, ["train", "images", "--method", "tip-adapter-f", "--model", tiny_rn, "--pretrained", "", "--resume"]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--method tip-adapter-f fits in seconds on the cached features" in result.output


def test_a_file_without_its_cache_is_refused(images, tiny_rn, tmp_path):
    from dualpt_cli.errors import PromptFileError
    from dualpt_cli.promptfile.io import read_prompt_file, save_prompt_file

    _train(images, tiny_rn, tmp_path / "p", "tip-adapter")
    tensors, meta = read_prompt_file(tmp_path / "p" / "prompts.safetensors")
    extra = {k: v for k, v in tensors.items() if k not in ("ctx", "class_features", "prior_features", "tip_values")}
    broken = tmp_path / "broken.safetensors"
    save_prompt_file(broken, tensors["ctx"], tensors["class_features"], meta, tensors["prior_features"], extra)
    with pytest.raises(PromptFileError, match="without a consistent cache"):
        Classifier.from_prompt_file(broken, device="cpu", precision="fp32")
