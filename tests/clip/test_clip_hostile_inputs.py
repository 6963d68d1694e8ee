"""Issue 23's hostile inputs, the cases that attack clip: moved from tests/test_hostile_inputs.py.

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clihelpers import one_line_error, tiny_train
from trained import TRAINED_CLASSES

pytestmark = pytest.mark.images(classes=TRAINED_CLASSES, per_class=2, seed=5)


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

    assert tiny_train(tiny_rn).exit_code == 0
    fresh = {entry: {k: t.clone() for k, t in load_file(entry).items()} for entry in _entries()}  # not mapped
    assert fresh
    for entry in fresh:
        _poison(entry, fill)
    result = tiny_train(tiny_rn)
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
    one_line_error(tiny_train(tiny_rn), "feature cache", "DUALPT_CACHE")
    assert not Path("dualpt-project/prompts.safetensors").exists()
