"""Issue 23's hostile inputs, the cases that attack predict: moved from tests/test_hostile_inputs.py.

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from clihelpers import CPU, invoke, one_line_error, snapshot, tiny_train
from trained import TRAINED_CLASSES

pytestmark = pytest.mark.images(classes=TRAINED_CLASSES, per_class=2, seed=5)


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
    result = tiny_train(tiny_rn, "--shots", "all", "--project", "p2")
    assert result.exit_code == 0, result.output
    split = json.loads(Path("p2/split.json").read_bytes().decode("utf-8"))  # the names read back the same
    odd = [name for files in split["train"].values() for name in files if "\udcff" in name]
    assert len(odd) == len(TRAINED_CLASSES) and all((Path(split["images"]) / name).is_file() for name in odd)


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
    result = tiny_train(tiny_rn, "--project", project)
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
