"""The Python API: train prompts and classify images from a script or a notebook (see docs/api.md).

    import dualpt_cli

    result = dualpt_cli.fit(dualpt_cli.TrainConfig(images="images", shots=8, project="my-project"))
    clf = dualpt_cli.Classifier.load("my-project")
    for p in clf.predict(["a.jpg", "b.png"], top_k=3):
        print(p.image, p.label, p.prob)

The commands use the same pieces: ``dualpt train`` calls :func:`train.run_training` (what :func:`fit` runs),
``dualpt predict`` scores with :class:`classifier.Classifier` (what :class:`Classifier` extends).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .core.project import resolve_project
from .data.classes import ClassEntry, parse_class_list
from .data.stream import ImageFiles, collate_with_errors
from .errors import DataError
from .predict.classifier import Classifier as _Scorer
from .predict.output import make_row
from .train.loop import Callbacks, TrainConfig, TrainResult, run_training

ImageInput = str | os.PathLike | Image.Image


@dataclass(frozen=True)
class Prediction:
    """The classes of one image, most likely first."""

    image: str  # the path as given, or "<image N>" for an in-memory image (N: its position in the input)
    label: str | None  # the most likely class (its readable name); None when the image could not be read
    prob: float | None  # its probability (softmax over all classes)
    top_k: list[tuple[str, float]]  # (class, probability) pairs, most likely first
    error: str | None = None  # why the image could not be read or preprocessed


class Classifier(_Scorer):
    """Trained prompts and their CLIP, ready to classify paths and PIL images."""

    @classmethod
    def load(
        cls,
        project_or_prompt_file: str | os.PathLike | None = None,
        *,
        classes: str | os.PathLike | Sequence[str] | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 64,
    ) -> Classifier:
        """Load a project folder's prompts.safetensors, or a prompt file; ``None``: the default project.

        ``classes``: a class-list file or a list of names to predict over instead of the trained classes
        (new names are encoded from the learned context, as ``--classes`` does).
        """
        if project_or_prompt_file is not None and not isinstance(project_or_prompt_file, (str, os.PathLike)):
            raise DataError(
                "Classifier.load takes a project folder or a prompt file path, "
                f"got {type(project_or_prompt_file).__name__}"
            )
        _count("batch_size", batch_size)
        target = Path(project_or_prompt_file) if project_or_prompt_file is not None else None
        if target is not None and (target.is_file() or target.suffix == ".safetensors"):
            path = target  # a prompt file
        else:
            path = resolve_project(target).prompts
        return cls.from_prompt_file(
            path, device=device, precision=precision, classes=_entries(classes), batch_size=batch_size
        )

    def predict(
        self, images: ImageInput | Iterable[ImageInput], top_k: int = 5, batch_size: int = 64
    ) -> list[Prediction]:
        """Classify one image or many (paths, PIL images, or a mix), in input order.

        An image that cannot be read gives a :class:`Prediction` with ``error`` set, not an exception.
        """
        _count("top_k", top_k)
        _count("batch_size", batch_size)
        items = [images] if isinstance(images, (str, os.PathLike, Image.Image)) else _image_list(images)
        decoded = ImageFiles(items, self.bb.eval_transform())  # (index, pixels or None, error or None)
        out: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            batch = collate_with_errors([decoded[i] for i in range(start, min(start + batch_size, len(items)))])
            probs = self.predict_batch(batch.pixels).cpu() if batch.pixels is not None else None  # (b, K)
            slot = {i: n for n, i in enumerate(batch.ok)}
            for i in batch.indices:
                name = f"<image {i}>" if isinstance(items[i], Image.Image) else str(items[i])
                row = make_row(
                    name,
                    probs[slot[i]] if probs is not None and i in slot else None,
                    self.class_names,
                    top_k,
                    batch.errors.get(i),
                )
                out.append(
                    Prediction(
                        image=name,
                        label=row["class"],
                        prob=row["prob"],
                        top_k=[(t["class"], t["prob"]) for t in row["top_k"]],
                        error=row["error"],
                    )
                )
        return out


def fit(config: TrainConfig, callbacks: Callbacks | None = None) -> TrainResult:
    """Train prompts as ``dualpt train`` does (same defaults, same files in the project); silent by default.

    ``callbacks`` (a :class:`train.Callbacks`) receives warnings, progress and per-epoch records.
    """
    result = run_training(config, callbacks)
    assert result is not None  # one process: it has the result
    return result


def _count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{name} must be a whole number >= 1, got {value!r}")


def _image_list(images: object) -> list[ImageInput]:
    """The images of an iterable of paths and PIL images; arrays, tensors and bytes are refused, not iterated."""
    if not isinstance(images, Iterable) or isinstance(images, (bytes, bytearray)) or hasattr(images, "shape"):
        raise DataError(
            f"images must be a path, a PIL image or a list of them, got {type(images).__name__}; for an array "
            "use PIL.Image.fromarray(array)"
        )
    items = list(images)
    for i, item in enumerate(items):
        if not isinstance(item, (str, os.PathLike, Image.Image)):
            raise DataError(f"image {i} is a {type(item).__name__}; give paths or PIL images")
    return items


def _entries(classes: str | os.PathLike | Sequence[str] | None) -> list[ClassEntry] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        return parse_class_list(classes)
    return [ClassEntry(folder=name, name=name) for name in classes]
