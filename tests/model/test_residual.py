"""The default recipe's residual head (model/residual.py): the fit, its cross-validation, temperature and uniform
share, and the prompt file that carries them to predict."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.data.classes import ClassEntry
from dualpt_cli.errors import PromptFileError
from dualpt_cli.model.head import blend_logits
from dualpt_cli.model.residual import (
    DEFAULT_LAMBDA,
    LAMBDA_GRID,
    choose_lambda,
    fit_calibration,
    fit_head,
    fit_residual,
    head_logits,
    out_of_fold,
    shot_index,
)
from dualpt_cli.predict.classifier import Classifier
from dualpt_cli.promptfile.io import load_prompt_file, read_prompt_file, write_safetensors
from dualpt_cli.promptfile.meta import version_for
from imagegen import make_image_folder

runner = CliRunner()
SCALE = 20.0


def _task(K=3, d=16, per_class=8, views=2, seed=0, noise=0.3):
    """Global features (n, V, d) whose class is a direction the base logits (n, V, K) know nothing about."""
    gen = torch.Generator().manual_seed(seed)
    protos = F.normalize(torch.randn(K, d, generator=gen), dim=-1)
    labels = torch.arange(K).repeat_interleave(per_class)
    z = protos[labels][:, None] + noise * torch.randn(len(labels), views, d, generator=gen)
    base = torch.zeros(len(labels), views, K)  # an uninformative prior: every class scores alike
    return z, labels, base


def test_huge_penalty_leaves_the_blend():
    z, labels, base = _task()
    w = fit_residual(z.flatten(0, 1), labels.repeat_interleave(2), base.flatten(0, 1), SCALE, lam=1e6)
    assert float(w.abs().max()) < 1e-4


def test_head_learns_what_the_blend_misses_and_cross_validates():
    z, labels, base = _task()
    head = fit_head(z, labels, base, SCALE, lam=1.0, references={"zero-shot": base})
    assert head.folds == 4 and head.weights.shape == (3, 16)
    assert head.cv_acc["blend"] == pytest.approx(1 / 3, abs=0.01)  # argmax of ties: class 0, a third of images
    assert head.cv_acc["head"] > 0.9 and head.cv_acc["residual"] > 0.9  # out-of-fold, so not memorised
    logits = head_logits(base.flatten(0, 1), z.flatten(0, 1), head.weights, SCALE)
    assert float((logits.argmax(-1) == labels.repeat_interleave(2)).float().mean()) > 0.95


def test_one_shot_has_no_folds():
    z, labels, base = _task(per_class=1)
    head = fit_head(z, labels, base + torch.eye(3)[labels][:, None], SCALE)
    assert head.folds == 0 and head.cv_acc["head"] is None and head.cv_acc["residual"] is None
    assert 0.05 <= head.temperature <= 20.0


def test_penalty_is_chosen_by_cross_validation_with_the_default_winning_near_ties():
    assert choose_lambda({3.0: 0.80, 10.0: 0.79, 30.0: 0.70}) == DEFAULT_LAMBDA  # +1 point: not enough
    assert choose_lambda({3.0: 0.85, 10.0: 0.79, 30.0: 0.70}) == 3.0
    assert choose_lambda({3.0: 0.70, 10.0: 0.70, 30.0: 0.75}) == 30.0
    assert choose_lambda({1.0: 0.5}) == 1.0  # a penalty the user fixed is kept


def test_head_reports_the_searched_penalties_and_keeps_the_one_chosen():
    z, labels, base = _task(noise=0.8)
    head = fit_head(z, labels, base, SCALE)
    assert set(head.lambda_cv) == {f"{g:g}" for g in LAMBDA_GRID}
    assert head.lam == choose_lambda({float(k): v for k, v in head.lambda_cv.items()})
    fold = (shot_index(labels) % head.folds).repeat_interleave(2)
    flat = (z.flatten(0, 1), labels.repeat_interleave(2), base.flatten(0, 1))
    oof = base.flatten(0, 1) + out_of_fold(*flat, SCALE, head.lam, fold)  # the plain computation, refitted
    assert head.cv_acc["head"] == pytest.approx(float((oof.argmax(-1) == flat[1]).float().mean()))
    assert_close(head.weights, fit_residual(*flat, SCALE, head.lam))
    fixed = fit_head(z, labels, base, SCALE, lam=1.0)
    assert fixed.lam == 1.0 and fixed.lambda_cv == {}


def test_folds_are_shot_indices_within_each_class():
    labels = torch.tensor([2, 0, 2, 1, 0, 2])
    assert shot_index(labels).tolist() == [0, 0, 1, 0, 1, 2]


def _mixture_labels(logits, temperature, mix, seed=0):
    """Labels drawn from ``(1 - mix) softmax(logits / temperature) + mix / K``."""
    probs = (1 - mix) * (logits / temperature).softmax(-1) + mix / logits.shape[1]
    return torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed))[:, 0]


def test_calibration_recovers_the_temperature_that_made_the_labels_without_a_uniform_share():
    logits = 3.0 * torch.randn(8000, 5, generator=torch.Generator().manual_seed(0))
    temperature, mix = fit_calibration(logits, _mixture_labels(logits, 2.5, 0.0))
    assert temperature == pytest.approx(2.5, rel=0.05) and mix <= 0.03  # sampling noise of 8000 labels
    assert fit_calibration(logits, _mixture_labels(logits, 2.5, 0.0), max_mix=0.0)[1] == 0.0
    assert fit_calibration(torch.zeros(10, 3), torch.zeros(10, dtype=torch.long))[0] > 0  # degenerate: finite


def test_calibration_recovers_the_uniform_share_that_made_the_labels():
    logits = 3.0 * torch.randn(8000, 5, generator=torch.Generator().manual_seed(0))
    temperature, mix = fit_calibration(logits, _mixture_labels(logits, 0.8, 0.4))
    assert temperature == pytest.approx(0.8, rel=0.1) and mix == pytest.approx(0.4, abs=0.03)
    only_t, _ = fit_calibration(logits, _mixture_labels(logits, 0.8, 0.4), max_mix=0.0)  # today's map: T alone
    assert only_t > 1.2  # flattens every image to lower the confident ones: what eps does not need to


def test_head_fits_the_uniform_share_out_of_fold():
    gen = torch.Generator().manual_seed(2)
    base = 4.0 * torch.randn(600, 1, 5, generator=gen)  # the blend decides alone: a huge penalty keeps r at 0
    labels = _mixture_labels(base[:, 0], 1.0, 0.5, seed=3)
    z = torch.randn(600, 1, 8, generator=gen)
    head = fit_head(z, labels, base, SCALE, lam=1e6)
    assert head.mix == pytest.approx(0.5, abs=0.08) and head.to_json()["mix"] == head.mix
    assert head.temperature == pytest.approx(1.0, rel=0.3)


def test_head_logits_is_the_formula():
    gen = torch.Generator().manual_seed(1)
    base, z, w = torch.randn(4, 3, generator=gen), torch.randn(4, 8, generator=gen), torch.randn(3, 8, generator=gen)
    expected = (base + SCALE * F.normalize(z, dim=-1) @ w.T) / 1.7
    assert_close(head_logits(base, z, w, SCALE, 1.7), expected)
    assert_close(head_logits(base, z, None, SCALE), base)


@pytest.mark.parametrize("spread", [0.1, 30.0])
def test_head_logits_with_a_uniform_share_are_the_mixture_and_keep_top1(spread):
    gen = torch.Generator().manual_seed(4)
    base, z = spread * torch.randn(64, 6, generator=gen), torch.randn(64, 8, generator=gen)
    w = torch.randn(6, 8, generator=gen)
    plain = (base + SCALE * F.normalize(z, dim=-1) @ w.T) / 0.7
    mixed = head_logits(base, z, w, SCALE, 0.7, mix=0.35)
    assert_close(mixed.softmax(-1), 0.65 * plain.softmax(-1) + 0.35 / 6)  # the reference computation
    assert_close(mixed.exp().sum(-1), torch.ones(64))  # log-probabilities: softmax leaves them as they are
    assert torch.equal(mixed.argmax(-1), plain.argmax(-1))  # top-1 unchanged
    assert torch.isfinite(mixed).all()  # probabilities that underflow softmax stay finite in log space


def _train(images, model, *extra):
    args = ["train", str(images), "--model", model, "--epochs", "2", "--device", "cpu", "--precision", "fp32"]
    return runner.invoke(app, [*args, "--aug-views", "2", "--json", *extra])


def test_default_train_stores_the_head_and_predict_applies_it(tiny_rn, tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=4)
    result = _train(images, tiny_rn, "--shots", "4")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{") :])
    cv = out["head"]["cv_acc"]
    assert out["head"]["folds"] == 4 and set(cv) == {"zero-shot", "blend", "residual", "head"}
    assert all(0.0 <= v <= 1.0 for v in cv.values())
    path = tmp_path / "dualpt-project" / "prompts.safetensors"
    tensors, meta = load_prompt_file(path)
    # an older dualpt refuses it instead of dropping the head (4) or its uniform share (5)
    assert meta["format_version"] == version_for("dualpt", head=True, mix=meta["uniform_mix"] > 0)
    assert tensors["residual_weights"].shape == tensors["prior_features"].shape
    assert meta["temperature"] == out["head"]["temperature"] and meta["prior_weight"] == 1.0
    assert meta["uniform_mix"] == out["head"]["mix"]

    clf = Classifier.from_prompt_file(path, device="cpu", precision="fp32")
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 3, clf.bb.image_size, clf.bb.image_size, generator=gen)
    z, Z = clf.bb.encode_images(pixels)
    blend = blend_logits(clf.logits_from_local(Z), z, tensors["prior_features"], clf.bb.logit_scale, 1.0, 1.0)
    expected = (blend + clf.bb.logit_scale * F.normalize(z, dim=-1) @ tensors["residual_weights"].T) / meta[
        "temperature"
    ]
    mix, K = meta["uniform_mix"], expected.shape[1]
    assert_close(clf.predict_batch(pixels), (1 - mix) * expected.softmax(-1) + mix / K, rtol=1e-4, atol=1e-5)

    # a class the file does not know (base-to-new) gets no residual: it scores by the blend alone
    classes = [*clf.classes, ClassEntry(folder="purple", name="purple")]
    wider = Classifier.from_prompt_file(path, device="cpu", precision="fp32", classes=classes)
    assert_close(wider.residual[:3], clf.residual) and float(wider.residual[3].abs().max()) == 0.0


def test_head_none_is_the_blend_alone(tiny_rn, tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=3)
    result = _train(images, tiny_rn, "--shots", "2", "--head", "none")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{") :])["head"] is None
    tensors, meta = load_prompt_file(tmp_path / "dualpt-project" / "prompts.safetensors")
    assert "residual_weights" not in tensors and meta["temperature"] == 1.0 and meta["format_version"] == 2


def test_bad_head_options_are_one_line_errors(tiny_rn, tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=2)
    result = _train(images, tiny_rn, "--shots", "2", "--head-lambda", "0")
    assert result.exit_code != 0 and "--head-lambda must be > 0" in result.output
    assert "Traceback" not in result.output


def test_residual_of_the_wrong_shape_is_refused(tiny_rn, tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=3)
    assert _train(images, tiny_rn, "--shots", "2").exit_code == 0
    path = tmp_path / "dualpt-project" / "prompts.safetensors"
    tensors, meta = read_prompt_file(path)
    tensors["residual_weights"] = tensors["residual_weights"][:2]
    write_safetensors(path, tensors, "dualpt-prompts/1", meta.to_dict())
    with pytest.raises(PromptFileError, match="residual_weights shape"):
        read_prompt_file(path)
