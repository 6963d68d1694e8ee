"""The prompt file's metadata (PromptMeta): round trip, old files, newer files, and that the stored prompt
template is the one used; plus the loading work done once per command (one prompt-file read, one learner)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.data.classes import ClassEntry
from dualpt_cli.errors import PromptFileError
from dualpt_cli.model.prompts import NAME_TEMPLATE, PLACEHOLDER, PromptLearner
from dualpt_cli.predict import classifier as classifier_mod
from dualpt_cli.predict import evaluate as evaluate_mod
from dualpt_cli.predict import stored as stored_mod
from dualpt_cli.predict.classifier import Classifier
from dualpt_cli.predict.evaluate import EvalConfig, evaluate_folder
from dualpt_cli.predict.stored import StoredContext
from dualpt_cli.promptfile.io import PROMPT_FORMAT, read_prompt_file, read_safetensors, write_safetensors
from dualpt_cli.promptfile.meta import META_VERSION, PromptMeta, version_for

runner = CliRunner()
NEW_FIELDS = ("format_version", "placeholder", "name_template")


def _rewrite(prompts: str, out: Path, edit) -> str:
    """A copy of the prompt file with its stored metadata changed by ``edit(meta)``."""
    tensors, meta = read_safetensors(Path(prompts), PROMPT_FORMAT, "prompt file")
    edit(meta)
    write_safetensors(out, tensors, PROMPT_FORMAT, meta)
    return str(out)


def test_to_dict_and_from_dict_round_trip(prompts):
    _, raw = read_safetensors(Path(prompts), PROMPT_FORMAT, "prompt file")
    meta = PromptMeta.from_dict(raw, prompts)
    assert meta.to_dict() == raw  # what train wrote is what is read, field for field
    assert PromptMeta.from_dict(meta.to_dict(), prompts) == meta
    # dualpt files without a head keep format 2 (an older dualpt reads them); other methods' files are 3; a file
    # with the residual head is 4 (META_VERSION): an older dualpt would score it without the head, so it refuses it
    # (5, META_VERSION, when its probabilities mix in the uniform distribution: an older dualpt would ignore it)
    mixed = raw["uniform_mix"] > 0
    assert raw["method"] == "dualpt" and raw["format_version"] == version_for("dualpt", head=True, mix=mixed)
    assert version_for("dualpt", head=True) == 4 and version_for("dualpt", head=True, mix=True) == 5 == META_VERSION
    assert version_for("dualpt") == 2 and version_for("coop") == 3
    assert raw["placeholder"] == PLACEHOLDER
    assert raw["name_template"] == NAME_TEMPLATE and raw["lambda"] == meta.lam
    later = PromptMeta.from_dict({**raw, "added_by_a_later_dualpt": [1, 2]}, prompts)  # unknown keys are kept
    assert later.to_dict()["added_by_a_later_dualpt"] == [1, 2]


def test_a_file_from_before_the_version_loads_with_the_old_defaults(prompts, tmp_path):
    def old(meta):
        for key in (
            *NEW_FIELDS,
            "method",
            "class_folders",
            "text_width",
            "num_local",
            "dual_weight",
            "prior_weight",
            "zero_shot_template",
            "image_fingerprint",
        ):
            meta.pop(key, None)

    path = _rewrite(prompts, tmp_path / "old.safetensors", old)
    _, meta = read_prompt_file(Path(path))
    assert (meta.format_version, meta.placeholder, meta.name_template) == (1, PLACEHOLDER, NAME_TEMPLATE)
    assert meta.dual_weight == 1.0 and meta.prior_weight == 0.0 and meta.class_folders is None
    assert meta.method == "dualpt"  # files from before --method
    entries = [ClassEntry("yellow", "yellow"), ClassEntry("red", "red")]
    then = Classifier.from_prompt_file(path, device="cpu", precision="fp32", classes=entries)
    now = Classifier.from_prompt_file(prompts, device="cpu", precision="fp32", classes=entries)
    assert_close(then.W, now.W)  # the new class is encoded as before


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(format_version=META_VERSION + 1), "was made by a newer dualpt"),
        (lambda m: m.pop("n_ctx"), "lacks metadata field 'n_ctx': it was made by an older dualpt"),
        (lambda m: m.update(name_template="{}."), "metadata field 'name_template' must be a template with {name}"),
        (lambda m: m.update(format_version="2"), "metadata field 'format_version' must be an integer"),
        (lambda m: m.update(method="maple"), "metadata field 'method' must be one of dualpt, codualpt"),
        (lambda m: m.update(uniform_mix=1.0), "metadata field 'uniform_mix' must be a number in [0, 1)"),
    ],
)
def test_newer_or_incomplete_metadata_is_one_clear_line(edit, message, prompts, test_images, tmp_path):
    path = _rewrite(prompts, tmp_path / "bad.safetensors", edit)
    with pytest.raises(PromptFileError, match="re-create it with dualpt train"):
        read_prompt_file(Path(path))
    result = runner.invoke(app, ["predict", str(test_images), "--prompt-file", path, "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_predict_applies_the_stored_uniform_share_and_reads_files_without_it(prompts, tmp_path):
    def share(mix):
        def edit(meta):
            meta.update(uniform_mix=mix, format_version=version_for("dualpt", head=True, mix=mix > 0))

        return edit

    def before(meta):  # a file from before the uniform share: format 4, no such key
        meta.pop("uniform_mix")
        meta["format_version"] = 4

    pixels = torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    probs = {}
    for name, edit in (("none", share(0.0)), ("mixed", share(0.4)), ("before", before)):
        path = _rewrite(prompts, tmp_path / f"{name}.safetensors", edit)
        probs[name] = Classifier.from_prompt_file(path, device="cpu", precision="fp32").predict_batch(pixels)
    assert_close(probs["before"], probs["none"])  # an older file predicts as it did
    assert_close(probs["mixed"], 0.6 * probs["none"] + 0.4 / probs["none"].shape[1])  # (1 - eps) p + eps / K
    assert torch.equal(probs["mixed"].argmax(-1), probs["none"].argmax(-1))  # top-1 unchanged


def test_new_classes_are_encoded_with_the_stored_template(prompts):
    tensors, meta = read_prompt_file(Path(prompts))
    clf = Classifier.from_prompt_file(prompts, device="cpu", precision="fp32")
    plain = StoredContext(clf.bb, tensors["ctx"], meta).encode(["yellow"])
    meta.name_template = "{name}, a colour."
    styled = StoredContext(clf.bb, tensors["ctx"], meta).encode(["yellow"])
    reference = PromptLearner(clf.bb, ["yellow"], meta.n_prompts, meta.n_ctx, class_texts=[["yellow, a colour."] * 4])
    with torch.no_grad():
        reference.ctx.copy_(tensors["ctx"])
        assert_close(styled, reference().float())
    assert not torch.allclose(plain, styled)


def test_one_prompt_learner_per_load(prompts, monkeypatch):
    """Checking the weights (a local-dir model) and encoding a new class share one learner."""
    built = []

    class Counting(PromptLearner):
        def __init__(self, *args, **kwargs):
            built.append(args[1])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(stored_mod, "PromptLearner", Counting)
    entries = [ClassEntry("yellow", "yellow"), ClassEntry("red", "red")]
    clf = Classifier.from_prompt_file(prompts, device="cpu", precision="fp32", classes=entries)
    assert clf.trained == [False, True] and len(built) == 1


def test_eval_reads_the_prompt_file_once(prompts, test_images, monkeypatch):
    reads = []

    def counting(path):
        reads.append(path)
        return read_prompt_file(path)

    monkeypatch.setattr(evaluate_mod, "read_prompt_file", counting)
    monkeypatch.setattr(classifier_mod, "read_prompt_file", counting)
    result = evaluate_folder(EvalConfig(images=str(test_images), prompts=prompts, device="cpu", precision="fp32"))
    assert result.results["dualpt"]["images"] == 6 and len(reads) == 1
