"""examples/shapes: the dataset script and the demo CLIP the README's first session uses."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open

from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.data.classes import parse_class_list
from dualpt_cli.predict.evaluate import ZeroShotClassifier

SHAPES = Path(__file__).resolve().parents[2] / "examples" / "shapes"
MODEL = SHAPES / "model"


def make_dataset(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SHAPES / "make_dataset.py"), str(out), *args], capture_output=True, text=True, timeout=120
    )


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}


def test_make_dataset_writes_seeded_image_folders(tmp_path):
    proc = make_dataset(tmp_path / "a", "--train", "3", "--test", "2")
    assert proc.returncode == 0, proc.stderr
    folders = [e.folder for e in parse_class_list(SHAPES / "classes.txt")]
    for split, n in (("train", 3), ("test", 2)):
        assert sorted(p.name for p in (tmp_path / "a" / split).iterdir()) == sorted(folders)
        for folder in folders:
            files = sorted((tmp_path / "a" / split / folder).glob("*.png"))
            assert len(files) == n
            assert Image.open(files[0]).size == (64, 64)
    assert make_dataset(tmp_path / "b", "--train", "3", "--test", "2").returncode == 0
    assert digests(tmp_path / "a") == digests(tmp_path / "b")  # same seed, same bytes
    train, test = digests(tmp_path / "a" / "train"), digests(tmp_path / "a" / "test")
    assert not set(train.values()) & set(test.values())  # test images are not training images


def test_make_dataset_rejects_a_class_outside_the_world(tmp_path):
    (tmp_path / "classes.txt").write_text("red_circle\nsparkly_unicorn\n")
    proc = make_dataset(tmp_path / "out", "--classes", str(tmp_path / "classes.txt"))
    assert proc.returncode != 0
    assert "sparkly_unicorn" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_model_is_stored_in_bf16_beside_its_config():
    assert (MODEL / "open_clip_config.json").is_file()
    with safe_open(MODEL / "open_clip_model.safetensors", "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes <= {"BF16", "I64"} and "BF16" in dtypes


def test_demo_model_loads_in_fp32_and_classifies_its_world(tmp_path):
    """Through dualpt's local-dir path; zero-shot on fresh images of the README's classes beats chance by far."""
    assert make_dataset(tmp_path / "data", "--train", "1", "--test", "10", "--seed", "7").returncode == 0
    bb = load_backbone(ModelSpec("local-dir:" + str(MODEL)), device="cpu", precision="fp32")
    assert {p.dtype for p in bb.model.parameters()} == {torch.float32}
    assert (bb.family, bb.grid, bb.embed_dim) == ("vit", (8, 8), 128)
    classes = parse_class_list(SHAPES / "classes.txt")
    transform = bb.eval_transform()
    images, labels = [], []
    for k, entry in enumerate(classes):
        for path in sorted((tmp_path / "data" / "test" / entry.folder).glob("*.png")):
            images.append(transform(Image.open(path).convert("RGB")))
            labels.append(k)
    z, local = bb.encode_images(torch.stack(images))  # (I, d), (I, 64, d)
    assert local.shape[1:] == (64, 128)
    pred = ZeroShotClassifier(bb, [c.name for c in classes]).logits_from_global(z).argmax(dim=1)
    accuracy = (pred == torch.tensor(labels)).float().mean().item()
    assert accuracy >= 0.7, f"zero-shot accuracy {accuracy:.0%} on the demo world (chance 17%)"
