from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.testing import assert_close
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.data.classes import ClassEntry
from dualpt_cli.data.descriptions import FORMAT as DESCRIPTIONS_FORMAT
from dualpt_cli.errors import DataError
from dualpt_cli.model.matcher import Matcher
from dualpt_cli.model.prompts import description_features
from dualpt_cli.pictures.explainplot import explanation_png
from dualpt_cli.predict import explain as explain_mod
from dualpt_cli.predict.classifier import Classifier
from dualpt_cli.predict.explain import (
    ExplainConfig,
    PhraseIndex,
    choose_classes,
    explain_images,
    explain_local,
    picture_names,
    prompt_maps,
    upsample,
)
from dualpt_cli.promptfile.io import PROMPT_FORMAT, load_prompt_file, write_safetensors
from dualpt_cli.promptfile.meta import PromptMeta
from imagegen import make_image, write_corrupt_image
from trained import TRAINED_CLASSES, trained_project

runner = CliRunner()


def png_size(data: bytes | Path) -> tuple[int, int]:
    """(width, height) of a valid PNG; fails the test for anything else."""
    import io

    im = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    assert im.format == "PNG"
    im.verify()
    return im.size


def _classifier(model: str, K: int = 3, M: int = 4, seed: int = 0) -> Classifier:
    """A classifier with random normalised prompt features W (K, M, d) on a tiny model."""
    bb = load_backbone(ModelSpec(model, ""), device="cpu", precision="fp32")
    W = F.normalize(torch.randn(K, M, bb.embed_dim, generator=torch.Generator().manual_seed(seed)), dim=-1)
    classes = [ClassEntry(f"c{k}", f"class {k}") for k in range(K)]
    meta = PromptMeta.from_dict(
        {
            "model": model,
            "pretrained": "",
            "class_names": [c.name for c in classes],
            "n_prompts": M,
            "n_ctx": 4,
            "embed_dim": bb.embed_dim,
            "class_specific": False,
            **Matcher(bb.logit_scale).meta(),
        },
        "test",
    )
    return Classifier(bb, meta, W, classes, [True] * K)


def _dominant(clf: Classifier, k: int, j: int, cell: tuple[int, int], seed: int = 1) -> torch.Tensor:
    """Local features (1, N, d): weak noise everywhere, and the feature at ``cell`` equal to prompt j of class k."""
    rows, cols = clf.bb.grid
    Z = 0.05 * torch.randn(1, rows * cols, clf.bb.embed_dim, generator=torch.Generator().manual_seed(seed))
    Z[0, cell[0] * cols + cell[1]] = clf.W[k, j]
    return Z


# ---------------------------------------------------------------------------------------------------------
# the numbers


def test_prompt_maps_are_row_major_columns_of_the_plan():
    # N = 6 local features on a 2x3 grid, M = 2 prompts; prompt 0 all on feature 5, prompt 1 spread on 0 and 4
    T = torch.zeros(6, 2)
    T[5, 0] = 0.5
    T[0, 1], T[4, 1] = 0.25, 0.25
    maps = prompt_maps(T, (2, 3))
    assert maps.shape == (2, 2, 3)
    assert_close(maps.sum((-2, -1)), torch.ones(2))
    assert maps[0, 1, 2] == 1.0  # feature 5 = row 1, column 2
    assert maps[1, 0, 0] == 0.5 and maps[1, 1, 1] == 0.5  # features 0 and 4
    with pytest.raises(ValueError, match="grid"):
        prompt_maps(T, (3, 3))


@pytest.mark.parametrize("kind", ["rn", "vit"])
def test_heat_map_peaks_at_the_dominant_local_feature(kind, tiny_rn, tiny_vit):
    clf = _classifier({"rn": tiny_rn, "vit": tiny_vit}[kind])
    rows, cols = clf.bb.grid
    k, j = 1, 2
    for cell in [(0, cols - 1), (rows - 1, 0), (1, 0)]:  # off the diagonal: a transposed map moves the peak
        z = torch.zeros(1, clf.bb.embed_dim)  # the classifier scores by Eq. 8 alone: z plays no part
        view = explain_local(clf, z, _dominant(clf, k, j, cell), [[k]])[0][0]
        heat = view.prompts[j].heat  # (rows, cols)
        assert heat.shape == (rows, cols)
        peak = divmod(int(heat.argmax()), cols)
        assert peak == cell, (kind, cell, heat)
        assert view.prompts[j].peak > 1.5  # well above a uniform plan
        # stretched over a 96 x 128 image, the peak stays inside that cell's pixel box
        H, W = 96, 128
        big = upsample(heat, (H, W))
        y, x = divmod(int(big.argmax()), W)
        assert (y * rows // H, x * cols // W) == cell


def test_explain_scores_are_predicts_logits(tiny_rn):
    clf = _classifier(tiny_rn)
    gen = torch.Generator().manual_seed(3)
    Z = torch.randn(2, clf.bb.num_local, clf.bb.embed_dim, generator=gen)
    z = torch.randn(2, clf.bb.embed_dim, generator=gen)
    views = explain_local(clf, z, Z, [[0, 1, 2], [2]])
    logits = clf.logits_from_local(Z)  # (2, K): Eq. 8, and predict's scoring for a file of DUAL-PT alone
    assert_close(torch.tensor([v.score for v in views[0]]) * clf.matcher.logit_scale, logits[0], rtol=1e-4, atol=1e-4)
    assert_close(torch.tensor(views[1][0].score * clf.matcher.logit_scale), logits[1, 2], rtol=1e-4, atol=1e-4)
    for v in views[0]:
        assert sum(p.part for p in v.prompts) == pytest.approx(v.score, abs=1e-5)
        assert v.prob == pytest.approx(float(logits[0].softmax(-1)[v.index]), abs=1e-5)


# what a prompt file can keep (train/keep.py): DUAL-PT alone, DUAL-PT + w x prior, the prior alone (the guard's
# zero-shot or descriptions), and the default recipe's residual head over the blend (as trained)
KEPT = {
    "DUAL-PT alone": {"dual_weight": 1.0, "prior_weight": 0.0},
    "DUAL-PT + 2 x prior": {"dual_weight": 1.0, "prior_weight": 2.0},
    "prior alone": {"dual_weight": 0.0, "prior_weight": 1.0},
    "residual head": None,
}


def _kept(src: Path, dst: Path, weights: dict[str, float] | None) -> Path:
    """A copy of the prompt file ``src`` keeping another classifier: ``weights`` without the residual head, or
    the file as trained (None)."""
    tensors, meta = load_prompt_file(src)
    if weights is not None:
        tensors.pop("residual_weights")
        meta.update(weights, temperature=1.0, head=None)
    write_safetensors(dst, tensors, PROMPT_FORMAT, meta)
    return dst


@pytest.mark.parametrize("method", ["dualpt", "plot"])  # the methods explain draws; the others refuse (test_methods)
@pytest.mark.parametrize("kept", list(KEPT))
def test_explain_agrees_with_predict_on_every_image(method, kept, tiny_rn, tmp_path_factory, test_images, tmp_path):
    """explain's (and so the report's) prediction and probability are predict's, whatever the file keeps."""
    root, _ = trained_project(tmp_path_factory, tiny_rn, method)
    trained = root / "proj" / "prompts.safetensors"
    assert "residual_weights" in load_prompt_file(trained)[0]  # the default recipe: the head over the blend
    prompts = str(_kept(trained, tmp_path / "prompts.safetensors", KEPT[kept]))
    args = [str(test_images), "--prompt-file", prompts, "--json", "--device", "cpu", "--precision", "fp32"]
    predicted = runner.invoke(app, ["predict", *args])
    explained = runner.invoke(app, ["explain", *args])
    assert predicted.exit_code == 0 and explained.exit_code == 0, predicted.output + explained.output
    rows = {r["image"]: r for r in json.loads(predicted.stdout)}
    items = json.loads(explained.stdout)
    assert len(items) == len(rows) == 6
    for item in items:
        row = rows[item["image"]]
        assert (item["prediction"], item["classes"][0]["class"]) == (row["class"], row["class"])
        assert item["prob"] == pytest.approx(row["prob"], abs=1e-5)
        assert item["classes"][0]["prob"] == pytest.approx(row["prob"], abs=1e-5)


def test_nearest_phrase_is_the_most_similar_description(tiny_rn):
    clf = _classifier(tiny_rn)
    phrases = ["round edges", "a bright red colour", "stripes", "a long tail", "four legs"]
    index = PhraseIndex(clf, {"c1": phrases})
    _, _, sets = description_features(clf.bb, ["class 1"], [phrases])
    expected = [phrases[i] for i in (clf.W[1] @ sets[0].T).argmax(1).tolist()]
    assert index.nearest(1) == expected
    assert index.nearest(0) == [None] * 4  # no phrases for that class


def test_choose_classes():
    classes = [ClassEntry("red", "red"), ClassEntry("dark_grey", "dark grey"), ClassEntry("blue", "blue")]
    probs = torch.tensor([0.2, 0.5, 0.3])
    assert choose_classes(["top"], probs, classes) == [1]
    assert choose_classes(["top2", "red", "Dark Grey"], probs, classes) == [1, 2, 0]
    assert choose_classes(["dark_grey"], probs, classes) == [1]
    with pytest.raises(DataError, match="'green' is not a class"):
        choose_classes(["green"], probs, classes)


def test_picture_names_are_distinct():
    paths = [Path("a/red/000.png"), Path("a/blue/000.png"), Path("a/blue/001.png"), Path("x/red/000.jpg")]
    names = picture_names(paths)
    assert len(set(names)) == 4 and all(n.endswith(".png") for n in names)
    assert names[2] == "001.png" and names[1] == "blue_000.png"


def test_explained_picture_of_an_image(tiny_vit, tmp_path, monkeypatch):
    """Through the image path: the encoder's features are replaced by ones with a dominant cell."""
    clf = _classifier(tiny_vit)
    rows, cols = clf.bb.grid
    Z = _dominant(clf, 0, 3, (0, cols - 1))
    monkeypatch.setattr(explain_mod, "load_classifier", lambda *a, **k: clf)
    monkeypatch.setattr(clf.bb, "encode_images", lambda x: (Z.mean(1), Z))
    path = tmp_path / "img.png"
    make_image((200, 40, 40), size=80).save(path)
    (expl,) = list(explain_images(ExplainConfig(inputs=[str(path)], classes=["class 0"])))
    assert expl.grid == (rows, cols) and expl.view.size == (clf.bb.image_size, clf.bb.image_size)
    assert divmod(int(expl.classes[0].prompts[3].heat.argmax()), cols) == (0, cols - 1)
    assert png_size(explanation_png(expl)) == (1220, 290)  # 5 panels of 2.3 in + a colour bar x 1 row of 2.9 in


# ---------------------------------------------------------------------------------------------------------
# the command


def test_explain_command_writes_one_picture_per_image(prompts, test_images, tmp_path):
    out = tmp_path / "pics"
    result = runner.invoke(
        app,
        [
            "explain",
            str(test_images),
            "--prompt-file",
            prompts,
            "-o",
            str(out),
            "--classes",
            "top,green",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 6  # 2 images x 3 classes, stems collide across folders
    for p in pngs:
        assert png_size(p)[0] == 1220  # image + 4 prompts + colour bar
        assert png_size(p)[1] in (290, 580)  # one row (predicted green) or two


def test_explain_json_gives_the_plans(prompts, test_images):
    image = next((test_images / "red").iterdir())
    result = runner.invoke(
        app, ["explain", str(image), "--prompt-file", prompts, "--json", "--classes", "top2", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)
    assert item["grid"] == [3, 3] and item["error"] is None and len(item["classes"]) == 2
    assert item["prediction"] == item["classes"][0]["class"]
    for c in item["classes"]:
        assert len(c["prompts"]) == 4
        for p in c["prompts"]:
            assert sum(map(sum, p["plan"])) == pytest.approx(1.0, abs=1e-4)
            assert p["phrase"] is None  # no descriptions in this project
        assert sum(p["part"] for p in c["prompts"]) == pytest.approx(c["score"], abs=1e-4)
    assert not Path("explain").exists()  # --json alone writes no pictures


def test_explain_titles_name_the_nearest_phrase(prompts, test_images, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    shutil.copy(prompts, project / "prompts.safetensors")
    entries = [
        {
            "folder": c,
            "name": c,
            "phrases": [f"{c} colour", "a dark spot", "noise"],
            "status": "ok",
            "error": None,
            "provenance": {"provider": "test"},
        }
        for c in TRAINED_CLASSES
    ]
    (project / "descriptions.json").write_text(json.dumps({"format": DESCRIPTIONS_FORMAT, "classes": entries}))
    image = next((test_images / "blue").iterdir())
    result = runner.invoke(app, ["explain", str(image), "--project", str(project), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    phrases = [p["phrase"] for p in json.loads(result.stdout)[0]["classes"][0]["prompts"]]
    cls = json.loads(result.stdout)[0]["prediction"]
    assert all(p in (f"{cls} colour", "a dark spot", "noise") for p in phrases)


def test_explain_errors(prompts, test_images, tmp_path):
    image = str(next((test_images / "red").iterdir()))
    result = runner.invoke(app, ["explain", image, "--prompt-file", prompts, "--classes", "purple", "--device", "cpu"])
    assert result.exit_code == 2 and "'purple' is not a class" in result.output
    assert "Traceback" not in result.output
    bad = write_corrupt_image(tmp_path / "bad.png")
    out = tmp_path / "pics"
    result = runner.invoke(
        app, ["explain", image, str(bad), "--prompt-file", prompts, "-o", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 1
    assert "bad.png" in result.output and "1 of 2 image(s) could not be read" in result.output
    assert [p.name for p in out.glob("*.png")] == [Path(image).stem + ".png"]
    result = runner.invoke(app, ["explain", str(tmp_path / "missing.png"), "--prompt-file", prompts])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["explain", image, "--prompt-file", prompts, "-o", str(bad)])
    assert result.exit_code == 2 and "--output" in result.output and "is a file" in result.output
