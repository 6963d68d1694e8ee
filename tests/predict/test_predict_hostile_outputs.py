"""Issue 23's hostile outputs, the cases that attack predict: moved from tests/test_hostile_outputs.py.

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import os
import shutil

import pytest

from clihelpers import CPU, invoke, one_line_error, snapshot

# ---------------------------------------------------------------------------------------------------------
# 1. an output is never an input or a file the project owns


@pytest.mark.parametrize("target", ["prompts.safetensors", "run_config.json", "split.json"])
def test_predict_output_onto_a_project_file_is_refused(project, victim, target):
    before = snapshot(project)
    result = invoke("predict", victim, "--project", project, "-o", project / target, *CPU)
    one_line_error(result, "--output", "would overwrite", target)
    assert snapshot(project) == before


def test_predict_output_onto_the_prompt_file_it_reads_is_refused(project, victim, tmp_path):
    elsewhere = tmp_path / "elsewhere.safetensors"
    shutil.copy(project / "prompts.safetensors", elsewhere)
    before = elsewhere.read_bytes()
    result = invoke("predict", victim, "--prompt-file", elsewhere, "-o", elsewhere, *CPU)
    one_line_error(result, "would overwrite", "the prompt file")
    assert elsewhere.read_bytes() == before


def test_predict_output_onto_its_input_image_is_refused(project, victim):
    before = victim.read_bytes()
    result = invoke("predict", victim, "--project", project, "-o", victim, *CPU)
    one_line_error(result, "would overwrite", "an input image")
    assert victim.read_bytes() == before
    link = victim.with_name("hard.png")
    os.link(victim, link)  # the same file by another name
    one_line_error(invoke("predict", victim, "--project", project, "-o", link, *CPU), "would overwrite")
    assert victim.read_bytes() == before


def test_explain_into_the_folder_of_its_images_is_refused(project, victim):
    folder = victim.parent
    before = snapshot(folder)
    result = invoke("explain", folder, "-o", folder, "--project", project, *CPU)
    one_line_error(result, "--output", "would overwrite", "an input image")
    assert snapshot(folder) == before


def test_explain_into_another_folder_still_works(project, victim, tmp_path):
    result = invoke("explain", victim, "-o", tmp_path / "pics", "--project", project, *CPU)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pics" / f"{victim.stem}.png").is_file()


def test_report_output_onto_a_project_file_is_refused(project):
    before = snapshot(project)
    result = invoke("report", "--project", project, "-o", project / "prompts.safetensors", "--examples", 0)
    one_line_error(result, "would overwrite", "prompts.safetensors")
    assert snapshot(project) == before
