"""The final classifier (DUAL-PT + zero-shot prior), the guard, and the recipe's training data."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.clip.features import encode_views, model_key
from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.model.head import (
    HeldOut,
    Prototypes,
    auto_val_shots,
    blend_logits,
    choose,
    collapsed,
    prior_features,
)
from dualpt_cli.predict.classifier import Classifier
from dualpt_cli.promptfile.io import load_prompt_file
from dualpt_cli.train.config import RECIPES, TrainConfig
from dualpt_cli.train.registry import resolve_recipe
from imagegen import make_image_folder

runner = CliRunner()


def _features(K: int = 3, d: int = 8, per_class: int = 4, seed: int = 0):
    """Class prototypes (K, d), global features near them (V, d) and labels (V,)."""
    gen = torch.Generator().manual_seed(seed)
    protos = F.normalize(torch.randn(K, d, generator=gen), dim=-1)
    labels = torch.arange(K).repeat_interleave(per_class)
    z = protos[labels] + 0.05 * torch.randn(len(labels), d, generator=gen)
    return protos, z, labels


def test_guard_keeps_zero_shot_when_training_fails():
    names, z, labels = _features()
    wrong = torch.zeros(len(labels), 3)
    wrong[torch.arange(len(labels)), (labels + 1) % 3] = 50.0  # the trained prompts always pick the next class
    d = choose(HeldOut(wrong, z, labels), Prototypes(names, names, False, 20.0), default_weight=2.0, is_collapsed=False)
    assert d.classifier == "zero-shot" and d.dual_weight == 0.0 and d.prior_weight == 1.0 and d.prior == "names"
    assert d.val_acc["zero-shot"] == 1.0 and d.val_acc["trained+prior2"] == 0.0
    assert set(d.val_acc) == {"trained+prior2", "zero-shot"}  # few held-out images: no weight is chosen
    assert d.gain == 0.0 and d.kept_acc == 1.0


def test_guard_prefers_descriptions_when_they_win():
    names, z, labels = _features()
    prior = names.roll(1, dims=0)  # names point at the wrong class; the descriptions are right
    z = prior[labels] + 0.01
    flat = torch.zeros(len(labels), 3)  # training learned nothing
    held_out, protos = HeldOut(flat, z, labels), Prototypes(names, prior, True, 20.0)
    d = choose(held_out, protos, default_weight=2.0, is_collapsed=False)
    # a trained blend with the prior also scores 100%: the trained classifier wins ties
    assert d.classifier == "trained" and d.prior_weight > 0 and d.prior == "descriptions"
    d = choose(held_out, protos, default_weight=2.0, is_collapsed=True)
    assert d.classifier == "descriptions" and d.dual_weight == 0.0 and d.collapsed


def test_guard_keeps_trained_blend_when_it_is_better():
    names, z, labels = _features()
    right = torch.zeros(len(labels), 3)
    right[torch.arange(len(labels)), labels] = 50.0
    bad_names = names.roll(1, dims=0)  # zero-shot is wrong everywhere
    protos = Prototypes(bad_names, bad_names, False, 20.0)
    d = choose(HeldOut(right, z, labels), protos, default_weight=2.0, is_collapsed=False, choose_weight=True)
    assert {"trained+prior0", "trained+prior4"} <= set(d.val_acc)
    assert d.classifier == "trained" and d.dual_weight == 1.0 and d.val_acc["zero-shot"] == 0.0
    assert d.kept_acc == 1.0 and d.gain == 1.0
    assert d.prior_weight == 2.0  # all blends tie at 100%: the one closest to the default is kept


def test_guard_without_held_out_images():
    names, _, _ = _features()
    d = choose(None, Prototypes(names, names, True, 20.0), default_weight=2.0, is_collapsed=False)
    assert (d.classifier, d.dual_weight, d.prior_weight, d.gain) == ("trained", 1.0, 2.0, None)
    d = choose(None, Prototypes(names, names, False, 20.0), default_weight=2.0, is_collapsed=True)
    empty = HeldOut(torch.zeros(0, 3), torch.zeros(0, 8), torch.zeros(0, dtype=torch.long))  # none held out
    assert choose(empty, Prototypes(names, names, False, 20.0), default_weight=2.0, is_collapsed=True) == d
    assert (d.classifier, d.dual_weight, d.prior_weight) == ("zero-shot", 0.0, 1.0)


def test_collapse_and_auto_val_rules():
    assert collapsed(math.log(10) * 0.999, 0.1, 10) and collapsed(2.31, 0.12, 10)
    assert not collapsed(1.5, 0.1, 10) and not collapsed(2.3, 0.4, 10)
    assert [auto_val_shots(s, 100) for s in (1, 2, 3, 4, 8, 16, None)] == [0, 0, 0, 1, 2, 4, 0]
    assert auto_val_shots(8, 8) == 2 and auto_val_shots(8, 4) == 1 and auto_val_shots(50, 4) == 1
    assert auto_val_shots(4, 3) == 0  # never more than a quarter of the smallest class


def test_blend_and_prior_features():
    names, z, _ = _features()
    desc = F.normalize(torch.randn(3, 8), dim=-1)
    has = torch.tensor([True, False, True])
    prior = prior_features(names, desc, has)
    assert_close(prior[1], names[1]) and assert_close(prior[0], desc[0])
    dual = torch.randn(len(z), 3)
    expected = dual + 2.0 * 20.0 * F.normalize(z, dim=-1) @ prior.T
    assert_close(blend_logits(dual, z, prior, 20.0, 1.0, 2.0), expected)
    assert_close(blend_logits(None, z, prior, 20.0, 0.0, 1.0), 20.0 * F.normalize(z, dim=-1) @ prior.T)
    with pytest.raises(ValueError, match="dual_weight"):  # a part that is weighted must be given
        blend_logits(None, z, prior, 20.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="prior_weight"):
        blend_logits(dual, z, None, 20.0, 1.0, 1.0)
    assert_close(blend_logits(None, z, prior, 20.0, 0.0, 0.0), torch.zeros(len(z), 3))  # (B, K), not the number 0
    with pytest.raises(ValueError, match="both weights"):
        blend_logits(None, z, None, 20.0, 0.0, 0.0)


def test_description_ensemble_scores_the_mean_of_descriptor_scores():
    """Menon & Vondrick score a class by the mean of its descriptors' cosine scores, which can rank classes
    otherwise than the cosine with the renormalised mean feature when a class's phrases disagree."""
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(5, 8, generator=gen)
    sets = [F.normalize(torch.randn(e, 8, generator=gen), dim=-1) for e in (1, 3, 2)]
    names = torch.randn(3, 8, generator=gen)
    prior = prior_features(names, torch.stack([h.mean(0) for h in sets]), torch.tensor([True, True, True]))
    want = torch.stack([(20.0 * F.normalize(z, dim=-1) @ h.T).mean(-1) for h in sets], dim=-1)  # (5, 3)
    assert_close(blend_logits(None, z, prior, 20.0, 0.0, 1.0), want)

    x = torch.tensor([[1.0, 0.0, 0.0]])  # one image; class 0's phrases disagree, class 1's one phrase is lukewarm
    a = torch.tensor([[1.0, 0.0, 0.0], [-0.2, 0.96**0.5, 0.0]])
    b = torch.tensor([[0.5, 0.0, 0.75**0.5]])
    prior = prior_features(torch.eye(3)[:2], torch.stack([a.mean(0), b.mean(0)]), torch.tensor([True, True]))
    assert blend_logits(None, x, prior, 1.0, 0.0, 1.0).argmax(-1).item() == 1  # 0.4 < 0.5
    renormalised = F.normalize(torch.stack([a.mean(0), b.mean(0)]), dim=-1)
    assert (x @ renormalised.T).argmax(-1).item() == 0  # 0.63 > 0.5: the old ensemble's answer


def test_recipes_resolve():
    paper = resolve_recipe(TrainConfig(images=".", recipe="paper"))
    assert (paper.n_ctx, paper.ctx_init, paper.crop_scale, paper.prompt_text) == (16, "", 0.08, "name")
    assert (paper.prior_weight, paper.guard, paper.val_shots) == (0.0, False, 0)
    default = resolve_recipe(TrainConfig(images="."))
    assert (default.val_shots, default.guard, default.head, default.prior_weight) == (0, False, "residual", 1.0)
    assert paper.head == "none" and default.ctx_init == "a photo of a"
    explicit = resolve_recipe(TrainConfig(images=".", recipe="paper", n_ctx=8, guard=True))
    assert explicit.n_ctx == 8 and explicit.guard  # an option given explicitly wins over the recipe
    assert set(RECIPES["paper"]) >= set(RECIPES["default"])


def test_seed_changes_the_crops(tiny_rn, tmp_path):
    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision="fp32")
    paths = sorted(make_image_folder(tmp_path / "img", classes=["red"], per_class=2).rglob("*.png"))
    one = encode_views(bb, paths, [0, 1], tmp_path / "cache", aug_seed=1, aug_scale=(0.5, 1.0))
    two = encode_views(bb, paths, [0, 1], tmp_path / "cache", aug_seed=2, aug_scale=(0.5, 1.0))
    again = encode_views(bb, paths, [0, 1], None, aug_seed=1, aug_scale=(0.5, 1.0))
    assert model_key(bb, (0.5, 1.0), 1) != model_key(bb, (0.5, 1.0), 2)
    assert not torch.allclose(one.global_, two.global_)  # other seed, other crops
    assert_close(one.global_, again.global_)  # same seed, same crops (and the cache holds them per seed)


def _train(images, model, *extra):
    return runner.invoke(
        app,
        [
            "train",
            str(images),
            "--model",
            model,
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--aug-views",
            "2",
            "--json",
            *extra,
        ],
    )


def test_train_made_to_fail_keeps_zero_shot(tiny_rn, tmp_path, monkeypatch):
    """A run the guard sees as collapsed saves zero-shot CLIP; predict then gives zero-shot's logits exactly."""
    import dualpt_cli.train.keep as keep_mod

    monkeypatch.setattr(keep_mod, "collapsed", lambda *a: True)
    images = make_image_folder(tmp_path / "images", per_class=5)
    result = _train(images, tiny_rn, "--shots", "4", "--guard", "--head", "none", "--val-shots", "1")
    assert result.exit_code == 0, result.output
    guard = json.loads(result.stdout[result.stdout.index("{") :])["guard"]
    assert guard["collapsed"] and guard["classifier"] == "zero-shot" and guard["val_images"] == 3
    assert "training did not beat zero-shot" in result.output
    tensors, meta = load_prompt_file(tmp_path / "dualpt-project" / "prompts.safetensors")
    assert meta["dual_weight"] == 0.0 and meta["prior"] == "names"

    clf = Classifier.from_prompt_file(
        tmp_path / "dualpt-project" / "prompts.safetensors", device="cpu", precision="fp32"
    )
    gen = torch.Generator().manual_seed(0)
    size = clf.bb.image_size
    pixels = torch.randn(4, 3, size, size, generator=gen)
    with torch.no_grad():
        z = clf.bb.model.encode_image(pixels)
        text = clf.bb.model.encode_text(clf.bb.tokenize([f"a photo of a {n}." for n in clf.class_names]))
    expected = clf.bb.logit_scale * F.normalize(z, dim=-1) @ F.normalize(text, dim=-1).T
    assert_close(clf.logits(pixels), expected, rtol=1e-4, atol=1e-4)


def test_description_prior_is_stored_and_reproduced(tiny_vit, tmp_path):
    """The descriptions' text features are computed at training time, stored, and used by predict."""
    images = make_image_folder(tmp_path / "images", classes=["red", "green"], per_class=3)
    project = tmp_path / "dualpt-project"
    phrases = {"red": ["a warm colour", "the colour of blood"], "green": ["the colour of grass"]}
    (tmp_path / "classes.txt").write_text("red\ngreen\n")
    assert runner.invoke(app, ["describe", "classes.txt", "--provider", "none"]).exit_code == 0
    doc = json.loads((project / "descriptions.json").read_text())
    for entry in doc["classes"]:  # what an LLM would have answered
        entry["phrases"], entry["status"] = phrases[entry["folder"]], "ok"
    (project / "descriptions.json").write_text(json.dumps(doc))
    result = _train(images, tiny_vit, "--shots", "2", "--no-guard")
    assert result.exit_code == 0, result.output
    tensors, meta = load_prompt_file(project / "prompts.safetensors")
    assert meta["prior"] == "descriptions" and meta["prior_weight"] == 1.0 and meta["dual_weight"] == 1.0
    assert meta["prompt_texts"][meta["class_names"].index("green")][1] == "green, which has the colour of grass."

    bb = load_backbone(ModelSpec(tiny_vit), device="cpu", precision="fp32")
    expected = []
    for name in meta["class_names"]:  # Menon & Vondrick: the mean of "{name}, which has {phrase}." features
        with torch.no_grad():
            t = bb.model.encode_text(bb.tokenize([f"{name}, which has {p}." for p in phrases[name]]))
        expected.append(F.normalize(t, dim=-1).mean(0))  # not renormalised: cos(z, .) is the mean of the scores
    assert_close(tensors["prior_features"], torch.stack(expected), rtol=1e-4, atol=1e-5)
    clf = Classifier.from_prompt_file(project / "prompts.safetensors", device="cpu", precision="fp32")
    assert_close(clf.prior, torch.stack(expected), rtol=1e-4, atol=1e-5)
    assert (clf.dual_weight, clf.prior_weight) == (1.0, 1.0)


@pytest.mark.parametrize("recipe", ["paper", "default"])
def test_recipe_is_recorded(tiny_rn, tmp_path, recipe):
    images = make_image_folder(tmp_path / "images", per_class=3)
    result = _train(images, tiny_rn, "--shots", "2", "--recipe", recipe)
    assert result.exit_code == 0, result.output
    tensors, meta = load_prompt_file(tmp_path / "dualpt-project" / "prompts.safetensors")
    assert meta["recipe"] == recipe
    assert tensors["ctx"].shape[1] == RECIPES[recipe]["n_ctx"]
    if recipe == "paper":
        assert meta["prior_weight"] == 0.0 and "prior_features" not in tensors  # the paper's classifier alone


def test_fresh_views_encode_one_view_per_epoch(tiny_rn, tmp_path):
    """--fresh-views: epoch e trains on view e of every image, so a run of E epochs encodes E views each."""
    from safetensors.torch import load_file

    images = make_image_folder(tmp_path / "images", per_class=2)
    result = _train(images, tiny_rn, "--shots", "2", "--epochs", "3", "--fresh-views")
    assert result.exit_code == 0, result.output
    files = list((tmp_path / "user-cache").rglob("*.safetensors"))
    assert files
    for f in files:
        assert sorted(k for k in load_file(str(f)) if k.startswith("g")) == ["g0", "g1", "g2"]
    assert json.loads((tmp_path / "dualpt-project" / "run_config.json").read_text())["fresh_views"] is True


def test_prompt_file_with_no_classifier_is_refused(tmp_path):
    from dualpt_cli.errors import PromptFileError
    from dualpt_cli.promptfile.io import PROMPT_FORMAT, write_safetensors

    meta = {
        "model": "RN50",
        "pretrained": "",
        "class_names": ["a", "b"],
        "n_prompts": 1,
        "n_ctx": 4,
        "embed_dim": 8,
        "class_specific": False,
        "logit_scale": 20.0,
        "alpha": 0.2,
        "lambda": 0.1,
        "outer_iters": 2,
        "inner_iters": 5,
        "tol": 0.01,
        "dual_weight": 0.0,
        "prior_weight": 0.0,
    }
    write_safetensors(
        tmp_path / "p.safetensors",
        {"ctx": torch.zeros(1, 4, 8), "class_features": torch.zeros(2, 1, 8)},
        PROMPT_FORMAT,
        meta,
    )
    with pytest.raises(PromptFileError, match="weight of 0"):
        load_prompt_file(tmp_path / "p.safetensors")
    write_safetensors(
        tmp_path / "q.safetensors",
        {"ctx": torch.zeros(1, 4, 8), "class_features": torch.zeros(2, 1, 8)},
        PROMPT_FORMAT,
        {**meta, "dual_weight": 1.0, "prior_weight": 2.0},
    )
    with pytest.raises(PromptFileError, match="no prior_features"):
        load_prompt_file(tmp_path / "q.safetensors")
