"""Issue 23's hostile inputs, the cases that attack core: moved from tests/test_hostile_inputs.py.

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clihelpers import CPU, invoke, one_line_error, tiny_train
from trained import TRAINED_CLASSES

pytestmark = pytest.mark.images(classes=TRAINED_CLASSES, per_class=2, seed=5)


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
    one_line_error(tiny_train(tiny_rn, "--config", "/dev/zero"), "/dev/zero", "not a regular file")
    assert not Path("dualpt-project/prompts.safetensors").exists()


def test_a_class_list_over_the_cap_is_refused(project, images, monkeypatch):
    from dualpt_cli.core import project as project_mod

    monkeypatch.setattr(project_mod, "TEXT_CAP", 1000)
    big = images.parent / "big.txt"
    big.write_text("".join(f"class{i}\n" for i in range(1000)))
    result = invoke("predict", next((images / "red").iterdir()), "--project", project, "--classes", big, *CPU)
    one_line_error(result, "big.txt", "MiB allowed")
