from __future__ import annotations

import pytest
from PIL import Image

from dualpt_cli.data.images import BadImage, few_shot_split, load_image, scan_image_folder
from dualpt_cli.errors import DataError
from imagegen import make_image_folder


def _save(path, image, **kw):
    image.save(path, **kw)
    return path


def test_modes_are_converted(tmp_path):
    cmyk = _save(tmp_path / "cmyk.jpg", Image.new("CMYK", (10, 8), (0, 255, 255, 0)))
    grey16 = _save(tmp_path / "g16.png", Image.new("I;16", (10, 8), 65535))
    rgba = _save(tmp_path / "rgba.png", Image.new("RGBA", (10, 8), (255, 0, 0, 0)))
    pal = Image.new("P", (10, 8), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal = _save(tmp_path / "p.png", pal, transparency=1)
    for path in (cmyk, grey16, rgba, pal):
        im = load_image(path)
        assert im.mode == "RGB" and im.size == (10, 8)
    assert load_image(grey16).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white background


def test_exif_rotation_is_applied(tmp_path):
    im = Image.new("RGB", (20, 10), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    path = _save(tmp_path / "rot.jpg", im, exif=exif)
    assert load_image(path).size == (10, 20)


@pytest.mark.parametrize(
    ("content", "reason"), [(b"", "empty file"), (b"not an image", "cannot decode"), (None, "cannot decode")]
)
def test_bad_files(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    if content is None:  # a truncated JPEG
        Image.new("RGB", (64, 64), "blue").save(path, quality=95)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        load_image(path)


def test_few_shot_split_is_deterministic_and_disjoint(tmp_path):
    folders = scan_image_folder(make_image_folder(tmp_path / "d", per_class=6))
    a, va, notes = few_shot_split(folders, 2, seed=3, val_shots=2)
    b, vb, _ = few_shot_split(folders, 2, seed=3, val_shots=2)
    c, _, _ = few_shot_split(folders, 2, seed=4, val_shots=2)
    assert a == b and va == vb and a != c and not notes
    for folder in folders:
        assert len(a[folder]) == 2 and len(va[folder]) == 2 and not set(a[folder]) & set(va[folder])
    everything, _, _ = few_shot_split(folders, None, seed=3)
    assert all(len(v) == 6 for v in everything.values())
    _, _, notes = few_shot_split(folders, 10, seed=3)
    assert len(notes) == 3 and "only 6" in notes[0]


def test_scan_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        scan_image_folder(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        scan_image_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="not enough for --val-shots"):
        few_shot_split(scan_image_folder(make_image_folder(tmp_path / "d", per_class=2)), 1, 0, val_shots=2)
