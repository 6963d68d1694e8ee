"""Issue 12's hostile session, the cases that attack train: moved from tests/test_hostile.py.

Every case checks the exit code, a one-line error (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clihelpers import invoke, one_line_error, tiny_train
from dualpt_cli.promptfile.io import PROMPT_FORMAT, read_safetensors, write_safetensors

pytestmark = pytest.mark.usefixtures("fast_retries")
train = partial(tiny_train, project="proj")  # these cases train into ./proj


# ---------------------------------------------------------------------------------------------------------
# High 2: non-finite options, diverging training, NaN prompt files


@pytest.mark.parametrize(
    "option, value", [("--lr", "inf"), ("--lr", "nan"), ("--alpha", "nan"), ("--lambda", "inf"), ("--beta", "nan")]
)
def test_non_finite_train_options(option, value, images, tiny_rn, tmp_path):
    one_line_error(train(tiny_rn, option, value), option, "finite")
    assert not (tmp_path / "proj").exists() or not (tmp_path / "proj" / "prompts.safetensors").exists()


def test_non_finite_describe_options(tmp_path):
    (tmp_path / "classes.txt").write_text("tiger\n")
    one_line_error(invoke("describe", "classes.txt", "--provider", "none", "--timeout", "inf"), "--timeout", "finite")
    result = invoke("describe", "classes.txt", "--provider", "none", "--temperature", "nan")  # refused by its range
    assert result.exit_code == 2 and "--temperature" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "dualpt-project" / "descriptions.json").exists()


def test_diverging_training_stops_and_keeps_the_good_prompt_file(images, tiny_rn, tmp_path):
    assert train(tiny_rn).exit_code == 0
    good = (tmp_path / "proj" / "prompts.safetensors").read_bytes()
    result = train(tiny_rn, "--lr", "1e30", "--epochs", "3")
    one_line_error(result, "diverged", "--lr")
    assert (tmp_path / "proj" / "prompts.safetensors").read_bytes() == good
    ckpt = load_file(str(tmp_path / "proj" / "checkpoint" / "state.safetensors"))
    assert all(bool(torch.isfinite(t).all()) for t in ckpt.values())  # the last good epoch, not a NaN one
    log = [json.loads(ln) for ln in (tmp_path / "proj" / "train_log.jsonl").read_text().splitlines()]
    assert all(rec["loss"] == rec["loss"] for rec in log)  # no NaN line


def test_nan_prompt_file_is_refused(prompts, test_images, tmp_path):
    tensors, meta = read_safetensors(Path(prompts), PROMPT_FORMAT, "prompt file")
    tensors["class_features"] = tensors["class_features"].clone()
    tensors["class_features"][0, 0, 0] = float("nan")
    write_safetensors(tmp_path / "nan.safetensors", tensors, PROMPT_FORMAT, meta)  # checksum is valid
    one_line_error(
        invoke("predict", test_images, "--prompt-file", tmp_path / "nan.safetensors", "--format", "jsonl"), "NaN"
    )
    one_line_error(invoke("eval", test_images, "--prompt-file", tmp_path / "nan.safetensors"), "NaN")
