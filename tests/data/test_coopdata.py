from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from dualpt_cli.data.coop import LAYOUTS, Item, load_coop_dataset, parse_dataset_spec, sample_per_class
from dualpt_cli.errors import DataError

CLASSES = ["Faces", "Leopards", "accordion", "air_plane", "wild cat"]


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded by the reader")


def fake_caltech(root: Path, per_class: dict[str, int] | None = None) -> Path:
    """caltech-101/ with 101_ObjectCategories/<class>/<n>.jpg and split_zhou_Caltech101.json (6/2/3 per class)."""
    folder = root / "caltech-101"
    split = {"train": [], "val": [], "test": []}
    for label, name in enumerate(CLASSES):
        for which, n in (per_class or {"train": 6, "val": 2, "test": 3}).items():
            for i in range(n):
                rel = f"{name}/{which}_{i:03d}.jpg"
                _touch(folder / "101_ObjectCategories" / rel)
                split[which].append([rel, label, name])
    (folder / "split_zhou_Caltech101.json").write_text(json.dumps(split))
    return folder


def test_reads_a_split_file_into_classes_and_images(tmp_path):
    ds = load_coop_dataset(f"coop:{fake_caltech(tmp_path)}")
    assert ds.name == "Caltech101" and ds.layout.template == "a photo of a {}."
    assert [c.folder for c in ds.classes] == CLASSES
    assert [c.name for c in ds.classes] == ["Faces", "Leopards", "accordion", "air plane", "wild cat"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, 15)
    images = ds.images(ds.test)
    assert list(images) == CLASSES and all(len(v) == 3 for v in images.values())
    assert images["accordion"][0] == ds.root / "101_ObjectCategories" / "accordion" / "test_000.jpg"


def test_few_shot_follows_coops_procedure_and_is_seeded(tmp_path):
    ds = load_coop_dataset(fake_caltech(tmp_path))
    train, val = ds.few_shot(4, seed=1)
    assert len(train) == 4 * 5 and len(val) == 2 * 5  # val: min(k, 4), here all 2 a class has
    assert {i.label for i in train} == set(range(5))
    assert all(i in ds.train for i in train)
    rng = random.Random(1)  # CoOp: one RNG seeded once, classes in order of first appearance, random.sample
    by_label: dict[int, list[Item]] = {}
    for item in ds.train:
        by_label.setdefault(item.label, []).append(item)
    assert train == [x for group in by_label.values() for x in rng.sample(group, 4)]
    assert ds.few_shot(4, seed=1) == (train, val)
    assert ds.few_shot(4, seed=2)[0] != train
    big, _ = ds.few_shot(16, seed=1)  # a class with fewer images gives all it has
    assert len(big) == 30


def test_sample_per_class_keeps_small_classes_whole():
    items = [Item(Path(f"{n}"), n % 2) for n in range(5)]  # label 0: 3 items, label 1: 2 items
    out = sample_per_class(items, 3, random.Random(0))
    assert sorted(i.label for i in out) == [0, 0, 0, 1, 1]


def test_base_and_new_halves(tmp_path):
    ds = load_coop_dataset(fake_caltech(tmp_path))
    base, new = ds.subsample("base"), ds.subsample("new")
    assert [c.folder for c in base.classes] == CLASSES[:3] and [c.folder for c in new.classes] == CLASSES[3:]
    assert {i.label for i in new.test} == {0, 1} and len(new.test) == 6
    assert new.images(new.test)["wild cat"] == ds.images(ds.test)["wild cat"]


def test_missing_image_is_one_clear_error(tmp_path):
    folder = fake_caltech(tmp_path)
    (folder / "101_ObjectCategories" / "Faces" / "test_001.jpg").unlink()
    (folder / "101_ObjectCategories" / "Faces" / "test_002.jpg").unlink()
    ds = load_coop_dataset(folder)
    ds.images(ds.train)  # the train split is whole
    with pytest.raises(DataError, match=r"image .*Faces/test_001\.jpg listed in the split .* \(and 1 more\)"):
        ds.images(ds.test)


def test_missing_split_file_is_one_clear_error(tmp_path):
    folder = fake_caltech(tmp_path)
    (folder / "split_zhou_Caltech101.json").unlink()
    with pytest.raises(DataError, match=r"Caltech101: .*split_zhou_Caltech101\.json does not exist; download it"):
        load_coop_dataset(folder)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"train": [], "val": []}), "needs lists 'train', 'val' and 'test'"),
        (json.dumps({"train": [["a.jpg", "0", "x"]], "val": [], "test": []}), r"train\[0\] is .* not \[image path"),
        (json.dumps({"train": [["a.jpg", 0, "x"], ["b.jpg", 0, "y"]], "val": [], "test": []}), "label 0 is both"),
        (json.dumps({"train": [["a.jpg", 1, "x"]], "val": [], "test": []}), "labels are not 0..0"),
    ],
)
def test_damaged_split_file(tmp_path, content, message):
    folder = tmp_path / "dtd"
    folder.mkdir()
    (folder / "split_zhou_DescribableTextures.json").write_text(content)
    with pytest.raises(DataError, match=message):
        load_coop_dataset(folder)


def test_unknown_folder_and_spec(tmp_path):
    (tmp_path / "my-data").mkdir()
    with pytest.raises(DataError, match="not one of CoOp's datasets"):
        load_coop_dataset(tmp_path / "my-data")
    with pytest.raises(DataError, match="does not exist"):
        load_coop_dataset(tmp_path / "eurosat")
    with pytest.raises(DataError, match="use coop:ROOT/NAME"):
        parse_dataset_spec("imagefolder:/x")


def test_folder_found_by_its_split_file_under_another_name(tmp_path):
    folder = fake_caltech(tmp_path).rename(tmp_path / "caltech")
    assert load_coop_dataset(folder).name == "Caltech101"


def test_fgvc_aircraft_lists(tmp_path):
    folder = tmp_path / "fgvc_aircraft"
    names = ["707-320", "A300B4", "Cessna 172"]
    (folder / "images").mkdir(parents=True)
    (folder / "variants.txt").write_text("\n".join(names) + "\n")
    n = 0
    for which in ("train", "val", "test"):
        lines = []
        for name in names:
            for _ in range(2):
                lines.append(f"{n:07d} {name}")
                _touch(folder / "images" / f"{n:07d}.jpg")
                n += 1
        (folder / f"images_variant_{which}.txt").write_text("\n".join(lines) + "\n")
    ds = load_coop_dataset(folder)
    assert [c.name for c in ds.classes] == names
    assert ds.images(ds.val)["Cessna 172"] == [folder / "images" / "0000010.jpg", folder / "images" / "0000011.jpg"]
    (folder / "images_variant_test.txt").write_text("0000099 Boeing 999\n")
    with pytest.raises(DataError, match="class 'Boeing 999' is not in"):
        load_coop_dataset(folder)


def test_imagenet_folders_and_classnames(tmp_path):
    folder = tmp_path / "imagenet"
    wnids = {"n01440764": "tench", "n01443537": "goldfish"}
    (folder).mkdir()
    (folder / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in wnids.items()))
    for which, count in (("train", 3), ("val", 2)):
        for w in wnids:
            for i in range(count):
                _touch(folder / "images" / which / w / f"{w}_{i}.JPEG")
    ds = load_coop_dataset(folder)
    assert [(c.folder, c.name) for c in ds.classes] == list(wnids.items())
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 4, 4)
    assert ds.test == ds.val  # CoOp: ImageNet's validation set is the test set
    assert ds.images(ds.few_shot(1, seed=3)[0])["n01443537"][0].parent.name == "n01443537"


def test_every_paper_dataset_has_a_layout():
    assert [lay.name for lay in LAYOUTS] == [
        "ImageNet",
        "Caltech101",
        "OxfordPets",
        "StanfordCars",
        "Flowers102",
        "Food101",
        "FGVCAircraft",
        "SUN397",
        "DTD",
        "EuroSAT",
        "UCF101",
    ]
