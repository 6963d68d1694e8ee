"""The paper's 11 datasets, read as CoOp lays them out (``--dataset coop:ROOT/NAME``).

CoOp's DATASETS.md (github.com/KaiyangZhou/CoOp) puts each dataset in ``$DATA/<folder>`` with fixed
train/val/test lists, ``split_zhou_<Name>.json``: ``{"train": [[relative image path, label, class name], ...],
"val": [...], "test": [...]}``, paths relative to the dataset's image folder. Two datasets have no such file:

- **FGVCAircraft**: ``variants.txt`` (class names in label order) and ``images_variant_{train,val,test}.txt``
  (``<image id> <class name>`` per line), images in ``images/<id>.jpg``;
- **ImageNet**: ``classnames.txt`` (``<wnid> <class name>`` per line) and ``images/train/<wnid>/*`` and
  ``images/val/<wnid>/*``; labels follow the sorted wnid folders, and, as in CoOp, the official validation
  set is the test set (and the validation split).

Few-shot sampling follows CoOp's procedure (Dassl's ``generate_fewshot_dataset``): one RNG seeded with the
seed, the classes in order of first appearance in the train list, ``k`` images drawn per class (all of them
when a class has fewer), then ``min(k, 4)`` per class from val the same way. CoOp caches its samples as
pickles (``split_fewshot/*.pkl``); dualpt never unpickles files, so it draws them itself.

Base-to-new (CoCoOp): :meth:`CoopDataset.subsample` keeps the first ``ceil(K/2)`` labels ("base") or the rest
("new"), relabelled from 0, as CoOp's ``subsample_classes``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.project import read_user_text
from ..errors import DataError
from .classes import ClassEntry, readable_name
from .images import is_image_file

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CoopLayout:
    """Where one of CoOp's datasets keeps its images and lists."""

    name: str  # CoOp's dataset name, e.g. "Caltech101"
    folder: str  # its folder under $DATA, e.g. "caltech-101"
    image_dir: str  # image folder inside it, the root of the split's relative paths ("" = the folder itself)
    split_file: str  # split_zhou_*.json, or the list file FGVCAircraft / ImageNet read instead
    template: str  # CoOp's hand-made zero-shot prompt


LAYOUTS = (
    CoopLayout("ImageNet", "imagenet", "images", "classnames.txt", "a photo of a {}."),
    CoopLayout("Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", "a photo of a {}."),
    CoopLayout("OxfordPets", "oxford_pets", "images", "split_zhou_OxfordPets.json", "a photo of a {}, a type of pet."),
    CoopLayout("StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json", "a photo of a {}."),
    CoopLayout(
        "Flowers102", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", "a photo of a {}, a type of flower."
    ),
    CoopLayout("Food101", "food-101", "images", "split_zhou_Food101.json", "a photo of {}, a type of food."),
    CoopLayout("FGVCAircraft", "fgvc_aircraft", "images", "variants.txt", "a photo of a {}, a type of aircraft."),
    CoopLayout("SUN397", "sun397", "SUN397", "split_zhou_SUN397.json", "a photo of a {}."),
    CoopLayout("DTD", "dtd", "images", "split_zhou_DescribableTextures.json", "{} texture."),
    CoopLayout("EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json", "a centered satellite photo of {}."),
    CoopLayout("UCF101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", "a photo of a person doing {}."),
)


@dataclass(frozen=True)
class Item:
    """One image of a split."""

    path: Path
    label: int


@dataclass(frozen=True)
class CoopDataset:
    """A CoOp dataset read from disk: classes in label order and the three splits."""

    layout: CoopLayout
    root: Path  # the dataset folder, ROOT/NAME
    classes: list[ClassEntry]  # classes[label]; folder = CoOp's class name (unique key), name = prompt name
    train: list[Item]
    val: list[Item]
    test: list[Item]

    @property
    def name(self) -> str:
        return self.layout.name

    def split(self, which: str) -> list[Item]:
        if which not in SPLITS:
            raise DataError(f"unknown split {which!r}; use one of {', '.join(SPLITS)}")
        items: list[Item] = getattr(self, which)
        return items

    def images(self, items: list[Item], check: bool = True) -> dict[str, list[Path]]:
        """{class folder key: image paths} in label order (the shape ``data.scan_image_folder`` returns).

        With ``check``, a listed image that is not on disk is a :class:`DataError` naming it.
        """
        if check:
            check_images(items, self.root)
        out: dict[str, list[Path]] = {c.folder: [] for c in self.classes}
        for item in items:
            out[self.classes[item.label].folder].append(item.path)
        return out

    def few_shot(self, shots: int, seed: int) -> tuple[list[Item], list[Item]]:
        """CoOp's few-shot sample: (``shots`` train images per class, ``min(shots, 4)`` val images per class)."""
        if shots < 1:
            raise DataError(f"--shots must be >= 1 for a CoOp dataset, got {shots}")
        rng = random.Random(seed)
        return sample_per_class(self.train, shots, rng), sample_per_class(self.val, min(shots, 4), rng)

    def subsample(self, which: str) -> CoopDataset:
        """The base (first ceil(K/2) labels) or new (the rest) classes, relabelled from 0 (CoCoOp's protocol)."""
        if which not in ("base", "new"):
            raise DataError(f"class subset {which!r} is unknown; use base or new")
        m = math.ceil(len(self.classes) / 2)
        keep = range(m) if which == "base" else range(m, len(self.classes))
        relabel = {old: new for new, old in enumerate(keep)}

        def pick(items: list[Item]) -> list[Item]:
            return [Item(i.path, relabel[i.label]) for i in items if i.label in relabel]

        return replace(
            self,
            classes=[self.classes[k] for k in keep],
            train=pick(self.train),
            val=pick(self.val),
            test=pick(self.test),
        )


def sample_per_class(items: list[Item], k: int, rng: random.Random) -> list[Item]:
    """``k`` items per label (all of a label's items when it has fewer), labels in order of first appearance."""
    by_label: dict[int, list[Item]] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    out: list[Item] = []
    for group in by_label.values():
        out.extend(rng.sample(group, k) if len(group) >= k else group)
    return out


def check_images(items: list[Item], root: Path) -> None:
    """A :class:`DataError` naming the first listed image that is not a file (and how many are missing)."""
    missing = [i.path for i in items if not i.path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(
            f"image {missing[0]} listed in the split of {root} does not exist{more}; download the "
            "dataset's images as CoOp's DATASETS.md describes"
        )


# ---------------------------------------------------------------------------------------------------------
# reading


def parse_dataset_spec(spec: str) -> Path:
    """``coop:ROOT/NAME`` -> the dataset folder; any other spec is a :class:`DataError`."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind != "coop" or not rest:
        raise DataError(
            f"--dataset {spec!r} is not understood; use coop:ROOT/NAME (a dataset laid out as CoOp's "
            "DATASETS.md describes, e.g. coop:~/data/caltech-101)"
        )
    return Path(rest).expanduser()


def find_layout(folder: Path) -> CoopLayout:
    """The layout of a dataset folder: by its name (CoOp's folder or dataset name), else by the list file in it."""
    key = folder.name.casefold()
    for layout in LAYOUTS:
        if key in (layout.folder.casefold(), layout.name.casefold()):
            return layout
    present = [layout for layout in LAYOUTS if (folder / layout.split_file).is_file()]
    if len(present) == 1:
        return present[0]
    names = ", ".join(f"{lay.name} ({lay.folder}/)" for lay in LAYOUTS)
    raise DataError(f"{folder} is not one of CoOp's datasets; name the folder as CoOp's DATASETS.md does: {names}")


def load_coop_dataset(path: str | Path) -> CoopDataset:
    """Read ``ROOT/NAME`` (a folder, or a ``coop:`` spec) into a :class:`CoopDataset`.

    Only the lists are read here; images are checked when a split is used (:meth:`CoopDataset.images`).
    """
    folder = parse_dataset_spec(path) if isinstance(path, str) and path.startswith("coop:") else Path(path)
    folder = folder.expanduser()
    if not folder.is_dir():
        raise DataError(
            f"dataset folder {folder} does not exist; pass coop:ROOT/NAME with NAME one of CoOp's "
            "dataset folders (e.g. caltech-101)"
        )
    layout = find_layout(folder)
    list_file = folder / layout.split_file
    if not list_file.is_file():
        raise DataError(f"{layout.name}: {list_file} does not exist; download it as CoOp's DATASETS.md describes")
    images = folder / layout.image_dir if layout.image_dir else folder
    if layout.name == "ImageNet":
        classes, splits = _read_imagenet(list_file, images)
    elif layout.name == "FGVCAircraft":
        classes, splits = _read_aircraft(list_file, folder, images)
    else:
        classes, splits = _read_split_json(list_file, images)
    untrained = sorted({*range(len(classes))} - {item.label for item in splits[0]})
    if untrained:  # else it would train as "k shots" with no image of that class
        missing = ", ".join(repr(classes[k].folder) for k in untrained[:5])
        raise DataError(f"{list_file}: class {missing} has no train images; download the lists again")
    if not splits[2]:
        raise DataError(f"{list_file}: the test split is empty; download the lists again")
    return CoopDataset(layout, folder, classes, *splits)


def _read_split_json(path: Path, images: Path) -> tuple[list[ClassEntry], tuple[list[Item], ...]]:
    try:
        data = json.loads(read_user_text(path, "split file"))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"split file {path} is not valid JSON ({exc}); download it again") from None
    if not isinstance(data, dict) or any(not isinstance(data.get(s), list) for s in SPLITS):
        raise DataError(f"split file {path} needs lists 'train', 'val' and 'test'; download it again")
    names: dict[int, str] = {}
    splits = []
    for which in SPLITS:
        items = []
        for n, row in enumerate(data[which]):
            if not (
                isinstance(row, list)
                and len(row) == 3
                and isinstance(row[0], str)
                and isinstance(row[2], str)
                and isinstance(row[1], int)
                and row[1] >= 0
            ):
                raise DataError(
                    f"split file {path}: {which}[{n}] is {str(row)[:80]}, not [image path, label, "
                    "class name]; download it again"
                )
            rel, label, name = row
            if names.setdefault(label, name) != name:
                raise DataError(f"split file {path}: label {label} is both {names[label]!r} and {name!r}")
            items.append(Item(images / rel, label))
        splits.append(items)
    return _entries(names, path), tuple(splits)


def _entries(names: dict[int, str], path: Path) -> list[ClassEntry]:
    """Class entries in label order; labels must be 0..K-1 and class names distinct."""
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: labels are not 0..{len(names) - 1}; download it again")
    seen: dict[str, int] = {}
    for label, name in names.items():
        if not name.strip():
            raise DataError(f"{path}: label {label} has an empty class name; download it again")
        if seen.setdefault(name, label) != label:
            raise DataError(f"{path}: class name {name!r} has labels {seen[name]} and {label}")
    return [ClassEntry(folder=names[k], name=readable_name(names[k])) for k in range(len(names))]


def _read_aircraft(variants: Path, folder: Path, images: Path) -> tuple[list[ClassEntry], tuple[list[Item], ...]]:
    names = [line.strip() for line in read_user_text(variants, "class list").splitlines() if line.strip()]
    label_of = {name: k for k, name in enumerate(names)}
    splits = []
    for which in SPLITS:
        path = folder / f"images_variant_{which}.txt"
        items = []
        for lineno, line in enumerate(read_user_text(path, "FGVCAircraft list").splitlines(), start=1):
            if not line.strip():
                continue
            image_id, _, name = line.strip().partition(" ")
            if name not in label_of:
                raise DataError(f"{path}:{lineno}: class {name!r} is not in {variants}")
            items.append(Item(images / f"{image_id}.jpg", label_of[name]))
        splits.append(items)
    return _entries(dict(enumerate(names)), variants), tuple(splits)


def _read_imagenet(classnames: Path, images: Path) -> tuple[list[ClassEntry], tuple[list[Item], ...]]:
    names: dict[str, str] = {}
    for line in read_user_text(classnames, "ImageNet class list").splitlines():
        wnid, _, name = line.strip().partition(" ")
        if wnid:
            names[wnid] = name.strip() or wnid
    parts = {}
    for which in ("train", "val"):
        split_dir = images / which
        if not split_dir.is_dir():
            raise DataError(
                f"ImageNet: {split_dir} does not exist; extract the {which} images there as CoOp's "
                "DATASETS.md describes"
            )
        parts[which] = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    wnids = [p.name for p in parts["train"]]
    unknown = [w for w in wnids if w not in names]
    if unknown:
        raise DataError(f"ImageNet: class folder {unknown[0]!r} is not in {classnames}")
    label_of = {w: k for k, w in enumerate(wnids)}
    items = {}
    for which, dirs in parts.items():
        items[which] = [
            Item(p, label_of[d.name])
            for d in dirs
            if d.name in label_of
            for p in sorted(d.iterdir())
            if is_image_file(p)
        ]
    classes = [ClassEntry(folder=w, name=names[w]) for w in wnids]
    return classes, (items["train"], items["val"], items["val"])
