"""Tiny prompts trained once per model and shared by the predict and eval tests."""

from __future__ import annotations

from pathlib import Path

from dualpt_cli.train.loop import TrainConfig, run_training
from imagegen import make_image_folder

TRAINED_CLASSES = ["red", "green", "blue"]
_TRAINED: dict[tuple[str, str], tuple[Path, TrainConfig]] = {}


def trained_project(tmp_path_factory, model: str, method: str = "dualpt") -> tuple[Path, TrainConfig]:
    """Train tiny prompts once per model and method for all predict/eval tests: (folder with images/ and proj/,
    config)."""
    if (model, method) not in _TRAINED:
        root = tmp_path_factory.mktemp("trained")
        images = make_image_folder(root / "images", classes=TRAINED_CLASSES, per_class=3)
        cfg = TrainConfig(
            images=str(images),
            project=str(root / "proj"),
            shots=2,
            epochs=2,
            model=model,
            pretrained="",
            precision="fp32",
            device="cpu",
            n_ctx=4,
            aug_views=2,
            batch_size=4,
            guard=False,
            method=method,
        )  # random tiny models collapse; the guard would keep zero-shot alone
        run_training(cfg)
        _TRAINED[model, method] = (root, cfg)
    return _TRAINED[model, method]
