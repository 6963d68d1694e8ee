"""``dualpt train --method NAME``: every method trains, saves and predicts through the CLI, and each one's
numbers are what its definition says (CoOp step against a written-out reference, CoDUAL-PT's meta-net, the
linear probe's saved classifier, zero-shot CLIP)."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.clip.features import encode_views
from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.data.classes import ClassEntry
from dualpt_cli.errors import DataError
from dualpt_cli.model.head import name_features
from dualpt_cli.model.prompts import PromptLearner
from dualpt_cli.predict.classifier import Classifier
from dualpt_cli.promptfile.io import load_prompt_file
from dualpt_cli.train.config import METHODS
from dualpt_cli.train.loop import Callbacks, TrainConfig, run_training, train_epoch
from dualpt_cli.train.objective import Objective, matcher_for
from dualpt_cli.train.registry import resolve_recipe
from dualpt_cli.train.runs import config_from_file
from imagegen import make_image_folder
from trained import tiny_config

runner = CliRunner()
CLASSES = ["red", "green", "blue"]


@pytest.fixture
def images(tmp_path):
    return make_image_folder(tmp_path / "images", classes=CLASSES, per_class=3)


_cfg = partial(tiny_config, epochs=1)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_saves_and_predicts(method, images, tiny_rn, tmp_path):
    """train --method X writes a prompt file that predict and eval read without a flag."""
    if method == "descriptions":
        (tmp_path / "phrases.json").write_text(json.dumps({c: [f"{c} colour", "a plain square"] for c in CLASSES}))
        (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        done = runner.invoke(app, ["describe", "classes.txt", "--phrases", "phrases.json", "-p", "proj"])
        assert done.exit_code == 0, done.output
    result = runner.invoke(
        app,
        [
            "train",
            "images",
            "--method",
            method,
            "--shots",
            "2",
            "--epochs",
            "1",
            "--model",
            tiny_rn,
            "--pretrained",
            "",
            "--aug-views",
            "2",
            "--precision",
            "fp32",
            "--device",
            "cpu",
            "-p",
            "proj",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["method"] == method
    _, meta = load_prompt_file(tmp_path / "proj" / "prompts.safetensors")
    assert meta["method"] == method
    assert json.loads((tmp_path / "proj" / "run_config.json").read_text())["method"] == method
    saved = resolve_recipe(TrainConfig(**config_from_file(tmp_path / "proj" / "run_config.json")))
    assert saved.method == method  # --config reruns it as it ran
    predicted = runner.invoke(app, ["predict", "images", "-p", "proj", "--json", "--device", "cpu"])
    assert predicted.exit_code == 0, predicted.output
    rows = json.loads(predicted.stdout)
    assert len(rows) == 9 and all(r["error"] is None and r["class"] in CLASSES for r in rows)
    evaluated = runner.invoke(app, ["eval", "images", "-p", "proj", "--json", "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    assert 0.0 <= json.loads(evaluated.stdout)["dualpt"]["top1"] <= 1.0
    runs = runner.invoke(app, ["runs", "-p", "proj", "--json"])
    assert json.loads(runs.stdout)[-1]["method"].split(",")[0] in {
        "DUAL-PT",
        "CoDUAL-PT",
        "CoOp",
        "CoCoOp",
        "PLOT",
        "linear probe",
        "Tip-Adapter",
        "Tip-Adapter-F",
        "zero-shot CLIP",
        "descriptions",
    }
    explained = runner.invoke(app, ["explain", "images/red", "-p", "proj", "--device", "cpu", "--json"])
    if method in ("dualpt", "plot"):
        assert explained.exit_code == 0, explained.output
    else:  # one clear line, no traceback
        assert explained.exit_code != 0 and "Traceback" not in explained.output
        assert f"--method {method}" in explained.output


def test_method_settings(images):
    """What each method fixes, on top of the recipe; applying it twice changes nothing."""
    coop = resolve_recipe(TrainConfig(images="x", method="coop"))
    assert (coop.n_prompts, coop.n_ctx, coop.prompt_text, coop.beta, coop.context) == (1, 16, "name", 0.0, "none")
    paper = resolve_recipe(TrainConfig(images="x", method="coop", recipe="paper"))
    assert (paper.n_prompts, paper.n_ctx) == (1, 64)  # the card's fair CoOp: 64 tokens for 4 x 16
    assert resolve_recipe(coop) == coop
    plot = resolve_recipe(TrainConfig(images="x", method="plot"))
    assert (plot.alpha, plot.beta, plot.context) == (0.0, 0.0, "none")
    co = resolve_recipe(TrainConfig(images="x", method="codualpt", recipe="paper"))
    assert (co.n_ctx, co.ctx_init, co.batch_size, co.epochs) == (4, "a photo of a", 1, 10)
    assert resolve_recipe(TrainConfig(images="x", method="codualpt", epochs=2, batch_size=8)).batch_size == 8
    assert resolve_recipe(TrainConfig(images="x")).batch_size == 32
    with pytest.raises(DataError, match="--method plot uses --alpha 0"):
        resolve_recipe(TrainConfig(images="x", method="plot", alpha=0.5))


def test_coop_step_equals_plain_coop(images, tiny_rn, tmp_path):
    """One coop step is CoOp's: SGD on the context, cross-entropy on logit_scale * cos(z, g(prompt))."""
    cfg = resolve_recipe(
        _cfg(
            images,
            tiny_rn,
            tmp_path / "p",
            method="coop",
            n_prompts=2,
            n_ctx=3,
            ctx_init="",
            batch_size=6,
            lr=0.01,
            weight_decay=0.0,
            momentum=0.0,
        )
    )
    bb = load_backbone(ModelSpec(tiny_rn, ""), device="cpu", precision="fp32")
    paths = sorted(images.glob("*/*.png"))[:6]
    labels = torch.tensor([CLASSES.index(p.parent.name) for p in paths])
    fs = encode_views(bb, paths, [0], None, aug_seed=1, aug_scale=(0.9, 1.0))

    # dualpt's loop, one epoch of one step over the six images
    learner = PromptLearner(bb, CLASSES, cfg.n_prompts, cfg.n_ctx, "", seed=1)
    assert learner.ctx.shape == (1, 6, bb.text_width)  # M x n_ctx = 2 x 3 tokens in one prompt
    start = learner.ctx.detach().clone()
    desc = torch.zeros(3, bb.embed_dim)
    objective = Objective(
        matcher_for(cfg, bb), 0.0, "cosine", desc, torch.zeros(3, dtype=torch.bool), [desc] * 3, global_scores=True
    )
    data = type("D", (), {"train": fs, "train_labels": labels, "crops": None})()
    optimizer = torch.optim.SGD([learner.ctx], lr=cfg.lr)
    record = train_epoch(0, 1, replace(cfg, epochs=1), learner, optimizer, objective, data, Callbacks(), None)

    # CoOp written out: [SOS] ctx "{name}." [EOT] through the text encoder, global feature, CE, one SGD step
    ctx = start.clone().requires_grad_(True)
    tokens = bb.tokenize([" ".join(["X"] * 6) + f" {c}." for c in CLASSES])  # (K, L)
    emb = bb.token_embeds(tokens)  # (K, L, width)
    full = torch.cat([emb[:, :1], ctx[0].expand(3, 6, -1), emb[:, 7:]], dim=1)
    w = F.normalize(bb.encode_text_embeds(full, bb.eot_positions(tokens), truncate=False), dim=-1)  # (K, d)
    z = F.normalize(fs.global_[:, 0].float(), dim=-1)  # (6, d)
    loss = F.cross_entropy(bb.logit_scale * z @ w.T, labels)
    loss.backward()
    assert record["loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
    assert_close(learner.ctx.detach(), start - cfg.lr * ctx.grad, rtol=1e-5, atol=1e-6)


def test_cocoop_step_equals_plain_cocoop(images, tiny_rn, tmp_path):
    """One cocoop step is CoCoOp's (Zhou et al. 2022): 4 context tokens from "a photo of a", each image's token
    pi(z) = Linear(d/16 -> width)(ReLU(Linear(d -> d/16)(z / |z|))) added to every one, CE on
    logit_scale * cos(z_b, g([SOS] ctx + pi(z_b) "{name}." [EOT])), one SGD step on the context and the meta-net."""
    from dualpt_cli.train.methods import build_learner, trainable

    cfg = resolve_recipe(
        _cfg(images, tiny_rn, tmp_path / "p", method="cocoop", batch_size=6, lr=0.05, weight_decay=0.0, momentum=0.0)
    )
    assert (cfg.n_prompts, cfg.n_ctx, cfg.ctx_init, cfg.prompt_text, cfg.beta) == (1, 4, "a photo of a", "name", 0.0)
    bb = load_backbone(ModelSpec(tiny_rn, ""), device="cpu", precision="fp32")
    paths = sorted(images.glob("*/*.png"))[:6]
    labels = torch.tensor([CLASSES.index(p.parent.name) for p in paths])
    fs = encode_views(bb, paths, [0], None, aug_seed=1, aug_scale=(0.9, 1.0))
    # the tiny random CLIP maps every image to nearly one direction: spread the global features so that the
    # meta-net's tokens differ between images
    fs.global_ = fs.global_ + torch.randn(fs.global_.shape, generator=torch.Generator().manual_seed(0))
    data = type(
        "D", (), {"train": fs, "train_labels": labels, "classes": [ClassEntry(c, c) for c in CLASSES], "crops": None}
    )()
    learner = build_learner(cfg, bb, data, None)
    start = {k: v.detach().clone() for k, v in learner.named_parameters()}
    words = bb.token_embeds(bb.tokenize(["a photo of a"]))[0, 1:5]  # CoCoOp's ctx_init: the words' embeddings
    assert_close(start["ctx"][0], words)
    desc = torch.zeros(3, bb.embed_dim)
    objective = Objective(
        matcher_for(cfg, bb), 0.0, "cosine", desc, torch.zeros(3, dtype=torch.bool), [desc] * 3, global_scores=True
    )
    optimizer = torch.optim.SGD(trainable(learner), lr=cfg.lr)
    record = train_epoch(0, 1, replace(cfg, epochs=1), learner, optimizer, objective, data, Callbacks(), None)

    # CoCoOp written out, image by image
    ctx = start["ctx"][0].clone().requires_grad_(True)  # (4, width)
    w1, b1 = start["meta_net.linear1.weight"].clone().requires_grad_(True), start["meta_net.linear1.bias"].clone()
    w2, b2 = start["meta_net.linear2.weight"].clone().requires_grad_(True), start["meta_net.linear2.bias"].clone()
    b1.requires_grad_(True), b2.requires_grad_(True)
    assert w1.shape == (bb.embed_dim // 16, bb.embed_dim) and w2.shape == (bb.text_width, bb.embed_dim // 16)
    tokens = bb.tokenize([f"X X X X {c}." for c in CLASSES])  # (K, L)
    emb = bb.token_embeds(tokens)  # (K, L, width)
    losses = []
    for b in range(6):
        f = F.normalize(fs.global_[b, 0].float(), dim=-1)  # (d,)
        token = w2 @ torch.relu(w1 @ f + b1) + b2  # (width,)
        full = torch.cat([emb[:, :1], (ctx + token).expand(3, 4, -1), emb[:, 5:]], dim=1)  # (K, L, width)
        w = F.normalize(bb.encode_text_embeds(full, bb.eot_positions(tokens), truncate=False), dim=-1)  # (K, d)
        losses.append(F.cross_entropy((bb.logit_scale * w @ f)[None], labels[b : b + 1]))
    loss = torch.stack(losses).mean()
    loss.backward()
    assert record["loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
    after = dict(learner.named_parameters())
    for name, ref in (
        ("ctx", ctx),
        ("meta_net.linear1.weight", w1),
        ("meta_net.linear1.bias", b1),
        ("meta_net.linear2.weight", w2),
        ("meta_net.linear2.bias", b2),
    ):
        assert ref.grad.abs().max() > 0, name
        moved = start[name] - cfg.lr * (ref.grad[None] if name == "ctx" else ref.grad)
        assert_close(after[name].detach(), moved, rtol=1e-4, atol=1e-6, msg=name)


def test_codualpt_meta_net_and_new_classes(images, tiny_rn, tmp_path):
    """The meta-net's token depends on the image; the saved file predicts new classes (the meta-net has none)."""
    run_training(_cfg(images, tiny_rn, tmp_path / "p", method="codualpt", guard=False, batch_size=None))
    path = tmp_path / "p" / "prompts.safetensors"
    tensors, meta = load_prompt_file(path)
    assert any(k.startswith("meta_net.") for k in tensors) and meta["n_ctx"] == 4
    config = json.loads((tmp_path / "p" / "run_config.json").read_text())
    assert config["batch_size"] == 1  # CoCoOp's recipe
    classes = [ClassEntry(c, c) for c in [*CLASSES, "purple"]]
    clf = Classifier.from_prompt_file(path, device="cpu", precision="fp32", classes=classes)
    _, Z = clf.bb.encode_images(torch.rand(2, 3, clf.bb.image_size, clf.bb.image_size))
    # the tiny random CLIP maps every image to nearly one direction (cos > 0.999), so two global features of
    # different directions stand for two different images
    z = torch.randn(2, clf.bb.embed_dim, generator=torch.Generator().manual_seed(0))
    learner = clf.scorer.learner  # predict/scorers.py: the ConditionalScorer
    token = learner.meta_net(F.normalize(z, dim=-1))  # (2, width)
    assert (token[0] - token[1]).abs().max() > 1e-4
    W = learner.forward_conditional(z)  # (2, K, M, d)
    assert W.shape[:2] == (2, 4) and (W[0] - W[1]).abs().max() > 1e-5
    logits = clf.logits_from_features(z, Z)
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    (tmp_path / "classes.txt").write_text("red\ngreen\nblue\npurple\n")
    result = runner.invoke(
        app, ["predict", "images", "--prompt-file", str(path), "--json", "--device", "cpu", "--classes", "classes.txt"]
    )
    assert result.exit_code == 0, result.output
    assert {r["class"] for r in json.loads(result.stdout)} <= {*CLASSES, "purple"}


def test_linear_probe_file_reproduces_training_logits(images, tiny_rn, tmp_path):
    """The default linear probe is jusiro/CLAP's: 20 augmented views per image, anchors the un-normalised
    template feature, SGD; the prompt file gives the fitted probe's logits on the training views."""
    from dualpt_cli.clip.features import encode_views as encode
    from dualpt_cli.model.linear_probe import clap_multipliers, fit_clap
    from dualpt_cli.train.probe import clap_anchors

    result = run_training(_cfg(images, tiny_rn, tmp_path / "p", method="linear-probe"))
    assert result.epochs == 0 and result.method == "linear-probe"
    path = tmp_path / "p" / "prompts.safetensors"
    clf = Classifier.from_prompt_file(path, device="cpu", precision="fp32")
    split = json.loads((tmp_path / "p" / "split.json").read_text())
    order = [c.folder for c in clf.classes]  # the training's class order
    paths = [images / p for c in order for p in split["train"][c]]
    labels = torch.tensor([k for k, c in enumerate(order) for _ in split["train"][c]]).repeat_interleave(20)
    fs = encode(clf.bb, paths, list(range(20)), None, aug_seed=1, aug_scale=(0.9, 1.0))
    z = fs.global_.flatten(0, 1).float()
    anchors = clap_anchors(clf.bb, order, None)
    tokens = clf.bb.tokenize([f"a photo of a {c}." for c in order])
    raw = clf.bb.encode_text_embeds(clf.bb.token_embeds(tokens), clf.bb.eot_positions(tokens))
    assert_close(anchors, raw)  # one template for an ImageFolder, not normalised
    lam = clap_multipliers(clf.bb.logit_scale * F.normalize(z, dim=-1) @ F.normalize(anchors, dim=-1).T, labels, 3)
    probe = fit_clap(z, labels, anchors, clf.bb.logit_scale, lam, len(paths), seed=1)
    saved = clf.logits_from_features(z, fs.local.flatten(0, 1).float())
    assert_close(saved, probe.logits(z), rtol=1e-4, atol=1e-4)
    assert float((saved.argmax(-1) == labels).float().mean()) == pytest.approx(result.train_acc)


def test_paper_linear_probe_is_lp_clip(images, tiny_rn, tmp_path):
    """--recipe paper: CoOp's LP-CLIP on the un-augmented images, C searched on min(shots, 4) held-out images
    per class; the prompt file stores weights and bias and predict scores raw features with them."""
    from dualpt_cli.clip.features import EVAL_VIEW
    from dualpt_cli.clip.features import encode_views as encode
    from dualpt_cli.model.lpclip import search_lpclip

    result = run_training(_cfg(images, tiny_rn, tmp_path / "p", method="linear-probe", recipe="paper", shots=2))
    tensors, _ = load_prompt_file(result.prompt_file)
    assert tensors["probe_bias"].shape == (3,)
    split = json.loads((tmp_path / "p" / "split.json").read_text())
    assert split["val_shots"] == 2 and all(len(v) == 2 for v in split["val"].values())
    clf = Classifier.from_prompt_file(result.prompt_file, device="cpu", precision="fp32")
    order = [c.folder for c in clf.classes]

    def feats(part):
        paths = [images / p for c in order for p in split[part][c]]
        fs = encode(clf.bb, paths, [EVAL_VIEW], None)
        return fs, torch.tensor([k for k, c in enumerate(order) for _ in split[part][c]])

    (train, y), (val, vy) = feats("train"), feats("val")
    want = search_lpclip(train.global_[:, 0], y, val.global_[:, 0], vy, 3).model
    z = train.global_[:, 0].float()
    assert_close(clf.logits_from_features(z, train.local[:, 0].float()), z @ want.weights.T + want.bias)
    with pytest.raises(DataError, match="scores only the classes it was fitted on"):
        Classifier.from_prompt_file(
            result.prompt_file, device="cpu", precision="fp32", classes=[*clf.classes, ClassEntry("x", "x")]
        )


def test_zero_shot_method_is_zero_shot_clip(images, tiny_rn, tmp_path):
    """The zero-shot method's classifier is logit_scale * cos(z, name_features), also for new classes."""
    run_training(_cfg(images, tiny_rn, tmp_path / "p", method="zero-shot"))
    classes = [ClassEntry(c, c) for c in [*CLASSES, "purple"]]
    clf = Classifier.from_prompt_file(
        tmp_path / "p" / "prompts.safetensors", device="cpu", precision="fp32", classes=classes
    )
    z, Z = clf.bb.encode_images(torch.rand(3, 3, clf.bb.image_size, clf.bb.image_size))
    expected = clf.bb.logit_scale * F.normalize(z, dim=-1) @ name_features(clf.bb, [*CLASSES, "purple"]).T
    assert_close(clf.logits_from_features(z, Z), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["codualpt", "cocoop"])
def test_conditional_resume_equals_uninterrupted(method, images, tiny_rn, tmp_path):
    """The checkpoint keeps the meta-net, its momentum and its best-epoch copy, not only the context."""
    from dualpt_cli.train.loop import Callbacks as Base

    class StopAfter(Base):
        def epoch_done(self, record):
            if record["epoch"] == 1:
                raise KeyboardInterrupt

    kw = dict(method=method, epochs=2, val_shots=1, batch_size=2, guard=False)
    full = run_training(_cfg(images, tiny_rn, tmp_path / "full", **kw))
    cfg = _cfg(images, tiny_rn, tmp_path / "cut", **kw)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, StopAfter())
    resumed = run_training(replace(cfg, resume=True))
    t_full, _ = load_prompt_file(full.prompt_file)
    t_res, _ = load_prompt_file(resumed.prompt_file)
    assert set(t_full) == set(t_res) and any(k.startswith("meta_net.") for k in t_full)
    for key in t_full:
        assert torch.equal(t_full[key], t_res[key]), key
