"""One cell of ``dualpt compare``: train a method into its own project folder, evaluate it on the test images.

Every cell is a real ``dualpt train`` run (``TrainConfig.method`` = the cell's method) into
``<compare folder>/cells/<method>-<shots>shot-seed<seed>-<settings id>/`` (with a copy of the project's
descriptions.json; the settings id of :func:`grid.settings_id`, so a run with other settings never
overwrites a finished cell's prompts),
then ``dualpt eval`` of its prompt file on the test images. The feature cache is the user's, keyed by the
model, the crop scale, the seed and each file's content (``features.model_key``), so cells of the same seed
share the encoded views: a second method at the same shots and seed encodes nothing, and a larger shot count
encodes only the images it adds.

:func:`compare_all` redraws ``<project>/compare/compare.png`` with one panel per comparison of the project
(one dataset each): the layout of the paper's Fig. 3.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..clip.load import load_backbone
from ..clip.spec import ModelSpec
from ..core.project import Project, atomic_write_bytes, atomic_write_text
from ..data.classes import ClassEntry, class_entries
from ..data.coop import find_layout, load_coop_dataset, parse_dataset_spec
from ..data.descriptions import load_descriptions
from ..data.images import scan_image_folder
from ..data.stream import StreamProgress
from ..errors import DataError, ProjectError
from ..predict.evaluate import EvalConfig, evaluate_folder
from ..train.loop import Callbacks as TrainCallbacks
from ..train.loop import TrainConfig, run_training
from .grid import Cell, Row, settings_id
from .resultfile import ROW, read_summary


@dataclass
class CompareSpec:
    """What every cell of one comparison shares (the grid varies method, shots and seed)."""

    folder: Path  # the comparison's folder: compare.json, compare.png, cells/
    project: Project  # the user's project (its descriptions.json is copied into every cell)
    images: str | None = None  # training ImageFolder
    test: str | None = None  # test ImageFolder
    dataset: str | None = None  # coop:ROOT/NAME instead of both
    model: str = "RN50"
    pretrained: str = "openai"
    recipe: str = "default"
    epochs: int | None = None  # None: each method's schedule by shots
    device: str = "auto"
    precision: str = "auto"
    base_classes: str | None = None  # base-to-new: TrainConfig.base_classes; a cell's accuracy is then H

    def __post_init__(self) -> None:
        if self.dataset and (self.images or self.test):
            raise DataError("--dataset brings its own train and test splits; leave out IMAGES and --test")
        if not self.dataset and not (self.images and self.test):
            raise DataError("pass the training ImageFolder and --test TEST_IMAGES (or --dataset coop:ROOT/NAME)")
        if self.images and self.test and Path(self.images).resolve() == Path(self.test).resolve():
            raise DataError(f"--test {self.test} is the training folder; give held-out test images")

    def check(self, methods: list[str]) -> None:
        """Unusable data, an unknown method or a bad option is one error before any cell runs, not a grid of
        failed cells."""
        if self.dataset:
            load_coop_dataset(parse_dataset_spec(self.dataset))
        else:
            assert self.images and self.test  # __post_init__: both, without --dataset
            scan_image_folder(self.images)
            scan_image_folder(self.test)
        self.check_model()
        for method in methods:
            TrainConfig(
                images=self.images or "",
                dataset=self.dataset,
                method=method,
                model=self.model,
                recipe=self.recipe,
                epochs=self.epochs,
                base_classes=self.base_classes,
            )

    def check_model(self) -> None:
        """Load the CLIP once: a model that cannot load (weights offline, a wrong name) fails before any cell
        runs or anything is written, instead of failing every cell."""
        load_backbone(ModelSpec(self.model, self.pretrained), device="cpu", precision="fp32")

    def settings(self) -> dict[str, Any]:
        """Everything that changes a cell's numbers: cells of other settings are other cells (grid.settings_id)."""
        desc = self.project.descriptions
        return {
            "images": _resolved(self.images),
            "test": _resolved(self.test),
            "dataset": self.dataset,
            "base_classes": self.base_classes,
            "model": self.model,
            "pretrained": self.pretrained,
            "recipe": self.recipe,
            "epochs": self.epochs,
            "precision": self.precision,
            "descriptions": hashlib.sha256(desc.read_bytes()).hexdigest()[:16] if desc.is_file() else None,
        }

    def cell_folder(self, cell: Cell) -> Path:
        return self.folder / "cells" / f"{cell.method}-{cell.shots}shot-seed{cell.seed}-{settings_id(self.settings())}"


def _resolved(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def cell_runner(
    spec: CompareSpec,
    train_callbacks: Callable[[], TrainCallbacks] = TrainCallbacks,
    eval_progress: Callable[[], StreamProgress] = StreamProgress,
) -> Callable[[Cell], dict[str, Any]]:
    """``run_cell`` for :func:`compare.run_compare`: train the cell, evaluate it, return its numbers.

    ``train_callbacks()`` gives the training hooks of one cell (a context manager or not), ``eval_progress()``
    the progress of its evaluation.
    """

    def run_cell(cell: Cell) -> dict[str, Any]:
        folder = spec.cell_folder(cell)
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / "descriptions.json"
        if spec.project.descriptions.is_file():
            atomic_write_bytes(copy, spec.project.descriptions.read_bytes())
        else:
            copy.unlink(missing_ok=True)
        cfg = TrainConfig(
            images=spec.images or "",
            dataset=spec.dataset,
            project=str(folder),
            shots=cell.shots,
            seed=cell.seed,
            method=cell.method,
            model=spec.model,
            pretrained=spec.pretrained,
            recipe=spec.recipe,
            epochs=spec.epochs,
            device=spec.device,
            precision=spec.precision,
            base_classes=spec.base_classes,
        )
        cb = train_callbacks()
        with cb if isinstance(cb, contextlib.AbstractContextManager) else contextlib.nullcontext():
            trained = run_training(cfg, cb)
        assert trained is not None  # one process: it has the result
        listed = test_class_list(spec, folder) if spec.base_classes and not spec.dataset else None
        result = evaluate_folder(
            EvalConfig(
                images=spec.test,
                dataset=spec.dataset,
                project=str(folder),
                classes=listed,
                device=spec.device,
                precision=spec.precision,
            ),
            eval_progress(),
        )
        scores = result.results["dualpt"]
        out = {
            "accuracy": scores["top1"],
            "top5": scores["top5"],
            "test_images": scores["images"],
            "epochs": trained.epochs,
            "train_seconds": round(trained.seconds, 3),
            "kept": trained.guard.classifier if trained.guard else None,
            "folder": str(folder),
        }
        for key in ("base", "new"):
            if key in scores:
                out[key] = scores[key]["accuracy"]
        if scores.get("H") is not None:
            out["H"] = scores["H"]
        if spec.base_classes:  # base-to-new: compare H (the test images of every class score among all classes)
            if out.get("H") is None:
                raise DataError(
                    f"the test images of {spec.test or spec.dataset} have no new classes to give H; "
                    "test on every class of the training data"
                )
            out["top1"], out["accuracy"] = out["accuracy"], out["H"]
        return out

    return run_cell


def test_class_list(spec: CompareSpec, folder: Path) -> str:
    """classes.txt of every test class (names from the project's descriptions), so that eval scores the classes
    a base-to-new cell did not train as new ones (a dataset names its classes itself)."""
    known = [ClassEntry(c["folder"], c["name"]) for c in load_descriptions(spec.project) or []]
    assert spec.test is not None  # without --dataset
    entries = class_entries(list(scan_image_folder(spec.test)), known)
    path = folder / "test_classes.txt"
    atomic_write_text(path, "".join(f"{c.folder}: {c.name}\n" for c in entries))
    return str(path)


def compare_name(images: str | None, dataset: str | None) -> str:
    """The default name of a comparison: the dataset's (e.g. Caltech101) or the training folder's."""
    if dataset:
        return find_layout(parse_dataset_spec(dataset)).name
    return Path(images or "images").expanduser().resolve().name or "images"


def panels(compare_root: Path, warn: Callable[[str], None] = lambda message: None) -> dict[str, list[Row]]:
    """{panel title: its summary rows} of every ``<compare_root>/*/compare.json``, each titled by the comparison's
    name and what it trained and tested on; one that cannot be read is left out, and ``warn`` says which and why."""
    out: dict[str, list[Row]] = {}
    for path in sorted(compare_root.glob("*/compare.json")):
        try:
            summary, settings = read_summary(path)
            rows = [Row(**{k: v for k, v in row.items() if k in ROW}) for row in summary]
        except ProjectError as exc:
            warn(f"left out of {compare_root / 'compare.png'}: {exc}")
            continue
        if any(r.mean is not None for r in rows):
            out[panel_title(path.parent.name, settings)] = rows
    return out


def panel_title(name: str, settings: dict[str, Any]) -> str:
    """``name: trained on shapes/train, tested on shapes/test`` (or the dataset), as far as ``settings`` say."""
    if settings.get("dataset"):
        return f"{name}: {settings['dataset']}"
    if settings.get("images") and settings.get("test"):
        return f"{name}: trained on {_tail(settings['images'])}, tested on {_tail(settings['test'])}"
    return name


def write_pngs(
    spec: CompareSpec, rows: list[Row], name: str, warn: Callable[[str], None] = lambda message: None
) -> tuple[Path | None, Path | None]:
    """compare.png of this comparison, and the project's compare.png with a panel per comparison (Fig. 3)."""
    from ..pictures.plots import compare_png

    if not any(r.mean is not None for r in rows):
        return None, None
    metric = "H (base-to-new)" if spec.base_classes else "top-1 accuracy"
    task = {"dataset": spec.dataset, "images": spec.images, "test": spec.test}
    one = spec.folder / "compare.png"
    atomic_write_bytes(one, compare_png({panel_title(name, task): rows}, f"{metric} vs shots per class", metric))
    everything = panels(spec.folder.parent, warn)
    if len(everything) < 2:
        return one, None
    grid = spec.folder.parent / "compare.png"
    atomic_write_bytes(grid, compare_png(everything, title=f"{metric} vs shots per class", metric=metric))
    return one, grid


def _tail(path: str | None) -> str:
    """The last two parts of a folder's path (``shapes/train``), to name the images in a title."""
    return "/".join(Path(path or "").expanduser().resolve().parts[-2:])
