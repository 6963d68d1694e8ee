"""Tiny prompts trained once per model and shared by the predict and eval tests."""

from __future__ import annotations

from pathlib import Path

from dualpt_cli.train.loop import TrainConfig, run_training
from imagegen import make_image_folder

TRAINED_CLASSES = ["red", "green", "blue"]
_TRAINED: dict[tuple[str, str], tuple[Path, TrainConfig]] = {}


def tiny_config(images, model: str, project, *, epochs: int, **kw) -> TrainConfig:
    """The suite's tiny training settings (2 shots, 2 views, batches of 4, no weights, fp32 on the CPU) for
    ``epochs`` epochs; ``kw`` sets any other TrainConfig field or overrides these."""
    base = dict(
        images=str(images),
        project=str(project),
        shots=2,
        epochs=epochs,
        model=model,
        pretrained="",
        precision="fp32",
        device="cpu",
        aug_views=2,
        batch_size=4,
    )
    return TrainConfig(**{**base, **kw})


def trained_project(tmp_path_factory, model: str, method: str = "dualpt") -> tuple[Path, TrainConfig]:
    """Train tiny prompts once per model and method for all predict/eval tests: (folder with images/ and proj/,
    config)."""
    if (model, method) not in _TRAINED:
        root = tmp_path_factory.mktemp("trained")
        images = make_image_folder(root / "images", classes=TRAINED_CLASSES, per_class=3)
        # random tiny models collapse; the guard would keep zero-shot alone
        cfg = tiny_config(images, model, root / "proj", epochs=2, n_ctx=4, guard=False, method=method)
        run_training(cfg)
        _TRAINED[model, method] = (root, cfg)
    return _TRAINED[model, method]
