"""dualpt_cli.Classifier: the same predictions as ``dualpt predict``, from paths and PIL images."""

from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

import dualpt_cli
from dualpt_cli.cli.app import app


def test_classifier_matches_the_predict_command(prompts, test_images):
    paths = sorted(str(p) for p in test_images.rglob("*.png"))
    clf = dualpt_cli.Classifier.load(prompts, device="cpu", precision="fp32")
    from_paths = clf.predict(paths, top_k=2, batch_size=3)
    from_pil = clf.predict([Image.open(p) for p in paths], top_k=2)
    rows = json.loads(
        CliRunner()
        .invoke(
            app,
            [
                "predict",
                *paths,
                "--prompt-file",
                prompts,
                "--json",
                "-k",
                "2",
                "--device",
                "cpu",
                "--precision",
                "fp32",
            ],
        )
        .stdout
    )
    assert [p.label for p in from_paths] == [r["class"] for r in rows] == [p.label for p in from_pil]
    assert [p.image for p in from_paths] == [r["image"] for r in rows]
    assert [p.prob for p in from_paths] == [r["prob"] for r in rows]
    assert from_pil[0].image == "<image 0>" and from_pil[0].error is None


def test_classifier_from_project_single_image_and_bad_image(prompts, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "prompts.safetensors").write_bytes(open(prompts, "rb").read())
    (tmp_path / "broken.png").write_bytes(b"not a png")
    clf = dualpt_cli.Classifier.load(project, device="cpu")
    one = clf.predict(Image.new("RGB", (40, 30), (200, 30, 30)))
    assert len(one) == 1 and one[0].label in clf.class_names
    bad = clf.predict([tmp_path / "broken.png"])[0]
    assert bad.label is None and bad.prob is None and "cannot decode" in bad.error


def test_classifier_over_other_classes(prompts):
    clf = dualpt_cli.Classifier.load(prompts, classes=["red", "a purple thing"], device="cpu")
    assert clf.class_names == ["red", "a purple thing"]
    assert clf.trained == [True, False]
