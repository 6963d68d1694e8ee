"""The training set of a run: scan the ImageFolder, draw the few-shot split (and held-out images), record
it in ``split.json``, and encode (or load cached) features of the chosen views; plus the class descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..clip.backbone import Backbone
from ..clip.crops import DecodedImages
from ..clip.features import EVAL_VIEW, FeatureSet, encode_views
from ..core.distributed import SINGLE, Dist
from ..core.project import Project, atomic_write_json, read_json
from ..data.basenew import split_base_new
from ..data.classes import ClassEntry, class_entries, unmatched
from ..data.descriptions import load_descriptions, phrases_by_folder
from ..data.images import inside, looks_decodable
from ..data.source import train_source
from ..errors import ProjectError, first_names
from ..model.head import auto_val_shots
from .config import TrainConfig
from .hooks import Callbacks
from .parallel import on_main
from .schedule import epochs_for_shots


@dataclass
class TrainData:
    classes: list  # ClassEntry per label
    train: FeatureSet
    train_labels: torch.Tensor  # (I,)
    val: FeatureSet | None
    val_labels: torch.Tensor | None
    split: dict[str, Any]
    notes: list[str]
    descriptions: list[dict] | None  # descriptions.json entries, None without one (or with --context none)
    new_classes: list[ClassEntry] = field(default_factory=list)  # base-to-new: the classes held out (basenew.py)
    crops: DecodedImages | None = None  # --fresh-crops: the training images decoded, in train.paths order


def prepare_data(
    cfg: TrainConfig, project: Project, bb: Backbone, cb: Callbacks, dist: Dist = SINGLE, raw_view: bool = False
) -> TrainData:
    """Scan, sample, record the split, and encode (or load cached) features of the chosen images (``raw_view``:
    only the un-augmented view of each training image, for a method that fits on it: ``TrainMethod.raw_view``).

    Under torchrun every rank draws the same split and gets every feature; the ranks share the encoding
    (``encode_views(dist=...)``) and rank 0 alone writes ``split.json``."""
    source = train_source(cfg.images, cfg.dataset, cfg.shots, cfg.seed, exclude=project.root)
    root, folders = source.root, source.folders
    if not cfg.dataset and inside(project.root, root):
        cb.warn(f"the project folder {project.root} is inside the image folder; it is not a class")
    described = load_descriptions(project)  # also the readable class names of the user's class list
    stored = described if cfg.context != "none" else None  # --context none: the names, not the phrases
    known = [_entry(c) for c in described] if described else source.classes
    classes = class_entries(list(folders), known)
    missing = unmatched(list(folders), known)
    if missing:
        cb.warn(
            f"{len(missing)} described class(es) have no image folder in {root} and are not trained: "
            f"{first_names(missing)}"
        )
    new: list[ClassEntry] = []
    if cfg.base_classes is not None:  # base-to-new: the other folders are neither sampled nor encoded
        classes, new = split_base_new(classes, cfg.base_classes)
        folders = {c.folder: folders[c.folder] for c in classes}
        cb.info(
            f"base-to-new: training on {len(classes)} base classes; {len(new)} new classes held out "
            f"({first_names(c.folder for c in new)})"
        )
    rejected: dict[Path, str] = {}  # images found unusable; the sample is drawn again without them

    def usable(path: Path) -> bool:
        if path not in rejected and not looks_decodable(path):
            rejected[path] = "not a readable image"
            cb.warn(f"skipping {path}: not a readable image")
        return path not in rejected

    def gather(parts: dict[str, list[Path]], views: list[int], what: str) -> tuple[FeatureSet, torch.Tensor]:
        assert cfg.crop_scale is not None  # set by registry.resolve_recipe
        paths = [p for f in folders for p in parts.get(f, [])]
        label_of = {p: i for i, f in enumerate(folders) for p in parts.get(f, [])}
        fs = encode_views(
            bb,
            paths,
            views,
            project.cache_dir,
            aug_seed=cfg.seed,
            aug_scale=(cfg.crop_scale, 1.0),
            on_progress=cb.stage(f"encoding {what} images", len(paths)),
            dist=dist,
        )
        for path, reason in fs.bad:
            rejected[path] = reason
            cb.warn(f"skipping {path}: {reason}")
        return fs, torch.tensor([label_of[p] for p in fs.paths], dtype=torch.long)

    auto_val = cfg.val_shots is None
    val_shots = (
        (
            source.auto_val
            if source.auto_val is not None
            else auto_val_shots(cfg.shots, min(len(files) for files in folders.values()))
        )
        if auto_val
        else cfg.val_shots
    )
    assert val_shots is not None  # set by registry.resolve_recipe
    while True:  # a file that passes the header check but fails to decode is replaced by the next one drawn
        train, val, notes = source.sample(val_shots, usable)
        n_views = (cfg.epochs or epochs_for_shots(cfg.shots)) if cfg.fresh_views else cfg.aug_views
        # fresh crops are cropped in each step; LP-CLIP fits the un-augmented images
        views = [EVAL_VIEW] if cfg.fresh_crops or raw_view else list(range(n_views))
        train_fs, train_labels = gather(train, views, "training")
        val_fs = val_labels = None
        if val_shots:
            val_fs, val_labels = gather(val, [EVAL_VIEW], "validation")
        if not train_fs.bad and not (val_fs is not None and val_fs.bad):
            break
    train_fs.bad = list(rejected.items())
    if auto_val and val_shots and not cfg.dataset:
        short = [f for f in folders if len(train[f]) < (cfg.shots or 0) <= len(folders[f])]  # by the hold-out
        notes = [n for n in notes if not any(f"class {f!r} " in n for f in short)]  # said once, below
        cb.info(
            f"holding out {val_shots} image(s) per class to check the result against zero-shot CLIP"
            + (
                f"; {len(short)} class(es) train on fewer than {cfg.shots} (give --val-shots 0 to train on all)"
                if short
                else ""
            )
        )
    for note in notes:
        cb.warn(note)
    split = {
        "images": str(root),
        "seed": cfg.seed,
        "shots": cfg.shots,
        "val_shots": val_shots,
        "classes": [{"folder": c.folder, "name": c.name} for c in classes],
        "train": {f: [str(p.relative_to(root)) for p in train[f]] for f in folders},
        "val": {f: [str(p.relative_to(root)) for p in val.get(f, [])] for f in folders},
    }
    if cfg.dataset:
        split["dataset"] = cfg.dataset
    if cfg.base_classes is not None:
        split.update(base_classes=cfg.base_classes, new_classes=[{"folder": c.folder, "name": c.name} for c in new])
    on_main(dist, lambda: _record_split(cfg, project, split), "writing split.json")
    crops = DecodedImages(train_fs.paths) if cfg.fresh_crops else None
    return TrainData(classes, train_fs, train_labels, val_fs, val_labels, split, notes, stored, new, crops)


def _record_split(cfg: TrainConfig, project: Project, split: dict[str, Any]) -> None:
    if cfg.resume and project.split.is_file() and read_json(project.split, "few-shot split") != split:
        raise ProjectError(
            f"--resume: the images or class list changed since the checkpoint in {project.root}; start without --resume"
        )
    atomic_write_json(project.split, split)


def _entry(stored: dict) -> ClassEntry:
    return ClassEntry(folder=stored["folder"], name=stored["name"])


def class_phrases(data: TrainData) -> list[list[str]]:
    """Each class's description phrases, in class order ([] without descriptions)."""
    stored = phrases_by_folder(data.descriptions)
    return [stored.get(c.folder, []) for c in data.classes]
