from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import open_clip
import ot
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.testing import assert_close
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.clip.features import EVAL_VIEW, encode_views
from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.core.project import resolve_project
from dualpt_cli.data.classes import ClassEntry
from dualpt_cli.data.images import expand_inputs, load_image
from dualpt_cli.data.stream import collate_with_errors, image_batches
from dualpt_cli.errors import DataError
from dualpt_cli.model.prompts import PromptLearner
from dualpt_cli.predict.classifier import Classifier
from dualpt_cli.predict.output import JsonlWriter, make_row
from dualpt_cli.predict.stored import StoredContext, encode_new_classes
from dualpt_cli.promptfile.io import (
    PROMPT_FORMAT,
    load_prompt_file,
    read_prompt_file,
    read_safetensors,
    write_safetensors,
)
from dualpt_cli.train.loop import Callbacks, build_objective, resolve_recipe
from imagegen import make_image_folder, write_corrupt_image
from tiny_models import CONFIGS, PREPROCESS_CFG, build_tiny_model
from trained import TRAINED_CLASSES, trained_project

runner = CliRunner()


def _pixels(bb, paths) -> torch.Tensor:
    tf = bb.eval_transform()
    return torch.stack([tf(load_image(p)) for p in paths])


# ---------------------------------------------------------------------------------------------------------
# the same logits as training


def _eq8_reference(Z: torch.Tensor, W: torch.Tensor, meta: dict) -> torch.Tensor:
    """Eq. 8 written out apart from dualpt's solver: POT's converged entropic FGW plan for each (image, class).

    Z: (I, N, d) local features; W: (K, M, d) prompt features. Uses the method card's mapping of (alpha, lambda)
    to POT's (alpha, epsilon). Returns (I, K) logits = logit_scale * sum_ij T_ij cos(z_i, w_kj), float64.
    """
    alpha, lam = meta["alpha"], meta["lambda"]
    Zn, Wn = F.normalize(Z.double(), dim=-1), F.normalize(W.double(), dim=-1)
    out = torch.empty(len(Zn), len(Wn), dtype=torch.float64)
    for i, z in enumerate(Zn):
        for k, w in enumerate(Wn):
            cos = (z @ w.T).numpy()  # (N, M)
            T = ot.gromov.entropic_fused_gromov_wasserstein(
                1 - cos,
                (z @ z.T).numpy(),
                (w @ w.T).numpy(),
                ot.unif(len(z)),
                ot.unif(len(w)),
                "square_loss",
                epsilon=2 * lam / (2 - alpha),
                alpha=alpha / (2 - alpha),
                max_iter=1000,
                tol=1e-12,
                stopThr=1e-12,
            )
            out[i, k] = float((T * cos).sum())
    return meta["logit_scale"] * out


@pytest.mark.parametrize("kind", ["rn", "vit"])
def test_predict_reproduces_training_logits(kind, tmp_path_factory, tiny_rn, tiny_vit, test_images):
    model = {"rn": tiny_rn, "vit": tiny_vit}[kind]
    root, cfg = trained_project(tmp_path_factory, model)
    tensors, meta = load_prompt_file(root / "proj" / "prompts.safetensors")
    bb = load_backbone(ModelSpec(model, ""), device="cpu", precision="fp32")
    classes = [ClassEntry(f, n) for f, n in zip(meta["class_folders"], meta["class_names"])]

    # training's own pieces: the learner with the learned context, the objective, eval-view features
    cfg = resolve_recipe(cfg)
    learner = PromptLearner(bb, meta["class_names"], cfg.n_prompts, cfg.n_ctx, cfg.ctx_init, cfg.class_specific)
    with torch.no_grad():
        learner.ctx.copy_(tensors["ctx"])
        W = learner()  # (K, M, d)
    data = SimpleNamespace(classes=classes, descriptions=None)
    objective = build_objective(cfg, resolve_project(cfg.project), bb, data, Callbacks())
    paths = sorted(test_images.rglob("*.png"))
    fs = encode_views(bb, paths, [EVAL_VIEW], cache_dir=None)
    with torch.no_grad(), bb.autocast():
        dual = objective.logits(fs.local[:, 0], W)  # (I, K)
    # the final classifier adds the zero-shot prior, written out here: no descriptions, so "a photo of a {name}."
    with torch.no_grad():
        text = bb.model.encode_text(bb.tokenize([f"a photo of a {n}." for n in meta["class_names"]]))  # (K, d)
    z = fs.global_[:, 0]  # (I, d)
    cos = torch.nn.functional.normalize(z, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
    assert meta["dual_weight"] == 1.0 and meta["prior_weight"] > 0 and meta["prior"] == "names"
    expected = dual + meta["prior_weight"] * bb.logit_scale * cos
    # and the default recipe's residual head, over its temperature (model/residual.py)
    residual = torch.nn.functional.normalize(z, dim=-1) @ tensors["residual_weights"].T
    expected = (expected + bb.logit_scale * residual) / meta["temperature"]
    # and its uniform share, where one was fitted: log((1 - eps) softmax + eps / K) (model/residual.py)
    eps = float(meta.get("uniform_mix", 0.0))
    if eps > 0:
        expected = torch.log((1 - eps) * expected.softmax(-1) + eps / expected.shape[-1])

    clf = Classifier.from_prompt_file(root / "proj" / "prompts.safetensors", device="cpu", precision="fp32")
    assert clf.class_names == TRAINED_CLASSES or sorted(clf.class_names) == sorted(TRAINED_CLASSES)
    assert_close(clf.logits_from_local(fs.local[:, 0]), dual)  # Eq. 8 exactly as training computes it
    # and that is Eq. 8 with the stored settings (the solver's early stop moves the logits by ~3e-7 here). The tiny
    # model's cosines barely interact (a plan with uniform marginals then scores like the uniform plan), so check
    # on local features made of the prompts too, where the plan decides the score
    g = torch.Generator().manual_seed(0)
    n_img, N, M = len(paths), bb.num_local, W.shape[1]
    made = W[torch.arange(n_img) % len(W)][:, torch.arange(N) % M]  # image i: its class's prompts, repeated
    made = made + 0.5 * torch.randn(made.shape, generator=g)  # (I, N, d)
    for Z in (fs.local[:, 0], made):  # (I, N, d)
        assert_close(clf.logits_from_local(Z).double(), _eq8_reference(Z, W, meta), rtol=0, atol=1e-4)
    assert_close(clf.logits(_pixels(clf.bb, paths)), expected, rtol=1e-4, atol=1e-4)  # sums in another order
    assert_close(clf.predict_batch(_pixels(clf.bb, paths)), expected.softmax(-1), rtol=1e-4, atol=1e-5)

    # and the CLI prints those probabilities
    result = runner.invoke(
        app,
        [
            "predict",
            *map(str, paths),
            "--prompts",
            str(root / "proj" / "prompts.safetensors"),
            "--format",
            "json",
            "--top-k",
            "3",
            "--precision",
            "fp32",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    probs = expected.softmax(-1)
    for row, p in zip(rows, probs):
        got = {t["class"]: t["prob"] for t in row["top_k"]}
        assert_close(torch.tensor([got[n] for n in clf.class_names]), p, atol=2e-6, rtol=0)
        assert row["class"] == clf.class_names[int(p.argmax())]


# ---------------------------------------------------------------------------------------------------------
# new classes (base-to-new)


def test_new_classes_use_learned_context(prompts, tmp_path, test_images):
    (tmp_path / "new.txt").write_text("yellow\npurple\nRed\n")
    tensors, meta = load_prompt_file(Path(prompts))
    entries = [ClassEntry("yellow", "yellow"), ClassEntry("purple", "purple"), ClassEntry("Red", "Red")]
    clf = Classifier.from_prompt_file(prompts, device="cpu", precision="fp32", classes=entries)
    assert clf.class_names == ["yellow", "purple", "Red"]
    assert clf.trained == [False, False, True]
    assert_close(clf.W[2], tensors["class_features"][meta["class_names"].index("red")])  # known: stored
    learner = PromptLearner(clf.bb, ["yellow", "purple"], meta["n_prompts"], meta["n_ctx"])
    with torch.no_grad():
        learner.ctx.copy_(tensors["ctx"])
        assert_close(clf.W[:2], learner())  # new: learned context + new names

    new_images = make_image_folder(tmp_path / "new", classes=["yellow", "purple"], per_class=1)
    result = runner.invoke(
        app,
        [
            "predict",
            str(new_images),
            "--prompts",
            prompts,
            "--classes",
            "new.txt",
            "--format",
            "jsonl",
            "--top-k",
            "3",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2
    assert all({t["class"] for t in r["top_k"]} == {"yellow", "purple", "Red"} for r in rows)


def test_class_specific_context_cannot_describe_new_classes(prompts):
    tensors, meta = read_prompt_file(Path(prompts))
    bb = load_backbone(ModelSpec(meta.model, ""), device="cpu", precision="fp32")
    meta.class_specific = True
    with pytest.raises(DataError, match="class-specific"):
        encode_new_classes(StoredContext(bb, tensors["ctx"], meta), ["yellow"])


# ---------------------------------------------------------------------------------------------------------
# output formats and streaming


def _parse(fmt: str, text: str) -> list[dict]:
    if fmt == "json":
        return json.loads(text)
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines()]
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl", "csv"])
def test_formats_parse_back(fmt, prompts, test_images):
    result = runner.invoke(
        app, ["predict", str(test_images), "--prompts", prompts, "--format", fmt, "-k", "2", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    images = [str(p) for p in expand_inputs([str(test_images)])]
    if fmt == "table":
        assert all(Path(p).name in result.stdout for p in images)
        return
    rows = _parse(fmt, result.stdout)
    assert [r["image"] for r in rows] == images  # one row per input, in order
    for row in rows:
        assert row["class" if fmt != "csv" else "class_1"] in TRAINED_CLASSES
        if fmt == "csv":
            assert set(row) == {"image", "class_1", "prob_1", "class_2", "prob_2", "error"}
            assert 0 < float(row["prob_2"]) <= float(row["prob_1"]) <= 1 and row["error"] == ""
        else:
            assert len(row["top_k"]) == 2 and row["error"] is None


@pytest.mark.parametrize("name, fmt", [("out.csv", "csv"), ("out.txt", "table")])
def test_output_file_format_from_extension(name, fmt, prompts, test_images, tmp_path):
    result = runner.invoke(
        app, ["predict", str(test_images), "--prompts", prompts, "--output", f"sub/{name}", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    text = (tmp_path / "sub" / name).read_text()
    if fmt == "table":
        assert "red_0.png" in text
    else:
        assert len(_parse(fmt, text)) == 6
    assert [p.name for p in (tmp_path / "sub").iterdir()] == [name]  # no temp file left


def test_stream_with_workers_and_a_corrupt_image(prompts, test_images, tmp_path):
    write_corrupt_image(test_images / "green" / "broken.png")
    (test_images / "blue" / "empty.jpg").write_bytes(b"")
    result = runner.invoke(
        app,
        [
            "predict",
            str(test_images),
            "--prompts",
            prompts,
            "--format",
            "jsonl",
            "--batch-size",
            "3",
            "--workers",
            "2",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 1
    assert "2 of 8 image(s) could not be read" in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in rows] == [str(p) for p in expand_inputs([str(test_images)])]
    bad = {Path(r["image"]).name: r["error"] for r in rows if r["error"]}
    assert set(bad) == {"broken.png", "empty.jpg"} and "empty file" in bad["empty.jpg"]
    assert all(r["class"] in TRAINED_CLASSES for r in rows if not r["error"])


def test_jsonl_rows_are_flushed_as_written(tmp_path):
    path = tmp_path / "rows.jsonl"
    with open(path, "w") as fh:
        writer = JsonlWriter(fh, top_k=1)
        writer.write(make_row(Path("a.png"), torch.tensor([0.2, 0.8]), ["x", "y"], 1))
        assert json.loads(path.read_text())["class"] == "y"  # readable before the writer closes
        writer.write(make_row(Path("b.png"), None, ["x", "y"], 1, "cannot decode image"))
        assert len(path.read_text().splitlines()) == 2


def test_batches_keep_order_and_errors(tmp_path):
    images = make_image_folder(tmp_path / "imgs", classes=["red"], per_class=5, size=32)
    paths = sorted((images / "red").iterdir())
    paths.insert(2, write_corrupt_image(tmp_path / "bad.png"))
    batches = list(image_batches(paths, lambda im: torch.zeros(3, 4, 4), batch_size=2, workers=2))
    assert [i for b in batches for i in b.indices] == list(range(6))
    assert [i for b in batches for i in b.ok] == [0, 1, 3, 4, 5]
    assert list(batches[1].errors) == [2] and batches[1].pixels.shape == (1, 3, 4, 4)
    assert collate_with_errors([(0, None, "bad")]).pixels is None


# ---------------------------------------------------------------------------------------------------------
# bad inputs


def _tiny_model_with(folder: Path, embed_dim: int) -> str:
    cfg = json.loads(json.dumps(CONFIGS["rn"]))
    cfg["embed_dim"] = embed_dim
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    config = {"model_cfg": cfg, "preprocess_cfg": {"size": 96, **PREPROCESS_CFG}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return "local-dir:" + str(folder)


def _damage(prompts: str, tmp_path: Path, how: str) -> str:
    raw = Path(prompts).read_bytes()
    out = tmp_path / f"{how}.safetensors"
    if how == "truncated":
        out.write_bytes(raw[: len(raw) // 2])
    elif how == "tampered":
        out.write_bytes(raw[:-3] + bytes([raw[-3] ^ 0xFF]) + raw[-2:])
    elif how == "text":
        out.write_text("not a prompt file\n")
    elif how == "version":
        tensors, meta = read_safetensors(Path(prompts), PROMPT_FORMAT, "prompt file")
        write_safetensors(out, tensors, "dualpt-prompts/9", meta)
    elif how == "foreign":
        save_file({"x": torch.zeros(2)}, str(out))
    return str(out)


@pytest.mark.parametrize(
    "how, message",
    [
        ("truncated", "not safetensors, or truncated"),
        ("tampered", "fails its checksum"),
        ("text", "not a valid prompt file"),
        ("version", "has format dualpt-prompts/9"),
        ("foreign", "is not a dualpt prompt file"),
    ],
)
def test_bad_prompt_files(how, message, prompts, test_images, tmp_path):
    result = runner.invoke(app, ["predict", str(test_images), "--prompts", _damage(prompts, tmp_path, how)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.jpg"], "missing.jpg does not exist"),
        (["empty_dir"], "folder empty_dir has no images"),
        (["nothing/*.jpg"], "matches no image files"),
        (["IMAGES", "--format", "xml"], "'xml' is not one of"),
        (["IMAGES", "--classes", "absent.txt"], "class list absent.txt does not exist"),
    ],
)
def test_bad_inputs(args, message, prompts, test_images, tmp_path):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty_dir" / "notes.txt").write_text("no images here")
    args = [str(test_images) if a == "IMAGES" else a for a in args]
    result = runner.invoke(app, ["predict", *args, "--prompts", prompts])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_missing_project_prompt_file(test_images):
    result = runner.invoke(app, ["predict", str(test_images), "--project", "nowhere"])
    assert result.exit_code == 2
    assert "prompt file nowhere/prompts.safetensors does not exist" in result.stderr


def test_mismatched_models(prompts, test_images, tiny_vit, tiny_rn, tmp_path):
    other_dim = _tiny_model_with(tmp_path / "wide", embed_dim=48)
    other_weights = "local-dir:" + str(build_tiny_model("rn", tmp_path / "reseeded", seed=1))
    cases = [
        (tiny_vit, "local features 16"),
        (other_dim, "embedding size 48"),
        (other_weights, "different weights"),
        ("ViT-B-16", "was trained with local-dir:"),
    ]
    for model, message in cases:
        result = runner.invoke(
            app, ["predict", str(test_images), "--prompts", prompts, "--model", model, "--device", "cpu"]
        )
        assert result.exit_code == 2, (model, result.output)
        assert message in result.stderr, (model, result.stderr)
    # the same weights from another place are fine
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in Path(tiny_rn.removeprefix("local-dir:")).iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    result = runner.invoke(
        app,
        ["predict", str(test_images), "--prompts", prompts, "--model", str(moved), "--device", "cpu", "-f", "jsonl"],
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 6


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top-k", "0"], "--top-k must be >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--workers", "-1"], "--workers must be >= 0, got -1"),
    ],
)
def test_predict_options_are_checked_by_its_config(prompts, test_images, args, message):
    """One validation point: PredictConfig.__post_init__ (the CLI does not repeat the ranges)."""
    result = runner.invoke(app, ["predict", str(test_images), "--prompt-file", str(prompts), *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_eval_options_are_checked_by_its_config(tmp_path):
    from dualpt_cli.predict.evaluate import EvalConfig

    with pytest.raises(DataError, match="--batch-size must be >= 1, got 0"):
        EvalConfig(images=str(tmp_path), batch_size=0)
    with pytest.raises(DataError, match="--workers must be >= 0, got -2"):
        EvalConfig(images=str(tmp_path), workers=-2)
