"""Issue 23's hostile outputs, the cases that attack data: moved from tests/test_hostile_outputs.py.

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from clihelpers import CPU, invoke

# ---------------------------------------------------------------------------------------------------------
# 3. a name that exists is taken as given, not as a glob


def _shape(path: Path, color: str, star: bool) -> None:
    im = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(im)
    if star:
        draw.polygon([(32, 2), (40, 24), (62, 24), (44, 38), (52, 62), (32, 48), (12, 62), (20, 38), (2, 24)], color)
    else:
        draw.ellipse((8, 8, 56, 56), color)
    im.save(path)


def test_a_file_named_like_a_glob_is_that_file(project, tmp_path):
    (tmp_path / "gl").mkdir()
    _shape(tmp_path / "gl" / "a[1].png", "red", star=False)
    _shape(tmp_path / "gl" / "a1.png", "blue", star=True)
    result = invoke("predict", "gl/a[1].png", "--project", project, "--json", *CPU)
    assert result.exit_code == 0, result.output
    assert [row["image"] for row in json.loads(result.stdout)] == ["gl/a[1].png"]
    result = invoke("predict", "gl/a?.png", "--project", project, "--json", *CPU)  # no such name: a glob
    assert [row["image"] for row in json.loads(result.stdout)] == ["gl/a1.png"]
