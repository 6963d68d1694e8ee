"""Issue 12's hostile session, the cases that attack data: moved from tests/test_hostile.py.

Every case checks the exit code, a one-line error (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import io
import json
import shutil
from functools import partial
from pathlib import Path

import pytest
from PIL import Image

from clihelpers import invoke, one_line_error, tiny_train
from dualpt_cli.data import images as data_mod
from imagegen import make_image_folder, write_corrupt_image

pytestmark = pytest.mark.usefixtures("fast_retries")
train = partial(tiny_train, project="proj")  # these cases train into ./proj


# ---------------------------------------------------------------------------------------------------------
# High 3: unreadable files are not drawn into the sample


def _truncated_png(path: Path) -> None:
    """A PNG whose header is fine but whose pixel data is cut off: passes the header check, fails to decode."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, "PNG")
    path.write_bytes(buf.getvalue()[:60])


def test_bad_files_are_replaced_in_the_sample(images, tiny_rn, tmp_path):
    for i in range(3):
        write_corrupt_image(images / "red" / f"bad_{i}.png")
    _truncated_png(images / "red" / "cut.png")
    bad = {"red/bad_0.png", "red/bad_1.png", "red/bad_2.png", "red/cut.png"}
    for seed in range(1, 7):
        result = train(tiny_rn, "--seed", seed)
        assert result.exit_code == 0, (seed, result.output)
        split = json.loads((tmp_path / "proj" / "split.json").read_text())
        assert len(split["train"]["red"]) == 1 and not bad & set(split["train"]["red"])
    result = train(tiny_rn, "--shots", "4", "--seed", "3", "--val-shots", "0")  # all 4 sampled go to training
    assert result.exit_code == 0, result.output
    split = json.loads((tmp_path / "proj" / "split.json").read_text())
    assert len(split["train"]["red"]) == 4 and not bad & set(split["train"]["red"])


def test_class_with_only_bad_files(tiny_rn, tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=2)
    for p in (images / "red").iterdir():
        write_corrupt_image(p)
    one_line_error(train(tiny_rn), "'red'", "decoded")
    assert not (tmp_path / "proj" / "prompts.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------
# High 5: one decoder, one behaviour (malformed EXIF)


def _bad_exif_jpeg(path: Path) -> None:
    """A JPEG whose EXIF block makes PIL's exif_transpose raise struct.error."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010E] = "hello world description"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "JPEG", exif=exif.tobytes())
    data = bytearray(buf.getvalue())
    data[data.find(b"Exif\x00\x00") + 6 + 11] = 0  # a tag number the writer cannot pack
    path.write_bytes(bytes(data))


def test_malformed_exif_is_skipped_everywhere(images, tiny_rn, tmp_path, prompts):
    _bad_exif_jpeg(images / "red" / "exif.jpg")
    result = train(tiny_rn, "--shots", "all")
    assert result.exit_code == 0, result.output
    assert "exif.jpg" in result.stderr and "EXIF" in result.stderr
    split = json.loads((tmp_path / "proj" / "split.json").read_text())
    assert "red/exif.jpg" not in split["train"]["red"] and len(split["train"]["red"]) == 4
    rows = invoke("predict", images / "red" / "exif.jpg", "--prompt-file", prompts, "--format", "jsonl")
    assert rows.exit_code == 1 and "EXIF" in json.loads(rows.stdout)["error"]


# ---------------------------------------------------------------------------------------------------------
# High 6: two folders, one prompt name


def test_duplicate_prompt_names_are_refused(images, tiny_rn, tmp_path):
    (images / "blue").rename(images / "blue_square")
    (tmp_path / "classes.txt").write_text("red: blue square\ngreen\n")
    assert invoke("describe", "classes.txt", "--provider", "none", "--project", "proj").exit_code == 0
    one_line_error(train(tiny_rn), "'red'", "'blue_square'", "blue square")
    assert not (tmp_path / "proj" / "prompts.safetensors").exists()


def test_case_insensitive_duplicate_folders(tiny_rn, tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=2)
    shutil.copytree(images / "red", images / "RED")
    one_line_error(train(tiny_rn), "'RED'", "'red'")


# ---------------------------------------------------------------------------------------------------------
# Low: class names, hidden folders, huge images, the describe report


@pytest.mark.parametrize(
    "line, why",
    [("a/b", "path separator"), ("..", "names a folder"), ("x" * 5000, "255 bytes"), (".hidden: hidden", "hidden")],
)
def test_impossible_folder_names(line, why, tmp_path):
    (tmp_path / "classes.txt").write_text(f"tiger\n{line}\n")
    one_line_error(invoke("describe", "classes.txt", "--provider", "none"), "classes.txt:2", why)
    assert not (tmp_path / "dualpt-project").exists()


def test_described_class_without_folder_is_reported(images, tiny_rn, tmp_path):
    (tmp_path / "classes.txt").write_text("red\ngreen\nblue\nzebra\n")
    assert invoke("describe", "classes.txt", "--provider", "none", "--project", "proj").exit_code == 0
    result = train(tiny_rn)
    assert result.exit_code == 0 and "zebra" in result.stderr and "no image folder" in result.stderr


def test_hidden_sub_folders_are_left_out_everywhere(images, tiny_rn, tmp_path):
    hidden = images / "red" / ".thumbnails"
    hidden.mkdir()
    Image.new("RGB", (64, 64), (0, 0, 0)).save(hidden / "thumb.png")
    result = train(tiny_rn, "--shots", "all")
    assert result.exit_code == 0, result.output
    split = json.loads((tmp_path / "proj" / "split.json").read_text())
    assert len(split["train"]["red"]) == 4 and not any(".thumbnails" in p for p in split["train"]["red"])
    result = invoke("eval", images, "--project", "proj", "--device", "cpu", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["dualpt"]["images"] == 12


def test_huge_images_have_a_limit(prompts, tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "MAX_PIXELS", 1000)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "big.png")
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "big.jpg")
    result = invoke(
        "predict",
        tmp_path / "big.png",
        tmp_path / "big.jpg",
        "--prompt-file",
        prompts,
        "--format",
        "jsonl",
        "--workers",
        "0",
    )
    png, jpg = (json.loads(ln) for ln in result.stdout.splitlines())
    assert result.exit_code == 1 and "megapixels" in png["error"]
    assert jpg["error"] is None  # a JPEG is decoded at a reduced scale instead
    assert data_mod.load_image(tmp_path / "big.jpg").size == (16, 16)


def test_describe_report_when_nothing_is_asked(fake, tmp_path):
    (tmp_path / "classes.txt").write_text("tiger\n")
    assert invoke("describe", "classes.txt", "--provider", "ollama", "--host", fake.url).exit_code == 0
    result = invoke("describe", "classes.txt", "--provider", "ollama", "--host", fake.url)
    assert result.exit_code == 0
    assert "(-)" not in result.stdout and "nothing was asked" in result.stdout
