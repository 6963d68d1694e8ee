"""Issue 12's hostile session, the cases that attack clip: moved from tests/test_hostile.py.

Every case checks the exit code, a one-line error (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from clihelpers import invoke, one_line_error, tiny_train
from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.promptfile.io import PROMPT_FORMAT, read_safetensors, write_safetensors
from tiny_models import build_tiny_model

pytestmark = pytest.mark.usefixtures("fast_retries")
train = partial(tiny_train, project="proj")  # these cases train into ./proj


# ---------------------------------------------------------------------------------------------------------
# Medium: model checks


def _swap_image_tower(folder: Path, donor: Path) -> None:
    """Give ``folder``'s model the image tower of ``donor`` (same text tower)."""
    weights = load_file(str(folder / "open_clip_model.safetensors"))
    other = load_file(str(donor / "open_clip_model.safetensors"))
    weights.update({k: v for k, v in other.items() if k.startswith("visual.")})
    save_file(weights, str(folder / "open_clip_model.safetensors"))


def test_other_image_tower_is_refused(prompts, test_images, tmp_path):
    base = build_tiny_model("rn", tmp_path / "base", seed=0)  # the tiny_rn weights (same seed)
    donor = build_tiny_model("rn", tmp_path / "donor", seed=1)
    _swap_image_tower(base, donor)
    result = invoke("predict", test_images, "--prompt-file", prompts, "--model", f"local-dir:{base}", "--device", "cpu")
    one_line_error(result, "image tower")


def test_model_folder_changed_in_place(images, tmp_path):
    model = build_tiny_model("rn", tmp_path / "model", seed=0)
    assert train(f"local-dir:{model}").exit_code == 0
    _swap_image_tower(model, build_tiny_model("rn", tmp_path / "donor", seed=1))
    one_line_error(invoke("predict", images / "red", "--project", "proj", "--device", "cpu"), "image tower")


def test_prompt_file_without_fingerprint_still_loads(prompts, test_images, tmp_path):
    tensors, meta = read_safetensors(Path(prompts), PROMPT_FORMAT, "prompt file")
    assert meta.get("image_fingerprint")
    del meta["image_fingerprint"]
    write_safetensors(tmp_path / "old.safetensors", tensors, PROMPT_FORMAT, meta)
    result = invoke("predict", test_images, "--prompt-file", tmp_path / "old.safetensors", "--format", "jsonl")
    assert result.exit_code == 0, result.output


def test_pretrained_file_with_folder_model(images, tiny_rn, tmp_path):
    one_line_error(train(tiny_rn, "--pretrained", tmp_path / "nope.safetensors"), "nope.safetensors", "does not exist")
    other = build_tiny_model("rn", tmp_path / "other", seed=3) / "open_clip_model.safetensors"
    bb = load_backbone(ModelSpec(tiny_rn, str(other)), device="cpu", precision="fp32")
    assert torch.equal(bb.model.token_embedding.weight.cpu(), load_file(str(other))["token_embedding.weight"])
    result = invoke("info", "--model", tiny_rn, "--pretrained", other, "--device", "cpu", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["pretrained"] == str(other)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(n_prompts="four"), "'n_prompts'"),
        (lambda m: m.pop("class_names"), "'class_names'"),
        (lambda m: m.update(logit_scale="x"), "'logit_scale'"),
        (lambda m: m.update(class_folders=["a"]), "class folders"),
        (lambda m: m.update(alpha=float("nan")), "'alpha'"),
    ],
    ids=["n_prompts", "no-class-names", "logit-scale", "folders", "nan-alpha"],
)
def test_bad_metadata_is_refused(change, message, prompts, test_images, tmp_path):
    tensors, meta = read_safetensors(Path(prompts), PROMPT_FORMAT, "prompt file")
    change(meta)
    write_safetensors(tmp_path / "bad.safetensors", tensors, PROMPT_FORMAT, meta)
    one_line_error(invoke("predict", test_images, "--prompt-file", tmp_path / "bad.safetensors"), "metadata", message)
