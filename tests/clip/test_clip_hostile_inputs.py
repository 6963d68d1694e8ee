"""Issue 23's hostile inputs, the cases that attack clip: moved from tests/test_hostile_inputs.py.

deep nesting, duplicate keys, bad run metadata, a bad run name found only after training).

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from clihelpers import CPU, invoke, one_line_error
from imagegen import make_image_folder
from trained import TRAINED_CLASSES


@pytest.fixture
def project(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained[0] / "proj", tmp_path / "proj"))


@pytest.fixture
def images(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images", classes=TRAINED_CLASSES, per_class=2, seed=5)


def train(tiny_rn, *args):
    small = ["--shots", "1", "--epochs", "1", "--aug-views", "1", "--batch-size", "4", "--ctx-len", "4"]
    return invoke("train", "images", "--model", tiny_rn, "--pretrained", "", *small, *CPU, *args)


# ---------------------------------------------------------------------------------------------------------
# 8, 9. the feature cache: changed entries are encoded again; an unusable cache location is one line


def _entries() -> list[Path]:
    return sorted(Path(os.environ["DUALPT_CACHE"]).rglob("*.safetensors"))


def _poison(entry: Path, fill: bytes) -> None:
    """Overwrite every tensor's data with ``fill`` repeated, keeping the header (and its checksums) intact."""
    raw = entry.read_bytes()
    start = 8 + int.from_bytes(raw[:8], "little")
    entry.write_bytes(raw[:start] + (fill * len(raw))[: len(raw) - start])


@pytest.mark.parametrize("fill", [b"\x00\x00\xc0\x7f", b"\x00"], ids=["nan", "zeros"])
def test_poisoned_cache_entries_are_encoded_again(images, tiny_rn, fill):
    from safetensors.torch import load_file

    assert train(tiny_rn).exit_code == 0
    fresh = {entry: {k: t.clone() for k, t in load_file(entry).items()} for entry in _entries()}  # not mapped
    assert fresh
    for entry in fresh:
        _poison(entry, fill)
    result = train(tiny_rn)
    assert result.exit_code == 0, result.output
    for entry, tensors in fresh.items():  # rewritten with what a fresh encoding gives
        again = load_file(entry)
        assert all(bool((again[k] == t).all()) for k, t in tensors.items())


@pytest.mark.parametrize("where", ["/dev/null", "file"])
def test_unusable_cache_location_is_one_line(images, tiny_rn, monkeypatch, where, tmp_path):
    if where == "file":
        (tmp_path / "cache.png").write_bytes(b"not a folder")
        where = str(tmp_path / "cache.png")
    monkeypatch.setenv("DUALPT_CACHE", where)
    one_line_error(train(tiny_rn), "feature cache", "DUALPT_CACHE")
    assert not Path("dualpt-project/prompts.safetensors").exists()
