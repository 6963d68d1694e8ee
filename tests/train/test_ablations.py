"""The paper's ablations as train options (--align and the others), the plan entropy in training's records,
and the base-to-new protocol (--base-classes, then eval's base/new/H from the recorded split)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.data.basenew import recorded_new_classes, split_base_new
from dualpt_cli.data.classes import ClassEntry
from dualpt_cli.model.alignment import ALIGNS
from dualpt_cli.model.matcher import Matcher
from dualpt_cli.predict.classifier import Classifier
from dualpt_cli.predict.evaluate import harmonic_mean
from dualpt_cli.promptfile.io import load_prompt_file, read_prompt_file
from dualpt_cli.promptfile.meta import PromptMeta
from dualpt_cli.train.config import BASE_TO_NEW_EPOCHS, TrainConfig
from dualpt_cli.train.registry import resolve_recipe
from imagegen import make_image_folder

runner = CliRunner()
FOUR = ["red", "green", "blue", "purple"]  # sorted folders: blue, green, purple, red


def train(model: str, project: str, *args: str, images: str = "images") -> dict:
    result = runner.invoke(
        app,
        [
            "train",
            images,
            "--shots",
            "2",
            "--model",
            model,
            "--pretrained",
            "",
            "--precision",
            "fp32",
            "--device",
            "cpu",
            "--aug-views",
            "1",
            "--batch-size",
            "4",
            "--project",
            project,
            "--json",
            *args,
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def log_of(project: str) -> list[dict]:
    return [json.loads(line) for line in open(f"{project}/train_log.jsonl")]


@pytest.mark.parametrize("align", ALIGNS)
def test_every_align_trains_saves_and_predicts(align, tiny_rn, tmp_path):
    make_image_folder(tmp_path / "images", per_class=2)
    summary = train(tiny_rn, "proj", "--align", align, "--epochs", "2", "--val-shots", "0", "--no-guard")
    _, meta = load_prompt_file(tmp_path / "proj" / "prompts.safetensors")
    assert meta["align"] == align
    assert json.loads((tmp_path / "proj" / "run_config.json").read_text())["align"] == align
    log = log_of("proj")
    assert all(0.0 < r["plan_entropy"] <= 1.0 + 1e-6 for r in log)
    assert summary["plan_entropy"] == pytest.approx(log[-1]["plan_entropy"])
    if align == "uniform":
        assert all(r["plan_entropy"] == pytest.approx(1.0, abs=1e-6) for r in log)
    predicted = runner.invoke(app, ["predict", "images", "-p", "proj", "--json", "-q", "--device", "cpu"])
    assert predicted.exit_code == 0, predicted.output
    assert len(json.loads(predicted.stdout)) == 6


@pytest.mark.slow
@pytest.mark.parametrize(("align", "alpha"), [("node", "0"), ("edge", "1")])
def test_training_with_node_or_edge_equals_the_alpha_run(align, alpha, tiny_rn, tmp_path):
    """--align node trains exactly as --alpha 0 (edge as --alpha 1): same logits, so the same prompts."""
    make_image_folder(tmp_path / "images", per_class=2)
    common = ("--epochs", "2", "--val-shots", "0", "--no-guard", "--lr", "0.05")
    train(tiny_rn, "by-align", "--align", align, *common)
    train(tiny_rn, "by-alpha", "--alpha", alpha, *common)
    train(tiny_rn, "graph", *common)
    runs = ("by-align", "by-alpha", "graph")
    ctx = {p: load_prompt_file(tmp_path / p / "prompts.safetensors")[0]["ctx"] for p in runs}
    assert torch.equal(ctx["by-align"], ctx["by-alpha"])
    assert not torch.equal(ctx["by-align"], ctx["graph"])
    assert [r["loss"] for r in log_of("by-align")] == [r["loss"] for r in log_of("by-alpha")]


def test_predict_scores_with_the_stored_align(tiny_rn, tmp_path):
    """A prompt file trained with --align uniform scores new images by the mean cosine (not graph matching)."""
    make_image_folder(tmp_path / "images", per_class=2)
    train(
        tiny_rn, "proj", "--align", "uniform", "--epochs", "1", "--val-shots", "0", "--no-guard", "--prior-weight", "0"
    )
    clf = Classifier.from_prompt_file(tmp_path / "proj" / "prompts.safetensors", device="cpu", precision="fp32")
    assert clf.matcher.solver.align == "uniform"
    Z = torch.randn(2, clf.bb.num_local, clf.W.shape[-1])
    cos = torch.einsum("bnd,kmd->bknm", torch.nn.functional.normalize(Z, dim=-1), clf.W)
    assert_close(clf.logits_from_local(Z), clf.matcher.logit_scale * cos.mean((-2, -1)), rtol=1e-5, atol=1e-5)
    graph = Classifier.from_prompt_file(tmp_path / "proj" / "prompts.safetensors", device="cpu", precision="fp32")
    graph.matcher = Matcher(graph.matcher.logit_scale)  # graph matching (the default), the same prompts
    assert (graph.logits_from_local(Z) - clf.logits_from_local(Z)).abs().max() > 1e-4


def test_ablation_options_are_saved_in_run_config(tiny_rn, tmp_path):
    make_image_folder(tmp_path / "images", per_class=2)
    train(
        tiny_rn,
        "proj",
        "--epochs",
        "1",
        "--llm-loss",
        "wd",
        "--context",
        "none",
        "--prompts",
        "2",
        "--alpha",
        "0.5",
        "--beta",
        "0.1",
        "--align",
        "node",
        "--lambda",
        "0.05",
    )
    config = json.loads((tmp_path / "proj" / "run_config.json").read_text())
    assert {k: config[k] for k in ("llm_loss", "context", "n_prompts", "alpha", "lam", "align")} == {
        "llm_loss": "wd",
        "context": "none",
        "n_prompts": 2,
        "alpha": 0.5,
        "lam": 0.05,
        "align": "node",
    }
    assert config["beta"] == 0.0  # the beta trained with: 0 without descriptions (the paper's "None" row)


def test_old_prompt_files_score_with_graph_matching():
    meta = {
        "model": "RN50",
        "pretrained": "openai",
        "class_names": ["a", "b"],
        "n_prompts": 4,
        "n_ctx": 4,
        "embed_dim": 8,
        "class_specific": False,
        "logit_scale": 100.0,
        "alpha": 0.2,
        "lambda": 0.1,
        "outer_iters": 10,
        "inner_iters": 100,
        "tol": 0.01,
        "format_version": 2,
    }
    old = PromptMeta.from_dict(meta, "old.safetensors")
    assert old.align == "graph" and old.matcher().solver.align == "graph" and old.new_classes == []
    with pytest.raises(Exception, match="'align' must be one of graph, node, edge, attn, uniform"):
        PromptMeta.from_dict({**meta, "align": "cross"}, "x.safetensors")


# ---------------------------------------------------------------------------------------------------------
# base-to-new

CLASSES = [ClassEntry(f, f.replace("_", " ")) for f in ["blue", "dark_grey", "green", "purple", "red"]]


def test_split_half_is_the_first_ceil_half_in_folder_order():
    base, new = split_base_new(CLASSES, "half")
    assert [c.folder for c in base] == ["blue", "dark_grey", "green"] and [c.folder for c in new] == ["purple", "red"]
    base, new = split_base_new(CLASSES[:2], "half")
    assert (len(base), len(new)) == (1, 1)


def test_split_from_a_class_file(tmp_path):
    (tmp_path / "base.txt").write_text("red\ndark grey\n")  # by folder or by readable name
    base, new = split_base_new(CLASSES, str(tmp_path / "base.txt"))
    assert [c.folder for c in base] == ["dark_grey", "red"]  # folder order, not file order
    assert [c.folder for c in new] == ["blue", "green", "purple"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("red\norange\n", "no image folder for orange"),
        ("red\nblue\ngreen\npurple\ndark_grey\n", "lists every class folder"),
    ],
)
def test_split_errors(tmp_path, text, message):
    (tmp_path / "base.txt").write_text(text)
    with pytest.raises(Exception, match=message):
        split_base_new(CLASSES, str(tmp_path / "base.txt"))
    with pytest.raises(Exception, match="at least 2 class folders"):
        split_base_new(CLASSES[:1], "half")
    with pytest.raises(Exception, match="--base-classes nope.txt: no such file; give 'half' or a class list"):
        split_base_new(CLASSES, "nope.txt")


def test_new_classes_are_added_only_when_the_folder_has_them():
    new = CLASSES[3:]
    assert recorded_new_classes(new, ["blue", "purple"]) == new
    assert recorded_new_classes(new, ["blue", "green"]) == []
    assert recorded_new_classes([], ["blue"]) == []


def test_base_to_new_epochs_default_to_ten():
    cfg = resolve_recipe(TrainConfig(images="x", base_classes="half"))
    assert cfg.epochs == BASE_TO_NEW_EPOCHS == 10
    assert resolve_recipe(TrainConfig(images="x", base_classes="half", epochs=3)).epochs == 3
    assert resolve_recipe(TrainConfig(images="x")).epochs is None  # by shots


@pytest.mark.slow
def test_base_to_new_train_then_eval_reports_base_new_h(tiny_rn, tmp_path):
    make_image_folder(tmp_path / "images", classes=FOUR, per_class=3)
    make_image_folder(tmp_path / "test", classes=FOUR, per_class=2, seed=3)
    summary = train(tiny_rn, "proj", "--base-classes", "half", "--val-shots", "0")
    assert summary["epochs"] == 10  # the paper's base-to-new schedule
    tensors, meta = read_prompt_file(tmp_path / "proj" / "prompts.safetensors")
    assert [c.folder for c in meta.classes] == ["blue", "green"]
    assert [c.folder for c in meta.new_classes] == ["purple", "red"] and meta.base_classes == "half"
    assert tensors["class_features"].shape[0] == 2
    split = json.loads((tmp_path / "proj" / "split.json").read_text())
    assert set(split["train"]) == {"blue", "green"}
    assert split["new_classes"] == [{"folder": "purple", "name": "purple"}, {"folder": "red", "name": "red"}]

    result = runner.invoke(app, ["eval", "test", "-p", "proj", "--json", "--device", "cpu", "--zero-shot"])
    assert result.exit_code == 0, result.output
    for name in ("dualpt", "zero_shot"):
        m = json.loads(result.stdout)[name]
        assert m["classes"] == 4 and m["base"]["images"] == 4 and m["new"]["images"] == 4
        assert m["base"]["classes"] == 2 and m["new"]["classes"] == 2
        assert m["H"] == pytest.approx(harmonic_mean(m["base"]["accuracy"], m["new"]["accuracy"]))
    table = runner.invoke(app, ["eval", "test", "-p", "proj", "--device", "cpu"])
    assert table.exit_code == 0 and " H " in table.stdout

    base_only = make_image_folder(tmp_path / "test-base", classes=["green", "blue"], per_class=1)
    result = runner.invoke(app, ["eval", str(base_only), "-p", "proj", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dualpt"]["classes"] == 2 and "H" not in json.loads(result.stdout)["dualpt"]


def test_base_classes_file_and_bad_file(tiny_rn, tmp_path):
    make_image_folder(tmp_path / "images", classes=FOUR, per_class=2)
    (tmp_path / "base.txt").write_text("red\npurple\nblue\n")
    train(tiny_rn, "proj", "--base-classes", "base.txt", "--epochs", "1")
    _, meta = read_prompt_file(tmp_path / "proj" / "prompts.safetensors")
    assert [c.folder for c in meta.classes] == ["blue", "purple", "red"] and meta.new_class_names == ["green"]
    (tmp_path / "bad.txt").write_text("orange\n")
    result = runner.invoke(
        app,
        [
            "train",
            "images",
            "--model",
            tiny_rn,
            "--pretrained",
            "",
            "--device",
            "cpu",
            "--base-classes",
            "bad.txt",
            "-p",
            "proj2",
        ],
    )
    assert result.exit_code != 0 and "no image folder for orange" in result.output
    assert "Traceback" not in result.output
