from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.data.classes import ClassEntry
from dualpt_cli.model.calibration import expected_calibration_error
from dualpt_cli.predict.evaluate import ZeroShotClassifier, harmonic_mean, metrics, split_accuracy, topk_accuracy
from imagegen import make_image_folder, write_corrupt_image

runner = CliRunner()


# ---------------------------------------------------------------------------------------------------------
# metrics


def _classes(*names: str) -> list[ClassEntry]:
    return [ClassEntry(n, n) for n in names]


def test_metrics_by_hand():
    # 3 classes, 5 images; rows = images, argmax: 0, 1, 1, 2, 0
    logits = torch.tensor([[5.0, 1, 0], [0, 3, 1], [1, 4, 0], [0, 1, 2], [3, 0, 2]])
    labels = torch.tensor([0, 1, 0, 2, 2])
    m = metrics(logits, labels, _classes("a", "b", "c"))
    assert m["top1"] == pytest.approx(3 / 5)
    assert m["top5"] == 1.0 and m["top5_k"] == 3
    assert topk_accuracy(logits, labels, 2) == pytest.approx(5 / 5)
    assert [(r["class"], r["images"], r["correct"]) for r in m["per_class"]] == [("a", 2, 1), ("b", 1, 1), ("c", 2, 1)]
    assert {(c["true"], c["predicted"], c["count"]) for c in m["confused"]} == {("a", "b", 1), ("c", "a", 1)}
    assert all(c["share_of_true"] == 0.5 for c in m["confused"])
    assert "H" not in m
    assert m["ece"] == pytest.approx(expected_calibration_error(logits.softmax(dim=1), labels))


def test_metrics_ece_of_a_calibrated_and_an_overconfident_classifier():
    # two classes; logits log(p): probabilities (0.75, 0.25) on 4 images of which 3 are class 0
    logits = torch.tensor([[0.75, 0.25]] * 4).log()
    assert metrics(logits, torch.tensor([0, 0, 0, 1]), _classes("a", "b"))["ece"] == pytest.approx(0.0, abs=1e-6)
    # half right at confidence 0.75: over-confident by 0.25
    assert metrics(logits, torch.tensor([0, 0, 1, 1]), _classes("a", "b"))["ece"] == pytest.approx(0.25)


def test_base_new_split_chooses_within_each_split():
    # classes 0, 1 base; 2, 3 new. Image 0 (base 0) scores highest on new class 2, but among base it is right.
    logits = torch.tensor([[2.0, 1, 9, 0], [0, 3, 0, 5], [0, 0, 1, 2], [9, 0, 0, 1]])
    labels = torch.tensor([0, 1, 3, 2])
    base = torch.tensor([True, True, False, False])
    assert split_accuracy(logits, labels, base) == (1.0, 2)
    assert split_accuracy(logits, labels, ~base) == (0.5, 2)
    m = metrics(logits, labels, _classes("a", "b", "c", "d"), base)
    assert m["base"] == {"classes": 2, "images": 2, "accuracy": 1.0}
    assert m["new"]["accuracy"] == 0.5
    assert m["H"] == pytest.approx(2 * 1.0 * 0.5 / 1.5) == pytest.approx(harmonic_mean(1.0, 0.5))
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(split_accuracy(logits, labels[:1], ~base)[0])


def test_zero_shot_equals_plain_clip(tiny_vit):
    bb = load_backbone(ModelSpec(tiny_vit, ""), device="cpu", precision="fp32")
    zs = ZeroShotClassifier(bb, ["red", "dark grey"])
    x = torch.randn(3, 3, bb.image_size, bb.image_size)
    model = bb.model
    with torch.no_grad():
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(bb.tokenize(["a photo of a red.", "a photo of a dark grey."])), dim=-1)
        z, _ = bb.encode_images(x)
    assert_close(zs.logits_from_global(z), model.logit_scale.exp() * img @ txt.T, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# the command


def test_eval_json_agrees_with_predict(prompts, test_images):
    result = runner.invoke(app, ["eval", str(test_images), "--prompts", prompts, "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    m = report["dualpt"]
    assert m["images"] == 6 and m["classes"] == 3 and report["failed"] == []
    assert [r["folder"] for r in m["per_class"]] == ["blue", "green", "red"]
    assert "zero_shot" not in report and "H" not in m
    assert 0.0 <= m["ece"] <= 1.0

    rows = runner.invoke(app, ["predict", str(test_images), "--prompts", prompts, "-f", "jsonl", "--device", "cpu"])
    preds = [json.loads(line) for line in rows.stdout.splitlines()]
    correct = sum(r["class"] == r["image"].split("/")[-2] for r in preds)
    assert m["top1"] == pytest.approx(correct / 6)


def test_eval_with_zero_shot_shows_the_gain(prompts, test_images):
    result = runner.invoke(app, ["eval", str(test_images), "--prompts", prompts, "--zero-shot", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for text in ("DUAL-PT", "zero-shot CLIP", "gain from training", "per class", "top-1", "ECE"):
        assert text in result.stdout
    report = json.loads(
        runner.invoke(
            app, ["eval", str(test_images), "--prompts", prompts, "--zero-shot", "--json", "--device", "cpu"]
        ).stdout
    )
    assert report["gain_top1"] == pytest.approx(report["dualpt"]["top1"] - report["zero_shot"]["top1"])
    for method in ("dualpt", "zero_shot"):
        assert 0.0 <= report[method]["ece"] <= 1.0
        assert f"{report[method]['ece']:.1%}" in result.stdout  # the table's ECE column


def test_zero_shot_without_prompt_file(tiny_rn, tmp_path):
    images = make_image_folder(tmp_path / "zs", classes=["red", "dark_grey"], per_class=1)
    result = runner.invoke(app, ["eval", str(images), "--zero-shot", "--model", tiny_rn, "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["prompt_file"] is None and "dualpt" not in report
    assert report["classes"] == ["dark grey", "red"]  # readable names from the folders
    assert report["zero_shot"]["images"] == 2

    result = runner.invoke(app, ["eval", str(images), "--zero-shot"])
    assert result.exit_code == 2 and "needs --model" in result.stderr


def test_unknown_folders_need_classes_then_report_base_new_h(prompts, test_images, tmp_path):
    make_image_folder(test_images, classes=["yellow", "purple"], per_class=2, seed=5)
    result = runner.invoke(app, ["eval", str(test_images), "--prompts", prompts])
    assert result.exit_code == 2
    assert "purple, yellow" in result.stderr and "--classes" in result.stderr

    (tmp_path / "new.txt").write_text("yellow\npurple\n")
    result = runner.invoke(
        app, ["eval", str(test_images), "--prompts", prompts, "--classes", "new.txt", "--json", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)["dualpt"]
    assert m["classes"] == 5
    assert m["base"]["images"] == 6 and m["new"]["images"] == 4
    assert m["H"] == pytest.approx(harmonic_mean(m["base"]["accuracy"], m["new"]["accuracy"]))
    table = runner.invoke(app, ["eval", str(test_images), "--prompts", prompts, "--classes", "new.txt"])
    assert table.exit_code == 0 and "base" in table.stdout and " H " in table.stdout


def test_eval_reports_unreadable_images(prompts, test_images):
    write_corrupt_image(test_images / "red" / "broken.jpg")
    result = runner.invoke(app, ["eval", str(test_images), "--prompts", prompts, "--json", "--device", "cpu"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["dualpt"]["images"] == 6
    assert [f["image"].split("/")[-1] for f in report["failed"]] == ["broken.jpg"]
    assert "1 image(s) could not be read" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing_dir"], "image folder missing_dir does not exist"),
        (["IMAGES", "--prompts", "nope.safetensors"], "prompt file nope.safetensors does not exist"),
        (["IMAGES", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    ],
)
def test_eval_bad_inputs(args, message, test_images):
    args = [str(test_images) if a == "IMAGES" else a for a in args]
    result = runner.invoke(app, ["eval", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
