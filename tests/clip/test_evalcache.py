"""The evaluation view's feature cache: cached features equal fresh ones, a second eval encodes nothing and
gives the same numbers, a partly cached or damaged cache is completed, bad images are reported in order."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch.testing import assert_close
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.clip.backbone import Backbone
from dualpt_cli.clip.evalcache import eval_features, eval_folder
from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.data.images import load_image
from imagegen import make_image_folder, write_corrupt_image

runner = CliRunner()


def _features(bb, paths, cache, batch_size=4):
    """{position: (z, Z)} and {position: error} over every batch eval_features yields."""
    feats, errors = {}, {}
    for batch in eval_features(bb, paths, cache, batch_size=batch_size, workers=0):
        errors.update(batch.errors)
        for k, i in enumerate(batch.indices):
            feats[i] = (batch.z[k], batch.Z[k])
    return feats, errors


def _counting(bb) -> list[int]:
    """Images bb encodes from now on, one entry per batch."""
    calls: list[int] = []
    original = bb.encode_images
    bb.encode_images = lambda x: calls.append(len(x)) or original(x)
    return calls


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cached_eval_features_equal_fresh_ones(tmp_path, tiny_rn, precision):
    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision=precision)
    paths = sorted(make_image_folder(tmp_path / "img", per_class=3).rglob("*.png"))
    bad = write_corrupt_image(tmp_path / "img" / "red" / "broken.jpg")
    paths.insert(2, bad)
    good = [p for p in paths if p != bad]
    z, Z = bb.encode_images(torch.stack([bb.eval_transform()(load_image(p)) for p in good[:4]]))  # one batch
    calls = _counting(bb)
    first, errors = _features(bb, paths, tmp_path / "cache")
    assert sorted(first) == [i for i, p in enumerate(paths) if p != bad] and list(errors) == [2]
    assert sum(calls) == len(good)
    fresh_positions = [paths.index(p) for p in good[:4]]
    assert_close(torch.stack([first[i][0] for i in fresh_positions]), z, rtol=0, atol=0)
    assert_close(torch.stack([first[i][1] for i in fresh_positions]), Z, rtol=0, atol=0)
    calls.clear()
    again, errors_again = _features(bb, paths, tmp_path / "cache")
    assert calls == [] and errors_again == errors  # the bad image is tried again (it may have been fixed)
    for i in first:  # read back exactly as they were encoded
        assert torch.equal(again[i][0], first[i][0]) and torch.equal(again[i][1], first[i][1])
    assert len(list(eval_folder(bb, tmp_path / "cache").glob("*.safetensors"))) == len(good)


def test_partly_cached_and_damaged_entries_are_completed(tmp_path, tiny_rn):
    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision="fp32")
    paths = sorted(make_image_folder(tmp_path / "img", per_class=3).rglob("*.png"))
    fresh, _ = _features(bb, paths, None)
    _features(bb, paths[::2], tmp_path / "cache")  # every other image cached (content-addressed: any folder)
    entries = sorted(eval_folder(bb, tmp_path / "cache").glob("*.safetensors"))
    entries[0].write_bytes(b"garbage")
    calls = _counting(bb)
    got, _ = _features(bb, paths, tmp_path / "cache")
    assert sum(calls) == len(paths) - len(paths[::2]) + 1  # the missing ones and the damaged one
    assert sorted(got) == list(range(len(paths)))
    for i in got:  # equal up to the batch each image was encoded in
        assert_close(got[i][0], fresh[i][0]) and assert_close(got[i][1], fresh[i][1])


def test_a_second_eval_encodes_nothing_and_gives_the_same_numbers(prompts, test_images, monkeypatch):
    calls: list[int] = []
    original = Backbone.encode_images
    monkeypatch.setattr(Backbone, "encode_images", lambda self, x: calls.append(len(x)) or original(self, x))
    args = ["eval", str(test_images), "--prompt-file", prompts, "--zero-shot", "--json", "--device", "cpu"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert sum(calls) == 6
    calls.clear()
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert calls == []
    assert json.loads(second.stdout) == json.loads(first.stdout)
    # the same test images in another folder (another compare cell, another project) are not encoded again
    shutil.copytree(test_images, test_images.parent / "copy")
    third = runner.invoke(app, [*args[:1], str(test_images.parent / "copy"), *args[2:]])
    assert third.exit_code == 0 and calls == []
