"""Issue 23, medium items: hostile inputs (devices and pipes as text files, huge numbers, YAML alias bombs,
deep nesting, duplicate keys, bad run metadata, a bad run name found only after training).

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from dualpt_cli.core.project import resolve_project
from dualpt_cli.data.descriptions import load_descriptions
from imagegen import make_image_folder
from test_hostile_outputs import CPU, invoke, one_line_error, snapshot
from trained import TRAINED_CLASSES

DEEP = "[" * 100_000


@pytest.fixture
def project(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained[0] / "proj", tmp_path / "proj"))


@pytest.fixture
def images(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images", classes=TRAINED_CLASSES, per_class=2, seed=5)


def train(tiny_rn, *args):
    small = ["--shots", "1", "--epochs", "1", "--aug-views", "1", "--batch-size", "4", "--ctx-len", "4"]
    return invoke("train", "images", "--model", tiny_rn, "--pretrained", "", *small, *CPU, *args)


# ---------------------------------------------------------------------------------------------------------
# 7. --run-name is checked before training touches the project; so is a `runs` that is a file


def test_bad_run_name_is_refused_before_training(project, images, tiny_rn):
    before = snapshot(project)
    result = train(tiny_rn, "--project", project, "--run-name", "a/b")
    one_line_error(result, "--run-name", "a/b")
    assert snapshot(project) == before  # prompts, run_config and split untouched


def test_runs_that_is_a_file_is_refused_before_training(project, images, tiny_rn):
    (project / "runs").write_text("not a folder")
    before = snapshot(project)
    one_line_error(train(tiny_rn, "--project", project), "runs", "is a file")
    assert snapshot(project) == before


# ---------------------------------------------------------------------------------------------------------
# 14. special files as text inputs: refused before they are read


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_special_files_as_class_lists_are_refused(project, images, special, fifo):
    path = "/dev/zero" if special == "/dev/zero" else fifo
    image = next((images / "red").iterdir())
    result = invoke("predict", image, "--project", project, "--classes", path, *CPU)
    one_line_error(result, "class list", str(path), "not a regular file")
    result = invoke("describe", path, "--provider", "none")
    one_line_error(result, str(path), "not a regular file")
    result = invoke("describe", "--phrases", path, "--project", project)
    one_line_error(result, "phrases file", "not a regular file")


def test_special_files_as_prompt_file_or_config_are_refused(images, tiny_rn):
    image = next((images / "red").iterdir())
    one_line_error(invoke("predict", image, "--prompt-file", "/dev/zero", *CPU), "/dev/zero", "not a regular file")
    one_line_error(train(tiny_rn, "--config", "/dev/zero"), "/dev/zero", "not a regular file")
    assert not Path("dualpt-project/prompts.safetensors").exists()


def test_a_class_list_over_the_cap_is_refused(project, images, monkeypatch):
    from dualpt_cli.core import project as project_mod

    monkeypatch.setattr(project_mod, "TEXT_CAP", 1000)
    big = images.parent / "big.txt"
    big.write_text("".join(f"class{i}\n" for i in range(1000)))
    result = invoke("predict", next((images / "red").iterdir()), "--project", project, "--classes", big, *CPU)
    one_line_error(result, "big.txt", "MiB allowed")


# ---------------------------------------------------------------------------------------------------------
# 15. huge counts are refused when the options are checked, before anything is allocated


@pytest.mark.parametrize(
    "option, value",
    [("--aug-views", "1000000000"), ("--prompts", "1000000000"), ("--seed", "99999999999999999999")],
)
def test_huge_training_counts_are_refused(images, tiny_rn, option, value):
    result = train(tiny_rn, option, value)
    one_line_error(result, option, "must be at most")
    assert not Path("dualpt-project").exists()


def test_huge_predict_counts_are_refused(project, images):
    image = next((images / "red").iterdir())
    result = invoke("predict", image, "--project", project, "--workers", "1000000000", *CPU)
    one_line_error(result, "--workers", "must be at most")


# ---------------------------------------------------------------------------------------------------------
# 11, 12, 18. phrase files: alias bombs, deep nesting, duplicate keys, YAML's yes/no


@pytest.fixture
def classes(tmp_path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("tiger\nno\nyes\n")
    return path


def phrases(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _nothing_described() -> bool:
    return not Path("dualpt-project/descriptions.json").exists()


def test_yaml_alias_bomb_is_refused(classes, tmp_path):
    text = "a: &x " + "s" * 200_000 + "\ntiger: [" + ", ".join(["*x"] * 100) + "]\n"
    result = invoke("describe", classes, "--phrases", phrases(tmp_path, "bomb.yaml", text))
    one_line_error(result, "bomb.yaml", "expands to more than")
    assert _nothing_described()


@pytest.mark.parametrize("name", ["deep.json", "deep.yaml"])
def test_deeply_nested_phrase_file_is_refused(classes, tmp_path, name):
    result = invoke("describe", classes, "--phrases", phrases(tmp_path, name, DEEP))
    one_line_error(result, name)
    assert _nothing_described()


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("dup.json", '{"tiger": ["a"], "tiger": ["b"]}', ["'tiger' twice"]),
        ("dup.yaml", "tiger: [a]\ntiger: [b]\n", ["'tiger' twice"]),
        ("case.json", '{"tiger": ["a"], "TIGER": ["b"]}', ["'tiger' twice", "'TIGER'"]),
    ],
)
def test_duplicate_classes_in_a_phrase_file_are_refused(classes, tmp_path, name, text, words):
    result = invoke("describe", classes, "--phrases", phrases(tmp_path, name, text))
    one_line_error(result, name, *words)
    assert _nothing_described()


def test_yaml_yes_and_no_keys_are_class_names(classes, tmp_path):
    text = "no: [round ears]\nyes: [long tail]\ntiger: [stripes]\n"
    result = invoke("describe", classes, "--phrases", phrases(tmp_path, "yn.yaml", text))
    assert result.exit_code == 0, result.output
    stored = {e["folder"]: e["phrases"] for e in load_descriptions(resolve_project("dualpt-project"))}
    assert stored == {"tiger": ["stripes"], "no": ["round ears"], "yes": ["long tail"]}


# ---------------------------------------------------------------------------------------------------------
# 12, 13. run metadata and JSON files read back: a bad one is a blank or one line, never a traceback


def _run(project: Path, name: str, config: str, result: str = "{}", evaluation: str | None = None) -> None:
    folder = project / "runs" / name
    folder.mkdir(parents=True)
    (folder / "run_config.json").write_text(config)
    (folder / "result.json").write_text(result)
    if evaluation is not None:
        (folder / "eval.json").write_text(evaluation)


def test_runs_lists_runs_with_bad_metadata(project):
    good = json.dumps({"method": "dualpt", "shots": 2, "seed": 1, "epochs": 2, "beta": 0.1, "model": "m"})
    _run(project, "good", good, json.dumps({"train_accuracy": 0.5}), json.dumps({"dualpt": {"top1": 0.75}}))
    _run(project, "bad-eval", good, "{}", json.dumps({"dualpt": [1]}))
    _run(project, "bad-method", json.dumps({"method": ["x"], "shots": "lots", "beta": "x"}))
    _run(project, "deep", good, DEEP, DEEP)
    result = invoke("runs", "--project", project, "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["good"]["eval_top1"] == 0.75 and rows["good"]["train_accuracy"] == 0.5
    assert rows["bad-eval"]["eval_top1"] is None
    assert rows["bad-method"]["shots"] is None and rows["bad-method"]["method"].startswith("DUAL")
    assert invoke("runs", "--project", project).exit_code == 0  # the table too


def test_deep_descriptions_json_is_one_error(project, images):
    (project / "descriptions.json").write_text(DEEP)
    result = invoke("report", "--project", project, "--examples", 0)
    one_line_error(result, "descriptions.json", "nested too deeply")


# ---------------------------------------------------------------------------------------------------------
# 8, 9. the feature cache: changed entries are encoded again; an unusable cache location is one line


def _entries() -> list[Path]:
    return sorted(Path(os.environ["DUALPT_CACHE"]).rglob("*.safetensors"))


def _poison(entry: Path, fill: bytes) -> None:
    """Overwrite every tensor's data with ``fill`` repeated, keeping the header (and its checksums) intact."""
    raw = entry.read_bytes()
    start = 8 + int.from_bytes(raw[:8], "little")
    entry.write_bytes(raw[:start] + (fill * len(raw))[: len(raw) - start])


@pytest.mark.parametrize("fill", [b"\x00\x00\xc0\x7f", b"\x00"], ids=["nan", "zeros"])
def test_poisoned_cache_entries_are_encoded_again(images, tiny_rn, fill):
    from safetensors.torch import load_file

    assert train(tiny_rn).exit_code == 0
    fresh = {entry: {k: t.clone() for k, t in load_file(entry).items()} for entry in _entries()}  # not mapped
    assert fresh
    for entry in fresh:
        _poison(entry, fill)
    result = train(tiny_rn)
    assert result.exit_code == 0, result.output
    for entry, tensors in fresh.items():  # rewritten with what a fresh encoding gives
        again = load_file(entry)
        assert all(bool((again[k] == t).all()) for k, t in tensors.items())


@pytest.mark.parametrize("where", ["/dev/null", "file"])
def test_unusable_cache_location_is_one_line(images, tiny_rn, monkeypatch, where, tmp_path):
    if where == "file":
        (tmp_path / "cache.png").write_bytes(b"not a folder")
        where = str(tmp_path / "cache.png")
    monkeypatch.setenv("DUALPT_CACHE", where)
    one_line_error(train(tiny_rn), "feature cache", "DUALPT_CACHE")
    assert not Path("dualpt-project/prompts.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------
# 10. file names that are not UTF-8: written as \xNN escapes, the same way in every output


@pytest.fixture
def odd_names(images) -> Path:
    """The test images with one file per class renamed to a name that is not UTF-8 (byte 0xFF)."""
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        first = sorted(folder.iterdir())[0]
        os.rename(os.fsencode(first), os.fsencode(folder) + b"/\xff" + os.fsencode(first.name))
    return images


def test_predict_writes_non_utf8_names_escaped(project, odd_names):
    result = invoke("predict", odd_names, "--project", project, "--json", *CPU)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout_bytes.decode("utf-8"))  # strict UTF-8: no raw 0xFF byte
    assert sum("\\xff" in row["image"] for row in rows) == len(TRAINED_CLASSES)
    result = invoke("predict", odd_names, "--project", project, "-o", "rows.csv", *CPU)
    assert result.exit_code == 0, result.output
    assert Path("rows.csv").read_bytes().decode("utf-8").count("\\xff") == len(TRAINED_CLASSES)


def test_eval_plot_and_train_all_shots_with_non_utf8_names(project, odd_names, tiny_rn):
    result = invoke("eval", odd_names, "--project", project, "--plot", "ev", *CPU)
    assert result.exit_code == 0, result.output
    json.loads(Path("ev/eval.json").read_bytes().decode("utf-8"))
    result = train(tiny_rn, "--shots", "all", "--project", "p2")
    assert result.exit_code == 0, result.output
    split = json.loads(Path("p2/split.json").read_bytes().decode("utf-8"))  # the names read back the same
    odd = [name for files in split["train"].values() for name in files if "\udcff" in name]
    assert len(odd) == len(TRAINED_CLASSES) and all((Path(split["images"]) / name).is_file() for name in odd)


# ---------------------------------------------------------------------------------------------------------
# 17. the Python API with wrong types: one DualptError, never a row per byte or a bare TypeError


@pytest.fixture(scope="module")
def clf(trained):
    from dualpt_cli.api import Classifier

    return Classifier.load(trained[0] / "proj", device="cpu", precision="fp32")


@pytest.mark.parametrize(
    "images, kwargs, words",
    [
        ("numpy", {}, "ndarray"),
        ("tensor", {}, "Tensor"),
        (b"\x89PNG", {}, "bytes"),
        ([5], {}, "image 0 is a int"),
        ("a.png", {"batch_size": -1}, "batch_size"),
        ("a.png", {"batch_size": 0}, "batch_size"),
        ("a.png", {"top_k": 0}, "top_k"),
        ("a.png", {"top_k": -1}, "top_k"),
    ],
)
def test_api_predict_refuses_wrong_types(clf, images, kwargs, words):
    import numpy as np
    import torch

    from dualpt_cli.errors import DualptError

    if images == "numpy":
        images = np.zeros((4, 8, 8, 3), np.uint8)
    elif images == "tensor":
        images = torch.zeros(4, 3, 8, 8)
    with pytest.raises(DualptError, match=words):
        clf.predict(images, **kwargs)


def test_api_load_names_the_file_it_was_given(tmp_path):
    from dualpt_cli.api import Classifier
    from dualpt_cli.errors import DualptError

    with pytest.raises(DualptError, match=r"nope\.safetensors does not exist") as info:
        Classifier.load(tmp_path / "nope.safetensors", device="cpu")
    assert "nope.safetensors/prompts.safetensors" not in str(info.value)
    with pytest.raises(DualptError, match="project folder or a prompt file path, got int"):
        Classifier.load(5)


# ---------------------------------------------------------------------------------------------------------
# 16. CoOp split files: a class with no train rows, an empty class name, an empty test split


def _caltech(tmp_path: Path, change) -> Path:
    from test_coopdata import fake_caltech

    folder = fake_caltech(tmp_path / "data")
    split_file = folder / "split_zhou_Caltech101.json"
    split = json.loads(split_file.read_text())
    change(split)
    split_file.write_text(json.dumps(split))
    return folder


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda s: s.update(train=[r for r in s["train"] if r[1] != 2]), ["'accordion'", "no train images"]),
        (lambda s: [r.__setitem__(2, "") for part in s.values() for r in part if r[1] == 0], ["empty class name"]),
        (lambda s: s.update(test=[]), ["test split is empty"]),
    ],
)
def test_broken_coop_splits_are_refused_before_training(tmp_path, tiny_rn, change, words):
    folder = _caltech(tmp_path, change)
    result = invoke("train", "--dataset", f"coop:{folder}", "--model", tiny_rn, "--pretrained", "", *CPU)
    one_line_error(result, "split_zhou_Caltech101.json", *words)
    assert not Path("dualpt-project/prompts.safetensors").exists()


def test_phrase_file_counts_on_a_fresh_project(classes, tmp_path):
    text = '{"tiger": ["stripes"], "no": ""}'  # "no": nothing left once parsed
    result = invoke("describe", classes, "--phrases", phrases(tmp_path, "some.json", text))
    assert result.exit_code == 0, result.output
    assert "1 described, 0 kept from earlier runs, 2 without phrases" in " ".join(result.stdout.split())
    assert "(kept)" not in result.stdout


# ---------------------------------------------------------------------------------------------------------
# low: images that are not regular files, topN below 1, .gif in folders, unreadable folders, runs outside


@pytest.mark.parametrize("special", ["device", "pipe"])
def test_a_device_or_pipe_named_as_an_image_says_what_it_is(project, images, tmp_path, special):
    """A symlink to /dev/zero or a FIFO given to predict used to be an "empty file" row."""
    path = tmp_path / f"{special}.png"
    os.symlink("/dev/zero", path) if special == "device" else os.mkfifo(path)
    result = invoke("predict", path, "--project", project, *CPU)
    one_line_error(result, str(path), f"is a {special}, not a regular file")
    assert result.stdout == ""
    glob = invoke("predict", f"{tmp_path}/{special}.p?g", images / "red", "--project", project, "--json", *CPU)
    assert glob.exit_code == 1 and "Traceback" not in glob.output  # one row fails, the others are classified
    rows = {Path(r["image"]).name: r for r in json.loads(glob.stdout)}
    assert rows[path.name]["error"] == f"a {special}, not a regular file; pass an image file"
    assert sum(r["error"] is None for r in rows.values()) == 2


@pytest.mark.parametrize("value", ["top0", "top-1", "TOP0", "top-0"])
def test_explain_top0_is_refused(project, images, tmp_path, value):
    image = next((images / "red").iterdir())
    result = invoke("explain", image, "--classes", value, "-o", tmp_path / "pics", "--project", project, *CPU)
    one_line_error(result, "--classes", repr(value), "1 or more", "top3")
    assert not (tmp_path / "pics").exists()


def test_gif_is_read_in_folders_as_when_named(project, images, tmp_path):
    """One list of extensions: a folder scan used to skip .gif files that predict read when named."""
    from PIL import Image

    gif = images / "red" / "extra.gif"
    Image.open(next((images / "red").iterdir())).convert("P").save(gif)
    result = invoke("predict", images, "--project", project, "--json", *CPU)
    assert result.exit_code == 0, result.output
    assert str(gif) in [r["image"] for r in json.loads(result.stdout)]
    odd = shutil.copy(gif, tmp_path / "extra.xyz")  # not an image name: refused as a folder scan skips it
    one_line_error(invoke("predict", odd, "--project", project, *CPU), "extra.xyz", ".gif", "rename it")


@pytest.mark.parametrize("how", ["listing", "chmod"])
def test_an_unreadable_class_folder_is_named(project, images, monkeypatch, how):
    """It used to be "no images" (a folder scan passed over the PermissionError)."""
    red = images / "red"
    if how == "chmod":
        red.chmod(0)
        if os.access(red, os.R_OK):  # root reads anyway
            red.chmod(0o755)
            pytest.skip("chmod 000 does not deny reads to this user (root)")
    else:
        scandir = os.scandir

        def denied(path="."):
            if Path(os.fsdecode(path)) == red:
                raise PermissionError(13, "Permission denied", os.fsdecode(path))
            return scandir(path)

        monkeypatch.setattr(os, "scandir", denied)
    try:
        for command in (["predict", images], ["eval", images]):
            result = invoke(*command, "--project", project, *CPU)
            one_line_error(result, f"cannot read folder {red}", "Permission denied", "permissions")
    finally:
        red.chmod(0o755)


def test_runs_symlinked_outside_the_project_is_refused(project, images, tiny_rn, tmp_path):
    """A `runs` link out of the project was written through without a word."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.rmtree(project / "runs", ignore_errors=True)
    (project / "runs").symlink_to(outside)
    before = snapshot(project)
    result = train(tiny_rn, "--project", project)
    one_line_error(result, str(project / "runs"), "symbolic link", str(outside), "outside the project")
    assert snapshot(project) == before and list(outside.iterdir()) == []


def test_eval_does_not_write_through_a_runs_link_outside_the_project(project, images, tmp_path):
    outside = tmp_path / "elsewhere"
    (outside / "r1").mkdir(parents=True)
    shutil.copy(project / "prompts.safetensors", outside / "r1")
    (outside / "r1" / "result.json").write_text("{}")
    (outside / "current").write_text("r1\n")
    shutil.rmtree(project / "runs", ignore_errors=True)
    (project / "runs").symlink_to(outside)
    result = invoke("eval", images, "--project", project, "--json", *CPU)
    assert result.exit_code == 0, result.output
    assert "not kept with its run" in result.stderr and "outside the project" in " ".join(result.stderr.split())
    assert json.loads(result.stdout)["dualpt"]["images"] == 6 and not (outside / "r1" / "eval.json").exists()
