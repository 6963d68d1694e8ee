"""Where a run's labelled images come from: an ImageFolder, or one of the paper's datasets (``--dataset coop:``).

Training takes the class folders, the folder that split.json paths are relative to, and a sampler that draws
the training and held-out images; evaluation takes the test images per class and the zero-shot template.
An ImageFolder is sampled by :func:`data.few_shot_split`; a CoOp dataset by CoOp's own procedure
(:meth:`coopdata.CoopDataset.few_shot`: the seed's ``k`` train images per class and ``min(k, 4)`` from its val
split), held-out images always from the val split, test images from its test split.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .classes import ClassEntry
from .coop import CoopDataset, Item, load_coop_dataset, parse_dataset_spec, sample_per_class
from .images import few_shot_split, scan_image_folder

Sample = tuple[dict[str, list[Path]], dict[str, list[Path]], list[str]]  # (train, val, notes) per class folder


@dataclass
class TrainSource:
    root: Path  # split.json's paths are relative to it
    folders: dict[str, list[Path]]  # every training candidate per class folder key, in label order
    sample: Callable[[int, Callable[[Path], bool]], Sample]  # (val_shots, usable) -> (train, val, notes)
    auto_val: int | None = None  # held-out images per class when --val-shots is left to the recipe (None: by shots)
    classes: list[ClassEntry] | None = None  # the dataset's class names (None: readable folder names)


def train_source(
    images: str, dataset: str | None, shots: int | None, seed: int, exclude: Path | None = None
) -> TrainSource:
    """The training images of ``images`` (an ImageFolder) or ``dataset`` (``coop:ROOT/NAME``), exactly one."""
    if bool(images) == bool(dataset):
        raise DataError(
            "pass the ImageFolder to train on or --dataset coop:ROOT/NAME, not both"
            if images
            else "pass the ImageFolder to train on (or --dataset coop:ROOT/NAME)"
        )
    if not dataset:
        root = Path(images).expanduser().resolve()
        folders = scan_image_folder(root, exclude=exclude)
        return TrainSource(
            root, folders, lambda val_shots, usable: few_shot_split(folders, shots, seed, val_shots, usable)
        )
    ds = load_coop_dataset(parse_dataset_spec(dataset))
    train_items, val_items = ds.few_shot(shots, seed) if shots is not None else (ds.train, ds.val)

    def sample(val_shots: int, usable: Callable[[Path], bool]) -> Sample:
        val = val_items if val_shots == auto else sample_per_class(ds.val, val_shots, random.Random(seed))
        train = _usable(ds, train_items, usable, "training")
        return train, _usable(ds, val, usable, "held-out") if val_shots else {}, []

    auto = min(shots or 4, 4)  # CoOp's validation sample
    return TrainSource(ds.root, ds.images(ds.train, check=False), sample, auto_val=auto, classes=ds.classes)


def _usable(ds: CoopDataset, items: list[Item], usable: Callable[[Path], bool], what: str) -> dict[str, list[Path]]:
    """The listed images per class, without those ``usable`` rejects (CoOp's lists are fixed: no replacement)."""
    out = ds.images(items)
    for folder, paths in out.items():
        out[folder] = [p for p in paths if usable(p)]
        if not out[folder] and any(ds.classes[i.label].folder == folder for i in items):
            raise DataError(f"{ds.name}: no readable {what} image for class {folder!r} in {ds.root}")
    return out


def test_source(
    images: str | None, dataset: str | None, exclude: Path | None = None
) -> tuple[dict[str, list[Path]], str | None, list[ClassEntry]]:
    """(test images per class folder, the dataset's zero-shot template or None, its classes or []) of an
    ImageFolder or a dataset."""
    if bool(images) == bool(dataset):
        raise DataError(
            "pass the labelled test images or --dataset coop:ROOT/NAME, not both"
            if images
            else "pass the labelled test images (or --dataset coop:ROOT/NAME)"
        )
    if not dataset:
        assert images  # exactly one of the two (checked above)
        return scan_image_folder(images, exclude=exclude), None, []
    ds = load_coop_dataset(parse_dataset_spec(dataset))
    return ds.images(ds.test), ds.layout.template, ds.classes
