"""The per-user feature cache: where it is, shared by projects, safe with concurrent writers, info and clear."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.clip.features import _read_cache, _write_cache
from dualpt_cli.core.project import resolve_project, user_cache_dir
from dualpt_cli.train.loop import run_training
from imagegen import make_image_folder
from trained import tiny_config

runner = CliRunner()


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("DUALPT_CACHE", str(tmp_path / "mine"))
    assert user_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("DUALPT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "dualpt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == Path.home() / ".cache" / "dualpt"
    assert resolve_project("a").cache_dir == resolve_project("b").cache_dir == user_cache_dir() / "features"


def test_two_projects_share_features_and_info_clear(tiny_rn, tmp_path, monkeypatch):
    images = make_image_folder(tmp_path / "images", per_class=2)
    run_training(tiny_config(images, tiny_rn, tmp_path / "a", epochs=1))
    assert not (tmp_path / "a" / "cache").exists()
    info = json.loads(runner.invoke(app, ["cache", "info", "--json"]).stdout)
    assert info["path"] == str(tmp_path / "user-cache" / "features") and info["entries"] == 6
    assert info["bytes"] > 0 and len(info["models"]) == 1

    from dualpt_cli.clip.backbone import Backbone

    def boom(self, x):
        raise AssertionError("project b encoded images project a had encoded")

    with monkeypatch.context() as m:
        m.setattr(Backbone, "encode_images", boom)
        run_training(tiny_config(images, tiny_rn, tmp_path / "b", epochs=1))

    result = runner.invoke(app, ["cache", "clear"])
    assert result.exit_code == 0 and "removed 6 cached images" in result.stdout
    assert json.loads(runner.invoke(app, ["cache", "info", "--json"]).stdout)["entries"] == 0
    assert "0 images" in runner.invoke(app, ["cache", "info"]).stdout


def test_concurrent_writers_keep_every_view(tmp_path):
    """Eight writers add different views of one image at once: the entry ends with all of them, intact."""
    path = tmp_path / "model" / "entry.safetensors"
    start = threading.Barrier(8)

    def writer(view: int) -> None:
        start.wait()
        for _ in range(5):
            _write_cache(path, {view: (torch.full((4,), float(view)), torch.full((2, 4), float(view)))})

    threads = [threading.Thread(target=writer, args=(v,)) for v in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = _read_cache(path)
    assert sorted(stored) == sorted([f"g{v}" for v in range(8)] + [f"l{v}" for v in range(8)])
    assert all(float(stored[f"g{v}"][0]) == v for v in range(8))
    assert not list(path.parent.glob("*.tmp"))
