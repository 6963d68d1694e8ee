"""Issue 12's hostile session, the cases that attack cli: moved from tests/test_hostile.py.

Every case checks the exit code, a one-line error (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import json
import re
from functools import partial

import pytest

from clihelpers import invoke, one_line_error, tiny_train
from dualpt_cli.clip.load import select_device
from dualpt_cli.errors import ModelLoadError
from dualpt_cli.promptfile.io import load_prompt_file
from imagegen import make_image_folder

pytestmark = pytest.mark.usefixtures("fast_retries")
train = partial(tiny_train, project="proj")  # these cases train into ./proj


# ---------------------------------------------------------------------------------------------------------
# Medium: project inside the image folder; option validation; fewer than two classes


def test_project_inside_image_folder(images, tiny_rn, tmp_path, monkeypatch):
    monkeypatch.chdir(images)
    for _ in range(2):  # the second run used to fail on the project folder created by the first
        result = train(tiny_rn, images=".", project="dualpt-project")
        assert result.exit_code == 0, result.output
        assert "inside the image folder" in result.stderr
    meta = load_prompt_file(images / "dualpt-project" / "prompts.safetensors")[1]
    assert sorted(meta["class_folders"]) == ["blue", "green", "red"]
    result = invoke("eval", ".", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dualpt"]["images"] == 12


@pytest.mark.parametrize(
    "args, words",
    [
        (["--text-chunk", "-1"], ["--text-chunk"]),
        (["--ctx-len", "100"], ["--ctx-len 100", "77-token"]),
    ],
)
def test_option_validation(args, words, images, tiny_rn):
    one_line_error(train(tiny_rn, *args), *words)


def test_device_meta_in_predict(prompts, test_images):
    """The CLI refuses it while parsing (click's usage error); the library (the Python API) says so too."""
    result = invoke("predict", test_images, "--prompt-file", prompts, "--device", "meta")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "'meta' is not one of" in " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    with pytest.raises(ModelLoadError, match="unknown device 'meta'"):
        select_device("meta")


def test_one_class_is_refused(tiny_rn, tmp_path):
    make_image_folder(tmp_path / "images", classes=["red"], per_class=3)
    one_line_error(train(tiny_rn), "at least two classes", "red")
    assert not (tmp_path / "proj" / "prompts.safetensors").exists()
